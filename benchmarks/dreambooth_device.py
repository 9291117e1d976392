"""DreamBooth at SD scale (issue 16.6): peak GPU memory and s/step, t2i vs diffusers.

The full SD1.5 architecture with random weights (UNet 860 M, CLIP ViT-L/14 text tower, KL-f8
VAE) is written as a single-file checkpoint and fine-tuned at 512 px with gradient
checkpointing and bf16 autocast, batch 1 + 1 prior-preservation row, by ``t2i dreambooth``
(``ldm`` recipe), LoRA (rank 4, attention projections) and full. The baseline is the training
step of diffusers' ``examples/dreambooth/train_dreambooth.py`` / ``train_dreambooth_lora.py``
on ``UNet2DConditionModel`` (+ peft ``add_adapter`` for LoRA, ``enable_gradient_checkpointing``,
AdamW 0.9/0.999/1e-2, clip 1.0, bf16 autocast): VAE encode + ``latent_dist.sample()``, the
frozen text encoder and the UNet each step, instance and class rows concatenated, as the
script does (written here without accelerate, which only wraps these calls on one GPU; the
example script itself is not part of the diffusers wheel). Skipped when diffusers is absent.

Writes ``$OUT/dreambooth_device.json``. Environment: ``STEPS`` (timed steps, default 30),
``WARMUP`` (5), ``DEVICE`` (cuda), ``SIZE`` (512), ``MODES`` ("lora full"), ``BASELINE`` (1; 0
skips diffusers, e.g. for a second t2i pass with ``T2I_KERNELS=ref``), ``TAG`` (a suffix of the
JSON's name).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OUT = Path(os.environ.get("OUT", "out"))
STEPS, WARMUP = int(os.environ.get("STEPS", 30)), int(os.environ.get("WARMUP", 5))
DEVICE, SIZE = os.environ.get("DEVICE", "cuda"), int(os.environ.get("SIZE", 512))
MODES = os.environ.get("MODES", "lora full").split()
TINY = os.environ.get("TINY") == "1"  # CPU check of the script: a tiny SD instead of SD1.5
BASELINE = os.environ.get("BASELINE", "1") == "1"
TAG = os.environ.get("TAG", "")


def _peak_reset() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    if not DEVICE.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def random_sd15(folder: Path) -> Path:
    """A random SD1.5-architecture single file (t2i_ldm's presets; TINY: a tiny SD)."""
    from transformers import CLIPTextModel

    from t2i_ldm.checkpoint import save_single_file
    from t2i_ldm.config import get_preset
    from t2i_ldm.text_encoder import canonical_clip_text_state_dict, clip_text_config
    from t2i_ldm.unet import UNetModel
    from t2i_ldm.vae import AutoencoderKL

    torch.manual_seed(0)
    preset = get_preset("sd1")
    unet_cfg, vae_cfg, text_cfg = preset.unet, preset.vae, clip_text_config("clip_l")
    if TINY:
        from t2i_ldm.shapes_model import TINY_UNET, TINY_VAE

        unet_cfg, vae_cfg = TINY_UNET, TINY_VAE
        text_cfg.hidden_size, text_cfg.intermediate_size = 32, 64
        text_cfg.num_hidden_layers, text_cfg.num_attention_heads = 1, 2
    unet, vae = UNetModel(unet_cfg), AutoencoderKL(vae_cfg)
    text = canonical_clip_text_state_dict(CLIPTextModel(text_cfg).state_dict())
    return save_single_file(
        folder / "sd15-random.safetensors", unet, vae, text_encoder=text, prediction_type="epsilon"
    )


def instance_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    return folder


def time_t2i(mode: str, checkpoint: Path, work: Path) -> dict:
    """``t2i dreambooth`` (Python API) with per-step times from the loop's ``on_step``."""
    import t2i_dreambooth.run as run
    from t2i_dreambooth import DreamBoothOptions, dreambooth

    stamps: list[float] = []
    original = run.train

    def timed(model, data, config, out, *, on_step=None, **kw):
        def record(step, m):
            _sync()
            stamps.append(time.perf_counter())
            if step == WARMUP:
                _peak_reset()
            if on_step is not None:
                on_step(step, m)

        return original(model, data, config, out, on_step=record, **kw)

    run.train = timed
    shutil.rmtree(work / f"t2i-{mode}", ignore_errors=True)
    try:
        _peak_reset()
        dreambooth(
            DreamBoothOptions(
                recipe="ldm",
                recipe_options={"checkpoint": str(checkpoint)}
                | ({"text_head_dim": 16} if TINY else {}),
                instance_dir=work / "instance",
                instance_prompt="a photo of sks dog",
                class_prompt="a photo of dog",
                prior_preservation=True,
                num_class_images=2,
                class_dir=str(work / "class"),
                sample_batch_size=2,
                output_dir=work / f"t2i-{mode}",
                resolution=SIZE,
                lora=mode == "lora",
                steps=WARMUP + STEPS,
                batch_size=1,
                precision="bf16",
                gradient_checkpointing=True,
                checkpointing_steps=10_000,
                device=DEVICE,
            )
        )
    finally:
        run.train = original
    steps = np.diff(stamps[WARMUP - 1 :])
    return {"s_per_step": float(statistics.median(steps)), "peak_gib": _peak_gib()}


def time_diffusers(mode: str, work: Path) -> dict | None:
    """diffusers' train_dreambooth(_lora).py training step on the same architecture."""
    try:
        import diffusers
    except ImportError:
        return None
    from transformers import CLIPTextModel

    from t2i_ldm.text_encoder import clip_text_config

    torch.manual_seed(0)
    dev = torch.device(DEVICE)
    kw = {"cross_attention_dim": 768, "sample_size": SIZE // 8}
    if TINY:
        kw |= {
            "block_out_channels": (16, 32),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
        }
    unet = diffusers.UNet2DConditionModel(**kw).to(dev)
    vae_kw = (
        {}
        if not TINY
        else {
            "block_out_channels": (8, 16),
            "norm_num_groups": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
            "latent_channels": 4,
        }
    )
    if not TINY:
        vae_kw = {
            "block_out_channels": (128, 256, 512, 512),
            "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": 2,
        }
    vae = diffusers.AutoencoderKL(**vae_kw).to(dev).requires_grad_(False)
    cfg = clip_text_config("clip_l")
    if TINY:
        cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 32, 64, 1
        cfg.num_attention_heads = 2
    text = CLIPTextModel(cfg).to(dev).requires_grad_(False)
    scheduler = diffusers.DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    if mode == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(
            LoraConfig(
                r=4,
                lora_alpha=4,
                init_lora_weights="gaussian",
                target_modules=["to_k", "to_q", "to_v", "to_out.0"],
            )
        )
    unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=5e-4 if mode == "lora" else 5e-6, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
    )
    pixels = torch.rand(2, 3, SIZE, SIZE, device=dev) * 2 - 1  # instance + class row
    ids = torch.randint(0, cfg.vocab_size - 2, (2, 77), device=dev)
    times = []
    _peak_reset()
    for step in range(WARMUP + STEPS):
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            latents = vae.encode(pixels).latent_dist.sample() * 0.18215
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (2,), device=dev)
            noisy = scheduler.add_noise(latents, noise, t)
            states = text(ids)[0]
            pred = unet(noisy, t, states).sample
            inst, prior = pred.float().chunk(2)
            n_inst, n_prior = noise.float().chunk(2)
            loss = torch.nn.functional.mse_loss(inst, n_inst) + torch.nn.functional.mse_loss(
                prior, n_prior
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        times.append(time.perf_counter() - start)
        if step == WARMUP - 1:
            _peak_reset()
    return {"s_per_step": float(statistics.median(times[WARMUP:])), "peak_gib": _peak_gib()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("WORK", "/tmp/dreambooth_device"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = random_sd15(work)
    instance_images(work / "instance")
    results: dict = {
        "size": SIZE,
        "steps": STEPS,
        "warmup": WARMUP,
        "device": DEVICE,
        "torch": torch.__version__,
        "batch": "1 instance + 1 class row",
        "precision": "bf16 autocast",
        "gradient_checkpointing": True,
        "kernels": os.environ.get("T2I_KERNELS", "auto"),
    }
    if DEVICE.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    for mode in MODES:
        results[f"t2i_{mode}"] = time_t2i(mode, checkpoint, work)
        print(mode, "t2i", results[f"t2i_{mode}"], file=sys.stderr, flush=True)
        if BASELINE:
            results[f"diffusers_{mode}"] = time_diffusers(mode, work)
            print(mode, "diffusers", results[f"diffusers_{mode}"], file=sys.stderr, flush=True)
        (OUT / f"dreambooth_device{TAG}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
