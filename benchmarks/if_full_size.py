"""DeepFloyd IF at full size (issue 13.5): IF-I-M / IF-II-M UNets, random weights, on the GPU.

For each stage: diffusers' ``UNet2DConditionModel`` in the stage's configuration (random
weights), saved as an IF pipeline folder with the ``fp16`` variant (``save_pretrained``), read
back by t2i's loader (:func:`t2i_imagen.if_folder.read_stage` / ``load_unet``), then
diffusers' and t2i's UNet on the same inputs: fp32 (TF32 off) max relative difference, fp16
max relative difference, parameter count, per-call time (CUDA events, batch 2 = one CFG
step) and peak memory of each. Writes one JSON.

The configurations are reconstructions: the released ``unet/config.json`` files are gated
and cannot be read here, so the block layout is the IF layout diffusers' ``convert_if.py``
writes (and the tiny parity configs use), with widths chosen so the parameter count matches
the model cards' 400 M / 450 M (394.5 M and 470.2 M); both counts are recorded.

Usage: python benchmarks/if_full_size.py OUT.json [--device cuda] [--stages I,II] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

SQRT2 = math.sqrt(2.0)
_COMMON = dict(
    out_channels=6,
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    attention_head_dim=64,
    encoder_hid_dim=4096,
    addition_embed_type="text",
    addition_embed_type_num_heads=64,
    act_fn="gelu",
    norm_num_groups=32,
    resnet_time_scale_shift="scale_shift",
    resnet_skip_time_act=True,
    resnet_out_scale_factor=SQRT2,
    mid_block_scale_factor=SQRT2,
    time_embedding_act_fn="gelu",
    cross_attention_norm="group_norm",
)
IF_I_M = dict(
    _COMMON,
    sample_size=64,
    in_channels=3,
    down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
    up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
    block_out_channels=(192, 384, 576, 768),
    layers_per_block=3,
    cross_attention_dim=1536,
)
IF_II_M = dict(
    _COMMON,
    sample_size=256,
    in_channels=6,
    class_embed_type="timestep",
    down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",) * 2,
    up_block_types=("SimpleCrossAttnUpBlock2D",) * 2 + ("ResnetUpsampleBlock2D",) * 3,
    block_out_channels=(128, 256, 512, 768, 1024),
    layers_per_block=2,
    cross_attention_dim=1024,
    only_cross_attention=(False, False, False, True, True),
    time_embedding_dim=1024,
)
STAGES = {"I": ("IF-I-M", IF_I_M, 400e6), "II": ("IF-II-M", IF_II_M, 450e6)}


def write_folder(ref, stage: str, root: Path) -> Path:
    """An IF pipeline folder (model_index.json, unet fp16 variant, scheduler) of ``ref``."""
    from diffusers import DDPMScheduler

    folder = root / f"stage_{stage}"
    name = "IFPipeline" if stage == "I" else "IFSuperResolutionPipeline"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": name}))
    ref.half().save_pretrained(folder / "unet", variant="fp16")
    ref.float()
    DDPMScheduler(
        variance_type="learned_range", beta_schedule="squaredcos_cap_v2", thresholding=True,
        dynamic_thresholding_ratio=0.95, sample_max_value=1.5 if stage == "I" else 1.0,
    ).save_pretrained(folder / "scheduler")  # fmt: skip
    return folder


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median ms per call and peak GiB of ``fn()`` (CUDA events)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated() / 2**30


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def check_stage(stage: str, device: str, repeats: int, root: Path) -> dict:
    from diffusers import UNet2DConditionModel
    from t2i_imagen.if_folder import load_unet, read_stage

    name, config, published = STAGES[stage]
    torch.manual_seed(0)
    start = time.time()
    with torch.device(device):
        ref = UNet2DConditionModel(**config).eval()
    folder = write_folder(ref, stage, root)
    ref.half().float()  # both sides from the same fp16 weights
    ours = load_unet(read_stage(folder), variant="fp16").to(device).float()
    size, batch = config["sample_size"], 2
    x = torch.randn(batch, config["in_channels"], size, size, device=device)
    t = torch.tensor([999.0, 500.0], device=device)
    text = torch.randn(batch, 77, 4096, device=device)
    labels = torch.tensor([250.0, 100.0], device=device) if stage == "II" else None
    out = {"model": name, "published_parameters": published, "setup_seconds": 0.0}
    out["parameters"] = sum(p.numel() for p in ours.parameters())
    out["parameters_diffusers"] = sum(p.numel() for p in ref.parameters())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=text, class_labels=labels).sample
        got = ours(x, t, text, labels)
        out["fp32_max_rel"] = rel(got, expected)
        ref.half(), ours.half()
        xh, th = x.half(), text.half()
        lh = labels.half() if labels is not None else None
        expected16 = ref(xh, t, encoder_hidden_states=th, class_labels=lh).sample
        got16 = ours(xh, t, th, lh)
        out["fp16_max_rel_vs_diffusers_fp16"] = rel(got16, expected16)
        out["fp16_max_rel_vs_fp32"] = rel(got16, expected)
        out["setup_seconds"] = round(time.time() - start, 1)
        ms, gib = timed(lambda: ref(xh, t, encoder_hidden_states=th, class_labels=lh), repeats)
        out["diffusers_fp16_ms"], out["diffusers_fp16_peak_gib"] = round(ms, 2), round(gib, 2)
        ms, gib = timed(lambda: ours(xh, t, th, lh), repeats)
        out["t2i_fp16_ms"], out["t2i_fp16_peak_gib"] = round(ms, 2), round(gib, 2)
    del ref, ours
    torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--stages", default="I,II")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            try:
                results[stage] = check_stage(stage, args.device, args.repeats, Path(tmp))
            except Exception as exc:  # record and go on to the other stage
                results[stage] = {"error": f"{type(exc).__name__}: {exc}"}
            print(stage, json.dumps(results[stage]), flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
