"""Full-size SDXL UNet parity and speed: t2i_ldm against diffusers (random weights).

Builds diffusers' ``UNet2DConditionModel`` in the real SDXL base configuration
(``stabilityai/stable-diffusion-xl-base-1.0/unet/config.json``: 320/640/1280 channels, no
attention at the first level, transformer depth 2 / 10, context 2048, ``text_time``
micro-conditioning on 2816) with random weights, translates its config with
``t2i_ldm.diffusers_format.unet_config_from_diffusers`` and its tensors with the asserted key
map of ``t2i_ldm.keymaps``, and reports for one CFG batch (2 x 4 x 128 x 128 latent = 1024 px,
77 x 2048 context, pooled 1280, micro-conditioning (1024, 1024, 0, 0, 1024, 1024)):

- fp32 (TF32 off): max |ours - ref| / max |ref| and the relative L2 error, with t2i kernels
  on ``auto`` and ``ref`` (PyTorch);
- fp16: ours and diffusers' fp16 outputs against diffusers' fp32 output (the same rule as the
  kernels' tests: ours should be about as far as diffusers' own fp16);
- one 1024 px denoising step (the batch above) in fp16, eager, median of 10 after 3 warm-ups,
  CUDA events, for both.

Prints one JSON line and writes it to ``$OUT/sdxl_full_size.json`` (``--out`` overrides).
Usage (GPU): ``python benchmarks/sdxl_full_size.py``; CPU smoke test: ``--tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

SDXL_BASE = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
TINY = dict(
    SDXL_BASE,
    sample_size=16,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    transformer_layers_per_block=(1, 2),
    cross_attention_dim=64,
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,
    norm_num_groups=8,
)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def l2_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def step_ms(fn, device: torch.device, warmup: int = 3, iters: int = 10) -> float:
    """Median milliseconds of ``fn()`` (CUDA events on CUDA, perf_counter elsewhere)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def build(config: dict, device: torch.device):
    """``(diffusers UNet, our UNet)`` holding the same random weights on ``device``."""
    import diffusers

    from t2i.checkpoints import load_into
    from t2i_ldm.checkpoint import build_on_meta
    from t2i_ldm.diffusers_format import unet_config_from_diffusers
    from t2i_ldm.keymaps import unet_key_map
    from t2i_ldm.unet import UNetModel

    torch.manual_seed(0)
    with torch.device(device):
        ref = diffusers.UNet2DConditionModel(**config).eval()
    ours_cfg = unet_config_from_diffusers(dict(ref.config))
    ours = build_on_meta(UNetModel, ours_cfg)
    key_map = unet_key_map(ours_cfg, ours.state_dict().keys())
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    load_into(ours, state, key_map=key_map, dtype=torch.float32, device=device, what="UNet")
    return ref, ours.eval()


def inputs(config: dict, device: torch.device, size: int):
    """One CFG batch: latent, timesteps, context, pooled text, micro-conditioning."""
    g = torch.Generator().manual_seed(1)
    latent = size // 8
    pooled_dim = (
        config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    )
    x = torch.randn(2, 4, latent, latent, generator=g)
    ctx = torch.randn(2, 77, config["cross_attention_dim"], generator=g)
    pooled = torch.randn(2, pooled_dim, generator=g)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)
    t = torch.tensor([999.0, 421.0])
    return [v.to(device) for v in (x, t, ctx, pooled, time_ids)]


def run(tiny: bool, device: torch.device, timing: bool = True) -> dict:
    import diffusers

    import t2i_kernels
    from t2i_ldm.unet import sdxl_vector

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = TINY if tiny else SDXL_BASE
    size = 64 if tiny else 1024
    res: dict = {
        "benchmark": "sdxl_full_size",
        "config": "tiny" if tiny else "sdxl-base-1.0",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "image_px": size,
        "batch": 2,
    }
    t0 = time.perf_counter()
    ref, ours = build(config, device)
    res["build_s"] = round(time.perf_counter() - t0, 2)
    res["params"] = sum(p.numel() for p in ours.parameters())
    x, t, ctx, pooled, time_ids = inputs(config, device, size)
    dim = config["addition_time_embed_dim"]

    def theirs_fn(m, dtype):
        cond = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
        return m(x.to(dtype), t, ctx.to(dtype), added_cond_kwargs=cond).sample

    def ours_fn(m, dtype):
        return m(x.to(dtype), t, ctx.to(dtype), sdxl_vector(pooled, time_ids, dim))

    with torch.no_grad():
        expected = theirs_fn(ref, torch.float32)
        for backend in ("auto", "ref"):
            with t2i_kernels.use_kernels(backend):
                got = ours_fn(ours, torch.float32)
            res[f"fp32_max_rel_err_{backend}"] = max_rel(got, expected)
            res[f"fp32_l2_rel_err_{backend}"] = l2_rel(got, expected)
        del got
        half = torch.float16 if device.type == "cuda" else torch.bfloat16
        res["low_precision"] = str(half).removeprefix("torch.")
        ref, ours = ref.to(half), ours.to(half)
        theirs_half, ours_half = theirs_fn(ref, half), ours_fn(ours, half)
        res["half_l2_rel_err_t2i_vs_fp32"] = l2_rel(ours_half, expected)
        res["half_l2_rel_err_diffusers_vs_fp32"] = l2_rel(theirs_half, expected)
        res["half_l2_rel_err_t2i_vs_diffusers"] = l2_rel(ours_half, theirs_half)
        res["half_finite"] = bool(torch.isfinite(ours_half).all())
        if timing:
            res["step_ms_diffusers"] = round(step_ms(lambda: theirs_fn(ref, half), device), 3)
            res["step_ms_t2i"] = round(step_ms(lambda: ours_fn(ours, half), device), 3)
            res["step_ratio_t2i_over_diffusers"] = round(
                res["step_ms_t2i"] / res["step_ms_diffusers"], 3
            )
    return res


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke test)")
    parser.add_argument("--out", default=None, help="JSON file (default $OUT/sdxl_full_size.json)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    res = run(args.tiny, device, timing=not args.skip_timing)
    out = Path(args.out or Path(os.environ.get("OUT", ".")) / "sdxl_full_size.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(res)
    out.write_text(line + "\n")
    print(line, flush=True)
    return res


if __name__ == "__main__":
    main()
