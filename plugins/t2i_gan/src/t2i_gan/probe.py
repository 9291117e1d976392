"""The judge's alignment of a generator on a fixed prompt set, during training.

The first ``n`` prompts of the benchmark's evaluation set (:func:`t2i.shapes.evaluate
.prompt_set`), each with the same seeds, drawn with the sampler's ``z``
(:func:`t2i.single_pass.sampling.draw_z`) and scored by :func:`t2i.shapes.evaluate.evaluate`.
Sentence vectors come from ``eval.pt`` (``{"captions", "emb"}``) in the precomputed-vectors
folder when it holds them, else from MiniLM; a word pooling generator (``words=True``) also
reads each prompt's per-token states (``eval.pt``'s ``"words"`` / ``"mask"``, else MiniLM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from t2i.payloads import Image


def _text(texts: list[str], vectors, words: bool) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per prompt ``(sentence,)`` or ``(sentence, states (T, D), mask (T,))``: from
    ``vectors/eval.pt`` when it holds what is needed, else from MiniLM."""
    stored = Path(vectors) / "eval.pt" if vectors is not None else None
    if stored is not None and stored.is_file():
        data = torch.load(stored, weights_only=True)
        if not words:
            table = dict(zip(data["captions"], data["emb"].float()))
            return {t: (table[t],) for t in texts}
        if "words" in data and "mask" in data:
            rows = zip(data["emb"].float(), data["words"].float(), data["mask"].bool())
            table = dict(zip(data["captions"], rows))
            return {t: table[t] for t in texts}
    from t2i_gan.data import encode_text

    rows = encode_text(texts, words=words).batch(torch.arange(len(texts)))
    return {t: tuple(x[i] for x in rows) for i, t in enumerate(texts)}


class AlignmentProbe:
    """``probe(netG) -> {"single", "pair", "overall", "fd", "diversity"}``."""

    def __init__(
        self,
        n_prompts: int,
        *,
        seeds: tuple[int, ...] = (0, 1),
        vectors: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        words: bool = False,
    ) -> None:
        from t2i.shapes.evaluate import prompt_set
        from t2i.shapes.judge import load_judge

        self.prompts = prompt_set(n_prompts)
        self.seeds, self.device = tuple(seeds), torch.device(device)
        texts = [p.text for p in self.prompts]
        table = _text(texts, vectors, words)
        self.vectors = {t: tuple(x.to(self.device) for x in v) for t, v in table.items()}
        self.judge = load_judge()

    @torch.no_grad()
    def __call__(self, net: torch.nn.Module) -> dict[str, Any]:
        from t2i.shapes.evaluate import evaluate
        from t2i.single_pass.sampling import draw_z

        was_training = net.training
        net.eval()

        def generate(prompt: str, seeds: list[int]) -> list:
            z = draw_z(tuple(seeds), net.config.z_dim, device=self.device)
            text = [t.expand(len(seeds), *t.shape) for t in self.vectors[prompt]]
            return Image(((net(z, *text).float() + 1) / 2).clamp(0, 1)).to_pil()

        try:
            report, _ = evaluate(
                generate,
                self.prompts,
                self.seeds,
                judge=self.judge,
                progress=False,
                keep_images=False,
            )
        finally:
            net.train(was_training)
        return {
            **report.alignment,
            "fd": report.frechet_distance,
            "diversity": report.diversity,
        }
