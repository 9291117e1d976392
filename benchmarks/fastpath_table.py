"""Issue 18.4's table in one run: diffusers eager, diffusers' best, t2i eager and t2i's fast path.

Random weights in the real architectures (diffusers ``save_pretrained``, loaded by both sides),
fp16 on CUDA. diffusers' best is its documented recipe: fused QKV, channels-last and
``torch.compile(mode="reduce-overhead", fullgraph=True)`` of the UNet (and of ``vae.decode``);
t2i's fast path is what ``Engine.build(compile=True)`` runs (``compile_component``: fused
projections, channels-last, reduce-overhead). Stages (``--stages``, in this order):

- ``sd15``, ``sd21``: one UNet step, batch 2 (CFG), 64x64x4 latent (512 px), 77-token context;
- ``vae``: VAE decode of one 64x64x4 latent to 512 px;
- ``txt2img``: 512 px, 50 Euler steps, CFG 7.5, VAE decode included, through each library's
  pipeline (diffusers ``StableDiffusionPipeline``, t2i ``Engine.build("ldm", checkpoint=...)``);
- ``shapes``: ``ldm-shapes`` images/s at batch 1 and 64 (its recipe's 25 steps), eager and fast;
- ``warm``: time to the first image of ``t2i generate --compile`` in a first and a second
  process sharing one cache folder (the warm start), beside an eager process.

Steps and decodes are CUDA-event medians of 20 after 5 warm-ups (wall medians on the CPU);
pipelines are wall medians of 3 after one warm-up. Each row records its relative error against
diffusers eager (max |a - b| / max |b|; images: mean |a - b| in 1/255). The JSON is rewritten
after every row, so a run cut short keeps what it measured.

    python benchmarks/fastpath_table.py --out table.json [--stages sd15,vae] [--tiny]

``--tiny``: tiny configs on the CPU with Dynamo's ``eager`` backend (a smoke test of this
script, no speed meaning). ``--cpu``: the real configs on the CPU in fp32 with Inductor (the
``warm`` stage: the warm start of ``t2i generate --compile`` on a CPU machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ldm_parity import SD15_UNET, SD21_UNET, SD_VAE, cuda_time, rel_err

STAGES = ("sd15", "sd21", "vae", "txt2img", "shapes", "warm")
TINY_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=2,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), sample_size=8,
)  # fmt: skip
TINY_VAE = dict(
    block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8,
    latent_channels=4,
)  # fmt: skip
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, projection_dim=768)  # fmt: skip
CLIP_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=32)  # fmt: skip


class Bench:
    """Device, dtype, compile settings and the results file of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tiny, self.out, self.profile = args.tiny, args.out, args.profile
        cpu = args.tiny or args.cpu
        self.dev = torch.device("cpu" if cpu else "cuda")
        self.dtype = torch.float32 if cpu else torch.float16
        self.latent = 8 if args.tiny else 64
        card = "cpu (tiny)" if args.tiny else f"cpu ({os.cpu_count()} cores)" if cpu else None
        card = card or torch.cuda.get_device_name()
        self.res: dict[str, Any] = {"device": card, "torch": torch.__version__, "rows": {}}
        if self.tiny:
            os.environ["T2I_COMPILE_BACKEND"] = "eager"
        else:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def compile(self, fn: Any) -> Any:
        """diffusers' side: ``torch.compile`` as its docs recommend (Dynamo only when tiny)."""
        if self.tiny:
            return torch.compile(fn, backend="eager", fullgraph=True)
        return torch.compile(fn, mode="reduce-overhead", fullgraph=True)

    def time(self, fn: Any, warmup: int = 5, iters: int = 20) -> float:
        """Median milliseconds of ``fn()`` (CUDA events on the GPU, wall time on the CPU)."""
        with torch.no_grad():
            if self.dev.type == "cuda":
                return cuda_time(fn, warmup, iters)
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def record(self, row: str, variant: str, **values: Any) -> None:
        self.res["rows"].setdefault(row, {})[variant] = values
        print(row, variant, json.dumps(values), flush=True)
        self.out.write_text(json.dumps(self.res, indent=1))


def timed_variants(b: Bench, row: str, variants: dict[str, Any], expected: torch.Tensor) -> None:
    """Time each ``name -> make()`` variant (``make`` returns the call; its first call, the
    compile when there is one, is timed apart) and its error against ``expected``."""
    for name, make in variants.items():
        t0 = time.perf_counter()
        fn = make()
        with torch.no_grad():
            out = fn()
        b.sync()
        first = time.perf_counter() - t0
        b.record(row, name, ms=round(b.time(fn), 3), first_call_s=round(first, 1),
                 rel_err=rel_err(out.float(), expected.float()))  # fmt: skip
        if b.profile and name in ("diffusers_best", "t2i_fast", "t2i_eager", "diffusers_eager"):
            profile(fn, b.out.with_name(f"{b.out.stem}_{row}_{name}.txt"))
        del fn


def profile(fn: Any, path: Path, calls: int = 10) -> None:
    """The top kernels of ``calls`` calls of ``fn`` by device time (and host time), to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with torch.no_grad(), run_profiler(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    averages = prof.key_averages()
    by_device = averages.table(sort_by="self_cuda_time_total" if len(activities) > 1
                               else "self_cpu_time_total", row_limit=25)  # fmt: skip
    path.write_text(f"{calls} calls\n{by_device}\n")


def unet_row(b: Bench, row: str, config: dict, context_dim: int) -> None:
    """One UNet step, batch 2, in the four variants."""
    import diffusers

    from t2i.engine import compile_component
    from t2i_ldm.diffusers_format import load_diffusers_unet

    torch.manual_seed(1)
    ref = diffusers.UNet2DConditionModel(**config).eval()
    folder = Path(tempfile.mkdtemp()) / row
    ref.save_pretrained(folder)
    ours = load_diffusers_unet(folder, device=b.dev).to(b.dtype).eval()
    ref = ref.to(b.dev, b.dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, b.latent, b.latent, generator=g).to(b.dev, b.dtype)
    ctx = torch.randn(2, 77, context_dim, generator=g).to(b.dev, b.dtype)
    t = torch.tensor([999.0, 421.0], device=b.dev)
    with torch.no_grad():
        expected = ref(x, t, ctx).sample

    def best():
        m = copy.deepcopy(ref)
        m.fuse_qkv_projections()
        m.to(memory_format=torch.channels_last)
        m = b.compile(m)
        return lambda: m(x, t, ctx).sample.clone()

    def fast():
        m = copy.deepcopy(ours)
        compile_component(m, backend=os.environ.get("T2I_COMPILE_BACKEND", "inductor"),
                          mode=None if b.tiny else "reduce-overhead",
                          channels_last=not b.tiny, fuse=True)  # fmt: skip
        return lambda: m(x, t, ctx)

    variants = {"diffusers_eager": lambda: (lambda: ref(x, t, ctx).sample),
                "diffusers_best": best, "t2i_eager": lambda: (lambda: ours(x, t, ctx)),
                "t2i_fast": fast}  # fmt: skip
    timed_variants(b, row, variants, expected)


def vae_row(b: Bench) -> None:
    """VAE decode of one latent in the four variants."""
    import diffusers

    from t2i.engine import compile_component
    from t2i_ldm.diffusers_format import load_diffusers_vae

    torch.manual_seed(2)
    ref = diffusers.AutoencoderKL(**(TINY_VAE if b.tiny else SD_VAE)).eval()
    folder = Path(tempfile.mkdtemp()) / "vae"
    ref.save_pretrained(folder)
    ours = load_diffusers_vae(folder, device=b.dev).to(b.dtype).eval()
    ref = ref.to(b.dev, b.dtype)
    z = torch.randn(1, 4, b.latent, b.latent, generator=torch.Generator().manual_seed(3))
    z = z.to(b.dev, b.dtype)
    with torch.no_grad():
        expected = ref.decode(z).sample

    def best():
        m = copy.deepcopy(ref)
        m.fuse_qkv_projections()
        m.to(memory_format=torch.channels_last)
        decode = b.compile(m.decode)
        return lambda: decode(z).sample.clone()

    def fast():
        m = copy.deepcopy(ours)
        compile_component(m, backend=os.environ.get("T2I_COMPILE_BACKEND", "inductor"),
                          mode=None if b.tiny else "reduce-overhead",
                          channels_last=not b.tiny, fuse=True)  # fmt: skip
        return lambda: m.decode(z)

    variants = {"diffusers_eager": lambda: (lambda: ref.decode(z).sample), "diffusers_best": best,
                "t2i_eager": lambda: (lambda: ours.decode(z)), "t2i_fast": fast}  # fmt: skip
    timed_variants(b, "vae_decode", variants, expected)


def sd_folder(b: Bench, root: Path) -> tuple[Any, Path]:
    """A random SD1.5-architecture pipeline (CLIP-L text tower over a small vocabulary) saved
    with ``save_pretrained``: ``(diffusers pipeline, folder)``."""
    import diffusers
    import transformers

    from t2i_ldm.shapes_model import vocabulary_merges
    from t2i_ldm.tokenizer import openai_clip_vocab

    merges = vocabulary_merges([PROMPT])
    vocab = openai_clip_vocab(merges)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {c}\n" for a, c in merges))
    tokenizer = transformers.CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77
    )
    end = vocab["<|endoftext|>"]
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end,
        **(CLIP_TINY if b.tiny else CLIP_L)))  # fmt: skip
    torch.manual_seed(4)
    unet = diffusers.UNet2DConditionModel(**(TINY_UNET if b.tiny else SD15_UNET))
    vae = diffusers.AutoencoderKL(**(TINY_VAE if b.tiny else SD_VAE))
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        timestep_spacing="linspace")  # fmt: skip
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "pipeline", safe_serialization=True)
    return pipe.to(b.dev, b.dtype), root / "pipeline"


PROMPT = "a red cube on top of a blue sphere"


def wall(fn: Any, runs: int = 3) -> tuple[float, Any]:
    """``(median wall ms of runs after one warm-up, the warm-up's output)``; ``fn(i)`` gets
    the run's index as its seed (the engine caches a node's outputs by its inputs: a repeated
    seed would be served from that cache, not generated)."""
    out = fn(0)
    times = []
    for i in range(1, runs + 1):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def txt2img_row(b: Bench, steps: int = 50) -> None:
    """txt2img end to end: 50 Euler steps, CFG 7.5, decode, 512 px, in the four variants."""
    import numpy as np

    from t2i import Engine

    ref, folder = sd_folder(b, Path(tempfile.mkdtemp()))
    size = b.latent * 8

    def theirs(seed: int):
        g = torch.Generator().manual_seed(seed)
        out = ref(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                  generator=g, output_type="np")  # fmt: skip
        b.sync()
        return np.round(out.images[0] * 255)

    def ours(pipe):
        def run(seed: int):
            img = pipe(PROMPT, steps=steps, cfg_scale=7.5, seed=seed, width=size, height=size,
                       sampler="euler", schedule="linspace").images[0]  # fmt: skip
            return np.asarray(img, dtype=np.float64)

        return run

    expected = None
    for name in ("diffusers_eager", "diffusers_best", "t2i_eager", "t2i_fast"):
        t0 = time.perf_counter()
        if name == "diffusers_best":
            ref.unet.fuse_qkv_projections()
            ref.vae.fuse_qkv_projections()
            ref.unet.to(memory_format=torch.channels_last)
            ref.vae.to(memory_format=torch.channels_last)
            ref.unet = b.compile(ref.unet)
            ref.vae.decode = b.compile(ref.vae.decode)
        fn = theirs if name.startswith("diffusers") else ours(Engine.build(
            "ldm", checkpoint=str(folder), device=b.dev, dtype=b.dtype,
            compile=name == "t2i_fast"))  # fmt: skip
        ms, img = wall(fn)
        expected = img if expected is None else expected
        b.record("txt2img_50_euler", name, ms=round(ms, 1),
                 first_call_s=round(time.perf_counter() - t0 - 3 * ms / 1e3, 1),
                 mean_abs_diff_255=float(np.abs(img - expected).mean()))  # fmt: skip


def shapes_row(b: Bench) -> None:
    """``ldm-shapes`` images/s at batch 1 and 64, eager and with the fast path."""
    from t2i import Engine

    batches = (1, 4) if b.tiny else (1, 64)
    for name, fast in (("t2i_eager", False), ("t2i_fast", True)):
        t0 = time.perf_counter()
        pipe = Engine.build("ldm-shapes", device=b.dev, compile=fast)
        for batch in batches:

            def run(seed: int, pipe: Any = pipe, batch: int = batch) -> None:  # fresh seeds
                pipe("a large red circle on the left", seed=seed, batch_size=batch)

            run(0)  # warm-up (the fast path compiles here, per batch shape)
            first = time.perf_counter() - t0
            repeats = 2 if b.tiny or batch > 1 else 10
            start = time.perf_counter()
            for i in range(repeats):
                run(1000 * (i + 1))
            b.sync()
            rate = batch * repeats / (time.perf_counter() - start)
            b.record(f"ldm_shapes_batch{batch}", name, images_per_s=round(rate, 2),
                     first_call_s=round(first, 1))  # fmt: skip
            t0 = time.perf_counter()


def warm_row(b: Bench) -> None:
    """Wall time of ``t2i generate`` (one ldm-shapes image): eager, then ``--compile`` in a
    first process (cold cache) and a second one (warm: the first's compiled artifacts)."""
    cache = Path(tempfile.mkdtemp()) / "t2i-cache"
    env = {**os.environ, "T2I_CACHE_DIR": str(cache)}
    base = [sys.executable, "-m", "t2i.cli.main", "generate", "a small blue triangle at the top",
            "--device", str(b.dev), "--seed", "1"]  # fmt: skip
    runs = (("eager", []), ("compile_cold", ["--compile"]), ("compile_warm", ["--compile"]))
    for name, extra in runs:
        out = Path(tempfile.mkdtemp()) / "out.png"
        t0 = time.perf_counter()
        command = [*base, *extra, "-o", str(out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        b.record("first_image_process", name, wall_s=round(seconds, 2), rc=done.returncode,
                 tail=done.stderr[-300:] if done.returncode else "")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test of this script")
    ap.add_argument(
        "--cpu", action="store_true", help="real configs on the CPU in fp32, Inductor (e.g. warm)"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler tables of each UNet/VAE variant, beside --out",
    )
    args = ap.parse_args()
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    b = Bench(args)
    runs = {"sd15": lambda: unet_row(b, "sd15_unet_step", TINY_UNET if b.tiny else SD15_UNET,
                                     32 if b.tiny else 768),
            "sd21": lambda: unet_row(b, "sd21_unet_step", TINY_UNET if b.tiny else SD21_UNET,
                                     32 if b.tiny else 1024),
            "vae": lambda: vae_row(b), "txt2img": lambda: txt2img_row(b, 4 if b.tiny else 50),
            "shapes": lambda: shapes_row(b), "warm": lambda: warm_row(b)}  # fmt: skip
    for stage in STAGES:
        if stage in stages:
            try:
                runs[stage]()
            except Exception as exc:  # keep the other stages' rows
                b.record(stage, "error", error=f"{type(exc).__name__}: {exc}"[:500])


if __name__ == "__main__":
    main()
