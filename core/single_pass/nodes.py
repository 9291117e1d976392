"""``SampleOnce``: a guided generator, called once per batch -> the sample (a ``LATENT``)."""

from __future__ import annotations

import torch

from t2i.contracts import GENERATOR, GeneratorJob, require_contract
from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import Latent


class SampleOnce(NodeType):
    description = (
        "Draw z from the latent's seeds and call the generator once (GANs); its one live "
        "preview is the finished sample."
    )
    model_contract = GENERATOR
    inputs = (
        Port("guided", "GUIDED_MODEL"),
        Port("latent", "LATENT", description="batch size and seeds (z's size is the model's)"),
    )
    outputs = (Port("samples", "LATENT"),)
    params = (Param("sampler", str, "single_pass", "registered single-pass sampler"),)

    def execute(self, ctx, *, guided, latent: Latent, sampler: str):
        sampler_obj = ctx.registry.create("sampler", sampler)
        require_contract(sampler_obj, "sampler", sampler, GENERATOR)
        require_contract(guided.guidance, "guidance", guided.name, GENERATOR)
        dtype = ctx.dtype or torch.float32
        model, cond = guided.bind(len(latent.seeds), ctx.device, dtype)
        job = GeneratorJob(model, cond, latent.seeds, ctx.device, dtype, ctx.step)
        with torch.inference_mode():
            samples = sampler_obj.sample(job)
        if getattr(ctx, "on_preview", None) is not None:  # one pass: the finished sample
            ctx.preview(1, 1, samples.samples)
        return {"samples": samples}
