"""One ControlNet-steered SD1.5 denoiser step, t2i vs diffusers, in one process: random weights
in the real SD1.5 UNet and ControlNet configs (diffusers' ``ControlNetModel.from_unet``), a CFG
batch of 2, float32; the ControlNet run then the UNet with its residuals, as each library's
pipeline calls them. Reports the median milliseconds of each, the UNet alone (the
ControlNet's overhead), and the relative error of t2i's prediction against diffusers'.

    python benchmarks/controlnet_step.py --size 256 --reps 5 --out controlnet_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ldm_parity import SD15_UNET, rel_err


def interleaved_ms(fns: dict, reps: int) -> dict[str, float]:
    """Median milliseconds of each function, the functions called in turn every repeat (so
    a load that comes and goes on the machine falls on all of them alike)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {f"{name}_ms": round(statistics.median(t), 1) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image size in pixels")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import diffusers

    from t2i_ldm.controlnet_checkpoint import load_controlnet
    from t2i_ldm.diffusers_format import load_diffusers_unet

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**SD15_UNET).eval()
    cn = diffusers.ControlNetModel.from_unet(unet).eval()
    with torch.no_grad():  # from_unet zeroes the 1x1 convolutions: give them weights
        for p in cn.parameters():
            p.normal_(0.0, 0.02)
    tmp = Path(tempfile.mkdtemp())
    unet.save_pretrained(tmp / "unet")
    cn.save_pretrained(tmp / "cn")
    ours = load_diffusers_unet(tmp / "unet")
    ours_cn = load_controlnet(tmp / "cn", ours.config)
    gen = torch.Generator().manual_seed(1)
    side = args.size // 8
    x = torch.randn(2, 4, side, side, generator=gen)
    hint = torch.rand(2, 3, args.size, args.size, generator=gen)
    ctx = torch.randn(2, 77, 768, generator=gen)
    t = torch.tensor([601.0, 601.0])

    def diffusers_step():
        down, mid = cn(x, t, ctx, hint, return_dict=False)
        return unet(x, t, ctx, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample  # fmt: skip

    def t2i_step():
        return ours(x, t, ctx, control=ours_cn(x, hint, t, ctx))

    res = {"device": "cpu", "threads": torch.get_num_threads(), "size": args.size}
    fns = {
        "diffusers": diffusers_step,
        "t2i": t2i_step,
        "diffusers_unet": lambda: unet(x, t, ctx).sample,
        "t2i_unet": lambda: ours(x, t, ctx),
    }
    with torch.no_grad():
        res["rel_err"] = rel_err(t2i_step(), diffusers_step())
        res.update(interleaved_ms(fns, args.reps))
    res["t2i_vs_diffusers"] = round(res["diffusers_ms"] / res["t2i_ms"], 3)
    res["t2i_controlnet_overhead"] = round(res["t2i_ms"] / res["t2i_unet_ms"], 3)
    print(json.dumps(res, indent=1))
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
