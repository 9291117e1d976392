"""Tokens/s of DALL-E sampling with the KV cache vs recomputing the prefix, and vs min-dalle.

Three measurements, one JSON (``--out``):

1. ``dalle``: the DALL-E transformer (dalle-shapes' shape: width 256, 8 layers, 4 heads,
   24 text positions; the shipped weights when installed, else random) drawing a whole grid
   with super-conditioning (batch ``2 x images``): one new position per token with the
   KV cache, against a full forward over ``[text | image prefix]`` per token. At the
   dalle-shapes grid (16 x 16 = 256 tokens) and a 32 x 32 grid (1024 tokens).
2. ``mini``: DALL-E Mini's BART decoder (ours, KV cache and cross keys/values computed once)
   against min-dalle's own decoder loop (``DalleBartDecoder.sample_tokens``, its attention
   state buffer, cross-attention recomputed per token) on the same random weights: a
   tiny-to-mid config (``--mini-layers`` x ``--mini-embed``), 256 tokens, greedy, same batch.
3. ``cpu_generate``: wall time of ``t2i generate --recipe dalle-shapes`` (when the shipped
   weights are installed and ``--generate``).

Usage::

    python benchmarks/dalle_kv_cache.py --device cpu --out dalle_kv_cpu.json
    python benchmarks/dalle_kv_cache.py --device cuda --out dalle_kv_gpu.json   # H200
    (--recompute-tokens N caps the recompute runs at their first N tokens: the rate of the
    remaining tokens would only be lower, so the speed-up is then a lower bound;
    --recompute-sample K instead times one full-prefix forward at K prefix lengths spread
    evenly over the grid and takes n x their mean as the whole recompute run: an estimate of
    the full run, not a bound)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _dalle_model(grid: int, device: str, dtype: torch.dtype):
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    shipped = Path(__file__).resolve().parents[1] / "plugins/t2i_dalle/src/t2i_dalle/weights"
    spec = shipped / "dalle-shapes" / "dalle.json"
    base = dict(text_vocab=63, text_len=24, image_vocab=512, width=256, depth=8, heads=4)
    if spec.is_file():
        base.update(
            {k: v for k, v in json.loads(spec.read_text())["transformer"].items() if k != "grid"}
        )
    torch.manual_seed(0)
    model = DalleTransformer(TransformerConfig(grid=grid, **base)).eval()
    return model.to(device=device, dtype=dtype), base


@torch.inference_mode()
def dalle_rates(
    grid: int, images: int, device: str, dtype, recompute_cap: int | None, sample: int = 0
) -> dict:
    model, base = _dalle_model(grid, device, dtype)
    n = grid * grid
    rows = 2 * images  # [cond; uncond]
    text = torch.randint(0, base["text_vocab"], (rows, base["text_len"]), device=device)
    states = model.embed_text(text)
    bos = torch.full((rows, 1), model.image_bos, device=device)

    def cached(count: int) -> float:
        _sync(device)
        t = time.perf_counter()
        logits, cache = model.step(bos, states, None)
        for _ in range(count - 1):
            tok = logits.argmax(-1, keepdim=True)
            logits, cache = model.step(tok, None, cache)
        _sync(device)
        return time.perf_counter() - t

    def recompute(count: int) -> float:
        stream = bos
        _sync(device)
        t = time.perf_counter()
        for _ in range(count):
            logits, _ = model.step(stream, states, None)  # the whole prefix, no cache kept
            stream = torch.cat([stream, logits.argmax(-1, keepdim=True)], 1)
        _sync(device)
        return time.perf_counter() - t

    def sampled(k: int) -> float:
        """The whole grid's recompute time from ``k`` prefix lengths spread evenly over
        1..n: one full forward each, ``n x`` their mean (a Riemann sum of the per-token cost)."""
        lengths = torch.linspace(1, n, k).round().long().tolist()
        times = []
        for length in lengths:
            stream = torch.randint(0, base["image_vocab"], (rows, length), device=device)
            stream[:, 0] = model.image_bos
            _sync(device)
            t = time.perf_counter()
            model.step(stream, states, None)
            _sync(device)
            times.append(time.perf_counter() - t)
        return n * sum(times) / len(times)

    cached(min(n, 16))  # warm-up
    t_cache = cached(n)
    out = {"grid": grid, "image_tokens": n, "images": images,
           "kv_cache_tokens_per_s": round(n / t_cache, 1)}  # fmt: skip
    if sample:
        sampled(2)  # warm-up
        t_full = sampled(sample)
        out.update(recompute_sampled_lengths=sample, recompute_tokens_per_s=round(n / t_full, 1))
        return out | {"speedup": round(t_full / t_cache, 2)}
    m = min(n, recompute_cap) if recompute_cap else n
    recompute(min(m, 8))
    t_full = recompute(m)
    out.update(recompute_tokens=m, recompute_tokens_per_s=round(m / t_full, 1))
    return out | {"speedup": round((n / t_cache) / (m / t_full), 2)}


@torch.inference_mode()
def mini_rates(layers: int, embed: int, images: int, device: str) -> dict:
    """Ours vs min-dalle's decoder loop, same random weights, greedy (top_k=1), fp32."""
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    from min_dalle.models import DalleBartDecoder  # its package import turns autograd off

    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)
    from t2i_dalle.mini.bart import START_TOKEN, BartConfig, BartDecoder

    heads, glu, text_len = max(1, embed // 64), 2 * embed, 64
    torch.manual_seed(0)
    ref = DalleBartDecoder(image_vocab_count=2**14, embed_count=embed, attention_head_count=heads,
                           glu_embed_count=glu, layer_count=layers, device=device)  # fmt: skip
    ref = ref.to(device).eval()
    config = BartConfig(layers=layers, heads=heads, embed=embed, glu=glu, text_vocab=64,
                        image_vocab=2**14, text_len=text_len)  # fmt: skip
    ours = BartDecoder(config)
    ours.load_state_dict(ref.state_dict())
    ours = ours.to(device).eval()
    rows = 2 * images
    states = torch.randn(rows, text_len, embed, device=device)
    mask = torch.ones(rows, text_len, dtype=torch.bool, device=device)
    mask[:images, 2:] = False  # the unconditional rows: <s> </s> then padding
    settings = torch.tensor([1.0, 1.0, 16.0], device=device)  # temperature, top_k, s

    def theirs() -> float:
        state = torch.zeros(layers, rows * 2, 256, embed, device=device)
        tokens = torch.full((images, 257), START_TOKEN, dtype=torch.long, device=device)
        idx = torch.arange(256, device=device)
        _sync(device)
        t = time.perf_counter()
        for i in range(256):
            tokens[:, i + 1], state = ref.sample_tokens(
                settings=settings, attention_mask=mask[:, None, None, :], encoder_state=states,
                attention_state=state, prev_tokens=tokens[:, [i]], token_index=idx[[i]],
            )  # fmt: skip
        _sync(device)
        return time.perf_counter() - t

    def mine() -> float:
        tok = torch.full((rows, 1), START_TOKEN, dtype=torch.long, device=device)
        cache = None
        _sync(device)
        t = time.perf_counter()
        for _ in range(256):
            logits, cache = ours(tok, states if cache is None else None, mask, cache)
            c, u = logits[:, -1, : 2**14].chunk(2)
            nxt = (u + 16.0 * (c - u)).argmax(-1, keepdim=True)
            tok = torch.cat([nxt, nxt])
        _sync(device)
        return time.perf_counter() - t

    theirs(), mine()  # warm-up
    t_ref, t_ours = theirs(), mine()
    return {
        "layers": layers,
        "embed": embed,
        "heads": heads,
        "images": images,
        "min_dalle_tokens_per_s": round(256 / t_ref, 1),
        "ours_tokens_per_s": round(256 / t_ours, 1),
        "ratio_ours_over_min_dalle": round(t_ref / t_ours, 2),
    }


def cpu_generate() -> dict | None:
    """Wall time of the README command on this machine (weights must be installed)."""
    shipped = Path(__file__).resolve().parents[1] / "plugins/t2i_dalle/src/t2i_dalle/weights"
    if not (shipped / "dalle-shapes" / "dalle.json").is_file():
        return None
    cmd = ["t2i", "generate", "--recipe", "dalle-shapes", "a small blue triangle at the top",
           "-o", "/tmp/dalle_bench.png"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return {"command": " ".join(cmd), "wall_s": round(time.perf_counter() - t, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="the DALL-E transformer in bf16")
    p.add_argument("--images", type=int, default=4, help="images per batch (rows: 2x)")
    p.add_argument("--grids", default="16,32", help="grid sides (16: dalle-shapes, 32: 1024)")
    p.add_argument("--recompute-tokens", type=int, default=None)
    p.add_argument(
        "--recompute-sample",
        type=int,
        default=0,
        help="estimate the recompute run from K prefix lengths spread over the grid",
    )
    p.add_argument("--mini-layers", type=int, default=4)
    p.add_argument("--mini-embed", type=int, default=512)
    p.add_argument("--generate", action="store_true", help="also time t2i generate")
    p.add_argument("--out", default="dalle_kv_cache.json")
    a = p.parse_args()
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    info = {"device": a.device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if a.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    result = {"info": info, "dalle": [], "mini": None, "cpu_generate": None}
    for g in (int(x) for x in a.grids.split(",")):
        r = dalle_rates(g, a.images, a.device, dtype, a.recompute_tokens, a.recompute_sample)
        print(json.dumps(r), file=sys.stderr)
        result["dalle"].append(r)
    result["mini"] = mini_rates(a.mini_layers, a.mini_embed, 1, a.device)
    print(json.dumps(result["mini"]), file=sys.stderr)
    if a.generate:
        result["cpu_generate"] = cpu_generate()
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
