"""Token sampling: temperature, top-k and top-p (nucleus) filtering, seeded per row.

:class:`TokenSampler` runs the loop of a :class:`~t2i.contracts.TokenJob`: the first call
gives the predictor ``bos`` with no cache; each later call gives it only the token just
drawn and the cache it returned (so a step costs one token's attention, not the prefix's).
Row ``i`` draws from its own ``torch.Generator("cpu")`` seeded with ``seeds[i]``: an image
depends on its seed only, as in the diffusion samplers. With ``job.preview`` set, the grid
drawn so far (the rest :data:`~t2i.contracts.UNDRAWN`) is handed over every
``job.preview_every`` tokens and after the last, as min-dalle's progressive outputs are.

Filtering follows Holtzman et al. 2020 (top-p keeps the smallest set of tokens whose
probability reaches ``p``, always at least one) and the usual top-k; both may be combined
(top-k first), as in transformers' ``TopKLogitsWarper`` / ``TopPLogitsWarper``.
"""

from __future__ import annotations

import attrs
import torch

from t2i.contracts import TOKENS, UNDRAWN, TokenJob


def filter_logits(
    logits: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """``logits`` ``(B, V)`` with the tokens outside top-k / top-p set to ``-inf``."""
    out = logits
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False  # always keep the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def partial_grid(drawn: list[torch.Tensor], length: int) -> torch.Tensor:
    """The ``(B, length)`` tokens of ``drawn`` (``(B, 1)`` each) followed by
    :data:`~t2i.contracts.UNDRAWN` for the positions not drawn yet."""
    so_far = torch.cat(drawn, 1)
    rest = so_far.new_full((so_far.shape[0], length - so_far.shape[1]), UNDRAWN)
    return torch.cat([so_far, rest], 1)


def draw(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row from ``probs`` ``(B, V)``, row ``i`` with ``generators[i]`` (CPU)."""
    cpu = probs.float().cpu()
    picks = [torch.multinomial(cpu[i], 1, generator=g) for i, g in enumerate(generators)]
    return torch.cat(picks).to(probs.device)


@attrs.frozen
class TokenSampler:
    """Temperature + top-k + top-p sampling (registered as ``top_k``, alias ``top_p``).

    Attributes:
        top_k: keep the ``k`` most likely tokens (None: all; >= 1).
        top_p: keep the smallest set reaching probability ``p`` (None or 1: all).
        temperature: divides the logits; must be > 0.
    """

    model_contract = TOKENS

    top_k: int | None = None
    top_p: float | None = None
    temperature: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (None: no limit), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sample(self, job: TokenJob) -> torch.Tensor:
        """``(B, job.length)`` int64 tokens, drawn one at a time with the model's KV cache."""
        if job.length < 1:
            raise ValueError(f"need at least one token to draw, got length {job.length}")
        model = job.model
        batch = len(job.seeds)
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in job.seeds]
        tokens = torch.full((batch, 1), int(model.bos), dtype=torch.long, device=job.device)
        cache, out = None, []
        for i in range(job.length):
            logits, cache = model(tokens, job.cond, cache)
            logits = filter_logits(
                logits.float() / self.temperature, top_k=self.top_k, top_p=self.top_p
            )
            tokens = draw(torch.softmax(logits, -1), gens)[:, None]
            out.append(tokens)
            shown = (i + 1) % job.preview_every == 0 or i + 1 == job.length
            if job.preview is not None and shown:
                job.preview(i + 1, job.length, partial_grid(out, job.length))
            if job.callback is not None:
                job.callback(i + 1, job.length)
        return torch.cat(out, 1)


def token_sampler_factory(**options) -> TokenSampler:
    """Temperature + top-k + top-p token sampling, seeded per row."""
    return TokenSampler(**options)


token_sampler_factory.model_contract = TOKENS  # type: ignore[attr-defined]
