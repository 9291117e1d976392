"""``SampleTokens``: a guided token predictor -> a grid of image tokens (a ``LATENT``)."""

from __future__ import annotations

import torch

from t2i.contracts import TOKENS, TokenJob, require_contract
from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import Latent


class SampleTokens(NodeType):
    description = (
        "Draw image tokens one at a time with a KV-cached token predictor; the latent's shape "
        "(B, 1, h, w) is the token grid the decoder reads. Live previews: the partial grid "
        "after every grid row (UNDRAWN where no token is drawn yet)."
    )
    model_contract = TOKENS
    inputs = (
        Port("guided", "GUIDED_MODEL"),
        Port("latent", "LATENT", description="token grid shape (B, 1, h, w) and seeds"),
    )
    outputs = (Port("samples", "LATENT"),)
    params = (
        Param("sampler", str, "top_k", "registered token sampler"),
        Param("top_k", (int, type(None)), None),
        Param("top_p", (float, type(None)), None),
        Param("temperature", float, 1.0),
    )

    def execute(self, ctx, *, guided, latent, sampler, top_k, top_p, temperature):
        options = {"top_k": top_k, "top_p": top_p, "temperature": temperature}
        sampler_obj = ctx.registry.create("sampler", sampler, **options)
        require_contract(sampler_obj, "sampler", sampler, TOKENS)
        require_contract(guided.guidance, "guidance", guided.name, TOKENS)
        shape = tuple(latent.samples.shape)
        dtype = ctx.dtype or torch.float32
        model, cond = guided.bind(shape[0], ctx.device, dtype)
        length = int(torch.Size(shape[1:]).numel())
        preview = None
        if getattr(ctx, "on_preview", None) is not None:

            def preview(step: int, total: int, tokens: torch.Tensor) -> None:
                ctx.preview(step, total, tokens.view(shape))

        job = TokenJob(
            model, cond, length, latent.seeds, ctx.device, dtype, ctx.step,
            preview=preview, preview_every=max(1, shape[-1]),
        )  # fmt: skip
        with torch.inference_mode():
            tokens = sampler_obj.sample(job)
        return {"samples": Latent(tokens.view(shape), seeds=latent.seeds)}
