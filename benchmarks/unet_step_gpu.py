"""Issue 18.4 (the UNet-step rows): one fp16 batch-2 SD1.5 UNet step at 512 px on random
weights, in the same process: diffusers eager, diffusers' best (fused QKV + channels-last +
torch.compile reduce-overhead), t2i eager, t2i's fast path (``compile_component``: fused
projections, channels-last, reduce-overhead) and the fast path with FP8 linears; with each
compiled variant's compile time and the relative error of every variant against diffusers eager.

    python benchmarks/unet_step_gpu.py --out step.json [--skip diffusers_best,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
from ldm_parity import SD15_UNET, cuda_time, rel_err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    import diffusers
    from t2i.engine import compile_component
    from t2i.fp8 import convert_linears_to_fp8
    from t2i_ldm.diffusers_format import load_diffusers_unet

    skip, dev, res = set(args.skip.split(",")), torch.device("cuda"), {}
    res["gpu"] = torch.cuda.get_device_name()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(1)
    ref = diffusers.UNet2DConditionModel(**SD15_UNET).eval()
    tmp = Path(tempfile.mkdtemp())
    ref.save_pretrained(tmp / "sd15")
    ours = load_diffusers_unet(tmp / "sd15", device=dev).half().eval()
    ref = ref.to(dev).half()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=gen).to(dev).half()
    ctx = torch.randn(2, 77, 768, generator=gen).to(dev).half()
    t = torch.tensor([999.0, 421.0], device=dev)

    def record(name, fn, started=None):
        with torch.no_grad():
            out = fn()
            if started is not None:
                torch.cuda.synchronize()
                res[f"{name}_compile_s"] = round(time.perf_counter() - started, 1)
            res[f"{name}_ms"] = round(cuda_time(fn), 3)
            res[f"{name}_rel_err"] = rel_err(out.float(), expected.float())
        print(name, res[f"{name}_ms"], res.get(f"{name}_compile_s"), flush=True)
        args.out.write_text(json.dumps(res, indent=1))

    with torch.no_grad():
        expected = ref(x, t, ctx).sample
    record("diffusers_eager", lambda: ref(x, t, ctx).sample)
    record("t2i_eager", lambda: ours(x, t, ctx))
    if "diffusers_best" not in skip:
        best = copy.deepcopy(ref)
        best.fuse_qkv_projections()
        best.to(memory_format=torch.channels_last)
        best = torch.compile(best, mode="reduce-overhead", fullgraph=True)
        record("diffusers_best", lambda: best(x, t, ctx).sample.clone(), time.perf_counter())
        del best
    fast = copy.deepcopy(ours)
    compile_component(fast, mode="reduce-overhead", channels_last=True, fuse=True)
    record("t2i_fast", lambda: fast(x, t, ctx), time.perf_counter())
    del fast
    if "fp8" not in skip:
        fp8 = copy.deepcopy(ours)
        res["fp8_layers"] = len(convert_linears_to_fp8(fp8))
        record("t2i_fp8_eager", lambda: fp8(x, t, ctx))
        compile_component(fp8, mode="reduce-overhead", channels_last=True, fuse=True)
        record("t2i_fp8_fast", lambda: fp8(x, t, ctx), time.perf_counter())


if __name__ == "__main__":
    main()
