"""Images/s of gan-shapes vs ldm-shapes at 64 px, batch 1 and 64 (BENCHMARKS.md, GAN section).

Each recipe runs through the engine, ``pipe(prompt, seed=s, batch_size=B)`` with one prompt
and a new seed per call, so the executor's cache keeps the text encoding out of the loop for
both families (what remains: sampling + decoding). Wall time per call (CUDA synchronised),
median of ``--repeats`` after ``--warmup`` calls. Where MiniLM is not installed (the GPU
machine), gan-shapes is also timed as its generator alone (``z`` -> ``G`` -> pixels, with a
precomputed sentence vector): ``gan-shapes (generator)``.

    python benchmarks/gan_speed.py --device cpu --out speed_cpu.json
    python benchmarks/gan_speed.py --device cuda --dtypes float32,float16 --out speed_gpu.json

``--random-gan FOLDER``: write a random-weight gan-shapes folder (nf 32, the shipped
architecture; speed does not depend on the weights) there and time that, so the weights need
not travel to the GPU machine.

``--dtypes``: each family at each weight dtype (``Engine.build(dtype=...)``); the ratio row
of a dtype compares the two families at that dtype.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

PROMPT = "a large red circle on the left"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(call, device: str, warmup: int, repeats: int) -> float:
    for i in range(warmup):
        call(i)
    _sync(device)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        call(warmup + i)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engine_rate(recipe: str, device: str, batch: int, warmup: int, repeats: int, **build) -> float:
    from t2i import Engine

    pipe = Engine.build(recipe, device=device, **build)

    def call(i: int) -> None:
        pipe(PROMPT, seed=1000 * i, batch_size=batch)

    return batch / _time(call, device, warmup, repeats)


def generator_rate(checkpoint, vectors, device: str, batch: int, warmup: int, repeats: int,
                   dtype: str = "float32"):  # fmt: skip
    from t2i_gan.generator import PixelDecoder
    from t2i_gan.recipes import create_generator

    from t2i.payloads import Conditioning, Latent
    from t2i.single_pass.sampling import draw_z

    gen = create_generator(checkpoint=checkpoint).to(device, getattr(torch, dtype))
    data = torch.load(Path(vectors) / "eval.pt", weights_only=True)
    s = data["emb"][:1].float().to(device)
    cond = Conditioning(embeds=s[:, None], pooled=s).repeat_to(batch)
    decoder = PixelDecoder()

    @torch.inference_mode()
    def call(i: int) -> None:
        z = draw_z(tuple(range(1000 * i, 1000 * i + batch)), gen.z_dim, device=device)
        decoder.decode(Latent(gen(z, cond))).to_pil()

    return batch / _time(call, device, warmup, repeats)


def random_gan(folder: str) -> str:
    """A gan-shapes-architecture folder with random weights (netG/netD/netC + model.json)."""
    from t2i_gan.models import GanConfig
    from t2i_gan.text import SENTENCE_DIM
    from t2i_gan.trainable import GanTrainable

    torch.manual_seed(0)
    config = GanConfig(nf=32, z_dim=100, cond_dim=SENTENCE_DIM, image_size=64, cond_norm=True)
    GanTrainable(config, training={"trainer": "random (speed only)"}).save(Path(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="gan-shapes model folder")
    parser.add_argument("--random-gan", default=None, help="write and time a random gan folder")
    parser.add_argument("--vectors", default=None, help="folder with eval.pt (generator mode)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ldm-repeats", type=int, default=3)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="both families through Engine.build(compile=True); warm-up untimed",
    )
    parser.add_argument("--dtypes", default="float32", help="comma list, e.g. float32,float16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.random_gan:
        args.checkpoint = random_gan(args.random_gan)
    gan_build = {} if args.checkpoint is None else {"checkpoint": args.checkpoint}
    fast = {"compile": True} if args.compile else {}
    rows = {}
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = {}
            try:
                row["gan-shapes"] = engine_rate(
                    "gan-shapes", args.device, batch, args.warmup, args.repeats, dtype=dtype,
                    **gan_build, **fast,
                )  # fmt: skip
            except Exception as exc:  # MiniLM missing: report the generator alone
                row["gan-shapes error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            if args.vectors:
                row["gan-shapes (generator)"] = generator_rate(
                    args.checkpoint, args.vectors, args.device, batch, args.warmup, args.repeats,
                    dtype,
                )  # fmt: skip
            row["ldm-shapes"] = engine_rate(
                "ldm-shapes",
                args.device,
                batch,
                2 if fast else 1,
                args.ldm_repeats,
                dtype=dtype,
                **fast,
            )
            gan = row.get("gan-shapes", row.get("gan-shapes (generator)"))
            row["ratio"] = gan / row["ldm-shapes"] if gan else None
            rows[f"{dtype} batch {batch}"] = row
            print(dtype, batch, row, flush=True)
    info = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": bool(args.compile),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "images_per_second": rows,
    }
    text = json.dumps(info, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    import sys

    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
