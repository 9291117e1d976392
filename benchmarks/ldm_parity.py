"""Full-size Stable Diffusion parity and speed: t2i_ldm against diffusers (random weights).

Builds the SD 1.5 and SD 2.1 UNets and the SD VAE in diffusers with random weights, writes
them with ``save_pretrained``, loads the folders with ``t2i_ldm.diffusers_format`` (so the
full-size key maps are exercised too), and reports in fp32 (TF32 off):

- UNet: batch 2, 64x64x4 latent, 77 x 768 (SD1.5) / 77 x 1024 (SD2.1) context;
- VAE decode 64x64 latent -> 512 px, and encode 512 px -> latent mean;

as max |ours - ref| / max |ref|, with t2i kernels on ``auto`` (Triton on CUDA) and ``ref``
(PyTorch). Then one UNet step in fp16, eager, timed with CUDA events (median of 20 after 5
warm-ups) against diffusers eager fp16 (its default SDPA attention) in the same process.

Usage (GPU machine): ``python benchmarks/ldm_parity.py --out results.json``. Results are
appended to the JSON file after each stage, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

SD15_UNET = dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
SD21_UNET = dict(
    cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20],
    use_linear_projection=True,
    upcast_attention=True,
    sample_size=96,
)
SD_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def cuda_time(fn, warmup: int = 5, iters: int = 20) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` runs, CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_fp16(name: str, ref, ours, x, t, ctx) -> dict:
    """One fp16 eager UNet step: diffusers vs ours (Triton kernels, then PyTorch kernels)."""
    import t2i_kernels

    ref, ours = ref.half(), ours.half()
    xh, ctxh = x.half(), ctx.half()
    with torch.no_grad():
        ms_ref = cuda_time(lambda: ref(xh, t, ctxh).sample)
        ms_ours = cuda_time(lambda: ours(xh, t, ctxh))
        with t2i_kernels.use_kernels("ref"):
            ms_ours_ref = cuda_time(lambda: ours(xh, t, ctxh))
        fp16_err = rel_err(ours(xh, t, ctxh), ref(xh, t, ctxh).sample)
    return {
        f"{name}_unet_fp16_ms_diffusers": round(ms_ref, 3),
        f"{name}_unet_fp16_ms_t2i_triton": round(ms_ours, 3),
        f"{name}_unet_fp16_ms_t2i_ref_kernels": round(ms_ours_ref, 3),
        f"{name}_unet_fp16_ratio_t2i_over_diffusers": round(ms_ours / ms_ref, 3),
        f"{name}_unet_fp16_rel_err": fp16_err,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="ldm_parity.json")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script")
    args = parser.parse_args()
    global SD15_UNET, SD21_UNET, SD_VAE
    size, latent = 512, 64
    if args.tiny:
        small = dict(
            block_out_channels=[32, 64],
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        )
        SD15_UNET = {**SD15_UNET, **small, "cross_attention_dim": 32, "attention_head_dim": 2}
        SD21_UNET = {**SD21_UNET, **small, "cross_attention_dim": 32, "attention_head_dim": [2, 4]}
        SD_VAE = {
            **SD_VAE,
            **small,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
        }
        size, latent = 16, 8

    import diffusers

    import t2i_kernels
    from t2i_ldm.diffusers_format import load_diffusers_unet, load_diffusers_vae

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cpu" if args.tiny else "cuda")
    results: dict = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)

    def dump() -> None:
        out.write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2), flush=True)

    tmp = Path(tempfile.mkdtemp())
    gen = torch.Generator(device="cpu").manual_seed(0)

    # ---- VAE (shared by SD1.5 and SD2.1) ----
    torch.manual_seed(0)
    ref_vae = diffusers.AutoencoderKL(**SD_VAE).eval()
    ref_vae.save_pretrained(tmp / "vae")
    t0 = time.perf_counter()
    vae = load_diffusers_vae(tmp / "vae", device=dev)
    results["vae_load_s"] = round(time.perf_counter() - t0, 2)
    ref_vae = ref_vae.to(dev)
    z = torch.randn(1, 4, size // 8, size // 8, generator=gen).to(dev)
    img = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(dev)
    with torch.no_grad():
        ref_dec = ref_vae.decode(z).sample
        ref_enc = ref_vae.encode(img).latent_dist.mean
        for backend in ("auto", "ref"):
            with t2i_kernels.use_kernels(backend):
                results[f"vae_decode_rel_err_{backend}"] = rel_err(vae.decode(z), ref_dec)
                results[f"vae_encode_rel_err_{backend}"] = rel_err(vae.encode(img).mean, ref_enc)
    del ref_vae, vae, ref_dec, ref_enc
    torch.cuda.empty_cache()
    dump()

    for name, cfg in (("sd15", SD15_UNET), ("sd21", SD21_UNET)):
        torch.manual_seed(1)
        ref = diffusers.UNet2DConditionModel(**cfg).eval()
        ref.save_pretrained(tmp / name)
        t0 = time.perf_counter()
        ours = load_diffusers_unet(tmp / name, device=dev)
        results[f"{name}_unet_load_s"] = round(time.perf_counter() - t0, 2)
        ref = ref.to(dev)
        ctx_dim = cfg["cross_attention_dim"]
        x = torch.randn(2, 4, latent, latent, generator=gen).to(dev)
        ctx = torch.randn(2, 77, ctx_dim, generator=gen).to(dev)
        t = torch.tensor([999.0, 421.0], device=dev)
        with torch.no_grad():
            expected = ref(x, t, ctx).sample
            for backend in ("auto", "ref"):
                with t2i_kernels.use_kernels(backend):
                    results[f"{name}_unet_rel_err_{backend}"] = rel_err(ours(x, t, ctx), expected)
        dump()
        if not args.skip_timing and not args.tiny:
            results.update(time_fp16(name, ref, ours, x, t, ctx))
        del ref, ours
        torch.cuda.empty_cache()
        dump()


if __name__ == "__main__":
    main()
