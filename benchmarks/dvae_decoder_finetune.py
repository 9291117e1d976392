"""Does the dVAE lose shapes in its decoder? Fine-tune the decoder alone on hard tokens.

The dVAE trains its decoder on Gumbel-softmax samples of the encoder's logits (temperature
annealed to 1/16, noise included), but sampling hands it argmax tokens. This experiment keeps
the encoder frozen (so the tokens, and any prior trained on them, stay valid), encodes
``--images`` training renders to argmax tokens once, and trains the decoder on those one-hot
maps with the logit-Laplace loss; the shapes judge reads its reconstructions of 256 test
renders before and after (as ``dvae_recon.py``). If the shape score rises, the decoder was the
bound; if not, the tokens are. The fine-tuned folder (same encoder and transformer, new
decoder) is written to ``--out``.

    python benchmarks/dvae_decoder_finetune.py RUN/model --out RUN_FT --device cuda \
        --images 16000 --minutes 3 [--batch-size 64 --lr 1e-4]

On this project's 2-core CPU a step of the n_hid-128 decoder at batch 32 takes seconds: a GPU
experiment (2026-12-03: 94 CPU steps changed nothing measurable).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from dvae_recon import judged
from safetensors.torch import save_file
from t2i_dalle.checkpoint import DVAE_FILE, load_dalle
from t2i_dalle.dvae import map_pixels
from t2i_dalle.trainables import logit_laplace_nll

from t2i.shapes.dataset import make_sample, pil_to_tensor
from t2i.shapes.judge import load_judge


def renders(split: str, n: int) -> torch.Tensor:
    """``n`` benchmark renders of ``split`` as [0, 1] floats ``(n, 3, 64, 64)``."""
    return torch.stack(
        [pil_to_tensor(make_sample(split, i, 64, pair_fraction=0.6).image) for i in range(n)]
    )


def reconstruction_report(enc, dec, judge, samples, x: torch.Tensor, device) -> dict:
    """The judge on the decoder's reconstructions of ``x`` (argmax tokens), and their L1."""
    dec.eval()
    with torch.no_grad():
        tokens = torch.cat([enc.tokens(c.to(device)) for c in x.split(64)])
        rec = torch.cat([dec.images(t).clamp(0, 1).cpu() for t in tokens.split(64)])
    dec.train()
    row = judged(judge, samples, rec)
    row["l1"] = round(float((rec - x).abs().mean()), 4)
    return row


def finetune(dec, tokens: torch.Tensor, x: torch.Tensor, args, device) -> int:
    """Train ``dec`` on ``(tokens, x)`` for ``args.minutes``; the number of steps."""
    opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
    vocab, step, start = dec.config.vocab_size, 0, time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60:
        idx = torch.randint(0, len(x), (args.batch_size,))
        target = map_pixels(x[idx].to(device))
        maps = F.one_hot(tokens[idx].to(device), vocab).permute(0, 3, 1, 2).float()
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            stats = dec(maps)
        loss = logit_laplace_nll(target, stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"step {step} loss {float(loss):.4f}", flush=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a dalle-shapes model folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=16000)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = load_dalle(args.folder, need_transformer=False)
    enc, dec = model.encoder.to(device).eval(), model.decoder.to(device)
    judge = load_judge()
    test = [make_sample("test", i, 64, pair_fraction=0.6) for i in range(256)]
    xt = torch.stack([pil_to_tensor(s.image) for s in test])
    report = {"before": reconstruction_report(enc, dec, judge, test, xt, device)}
    print("before", json.dumps(report["before"]), flush=True)
    x = renders("train", args.images)
    with torch.no_grad():
        tokens = torch.cat([enc.tokens(c.to(device)).cpu() for c in x.split(256)])
    report["steps"] = finetune(dec, tokens, x, args, device)
    report["after"] = reconstruction_report(enc, dec, judge, test, xt, device)
    print("after", json.dumps(report["after"]), flush=True)
    shutil.copytree(args.folder, args.out, dirs_exist_ok=True)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    save_file({k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()},
              str(args.out / DVAE_FILE))  # fmt: skip
    (args.out / "decoder_finetune.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
