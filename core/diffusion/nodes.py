"""The diffusion toolbox's graph nodes (ComfyUI's SIGMAS / GUIDER / SAMPLER split, typed).

- ``Sigmas``: a registered schedule, a model and a step count -> the sigmas to run (cut
  for img2img by ``strength``);
- ``SampleDiffusion``: a ``GUIDED_MODEL`` (from the graph's ``Guide`` node), the sigmas
  and the batch's shape and seeds -> the sample, with a registered diffusion sampler;
- ``LowResCondition``: a cascade stage's output -> the ``IMAGE_CONDITION`` the next
  (super-resolution) stage's ``Guide`` attaches to its conditioning;
- ``MaskLatent``: an img2img start sample + an inpainting ``MASK`` -> the start sample with
  its mask at the sample's size (``Latent.mask``) and A1111's latent "masked content".

A cascade is two diffusion samplings joined by a ``LowResCondition`` edge.
"""

from __future__ import annotations

import torch

from t2i.contracts import DIFFUSION, DiffusionJob, require_contract
from t2i.diffusion.sampler import img2img_sigmas
from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import ImageCondition, Latent, Mask, Sigmas


class SigmasNode(NodeType):
    description = "A registered schedule's sigmas for a model and a step count (img2img: the tail)."
    inputs = (Port("model", "DENOISER"),)
    outputs = (Port("sigmas", "SIGMAS"),)
    params = (
        Param("schedule", str, "normal", "registered schedule name"),
        Param("steps", int, 20, "sampling steps (0: fallback_steps)", minimum=0, maximum=10_000),
        Param("fallback_steps", int, 0, "steps when steps is 0 (a hires pass: the first pass's)"),
        Param(
            "strength",
            float,
            1.0,
            "img2img denoising strength: the last steps * strength run",
            minimum=0.0,
            maximum=1.0,
        ),
    )

    def execute(self, ctx, *, model, schedule, steps, strength, fallback_steps):
        steps = steps or fallback_steps
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        sigmas = ctx.registry.create("schedule", schedule).get_sigmas(model, steps)
        return {"sigmas": Sigmas(img2img_sigmas(sigmas, steps, strength), steps=steps)}


class SampleDiffusion(NodeType):
    description = (
        "Run a diffusion sampler over the sigmas: noise from the latent's seeds -> sample."
    )
    model_contract = DIFFUSION
    inputs = (
        Port("guided", "GUIDED_MODEL"),
        Port("sigmas", "SIGMAS"),
        Port("latent", "LATENT", description="shape and seeds of the batch"),
        Port("init", "LATENT", optional=True, description="img2img start sample"),
    )
    outputs = (Port("samples", "LATENT"),)
    params = (
        Param("sampler", str, "euler", "registered diffusion sampler (canonical name)"),
        Param("eta", (float, type(None)), None, "stochasticity (DDIM eta, ancestral noise)"),
        Param("noise_device", str, "cpu", choices=("cpu", "device")),
        Param("add_noise", bool, True, "noise init to the first sigma (False: a later stage)"),
    )

    def execute(self, ctx, *, guided, sigmas, latent, init, sampler, eta, noise_device, add_noise):
        sampler_obj = ctx.registry.create("sampler", sampler)
        require_contract(sampler_obj, "sampler", sampler, DIFFUSION)
        require_contract(guided.guidance, "guidance", guided.name, DIFFUSION)
        # the sample and the sampler's arithmetic stay float32 under a 16-bit model (as A1111
        # and ComfyUI keep them): a pixel-space schedule's sigma_max (Imagen's cosine: ~2e4)
        # times N(0, 1) noise overflows float16; denoisers cast x to their weights' dtype
        dtype = sampling_dtype(ctx.dtype or torch.float32)
        model, cond = guided.bind(latent.samples.shape[0], ctx.device, ctx.dtype or torch.float32)
        _check_step_fits(model, cond, sigmas.sigmas, tuple(latent.samples.shape), ctx, dtype)
        job = DiffusionJob(
            model=model,
            cond=cond,
            sigmas=sigmas.sigmas,
            shape=tuple(latent.samples.shape),
            seeds=latent.seeds,
            init=init,
            eta=eta,
            device=ctx.device,
            dtype=dtype,
            noise_device=noise_device,
            callback=ctx.step,
            preview=ctx.preview if getattr(ctx, "on_preview", None) is not None else None,
            variation=latent.variation,
            add_noise=add_noise,
        )
        with torch.inference_mode():
            return {"samples": sampler_obj.sample(job)}


def sampling_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype a diffusion sample is kept in: float32 for 16-bit models, else the model's."""
    return torch.float32 if model_dtype in (torch.float16, torch.bfloat16) else model_dtype


def _check_step_fits(model, cond, sigmas, shape, ctx, dtype) -> None:
    """Refuse a sampling whose one model call cannot fit in the device's free memory."""
    from t2i.memory import check_fits

    sigma = sigmas[:1].to(ctx.device, dtype).expand(shape[0])
    check_fits(
        f"one denoiser step at batch {shape[0]} on a {'x'.join(map(str, shape[1:]))} sample",
        lambda x: model(x, sigma, cond),
        (shape,),
        dtype=dtype,
        device=ctx.device,
        fix="lower the size or the batch size (or run on a device with more memory)",
        key=(getattr(model, "model", model), type(model).__name__),  # the denoiser
    )


class SplitSigmas(NodeType):
    description = (
        "Split sigmas where a second model takes over (A1111's refiner switch): 'high' runs "
        "the first stage, 'low' (from the same sigma) the second, from the first's sample."
    )
    inputs = (Port("model", "DENOISER"), Port("sigmas", "SIGMAS"))
    outputs = (Port("high", "SIGMAS"), Port("low", "SIGMAS"))
    params = (
        Param(
            "switch_at",
            float,
            0.8,
            "fraction of the model's training timesteps done when the second model takes over",
            minimum=0.0,
            maximum=1.0,
        ),
    )

    def execute(self, ctx, *, model, sigmas, switch_at):
        k = switch_index(model, sigmas.sigmas, switch_at)
        high, low = sigmas.sigmas[: k + 1], sigmas.sigmas[k:]
        return {"high": Sigmas(high, steps=sigmas.steps), "low": Sigmas(low, steps=sigmas.steps)}


def switch_index(model, sigmas: torch.Tensor, switch_at: float) -> int:
    """The first step whose sigma's nearest training timestep ``t`` has ``(T - 1 - t) / T >=
    switch_at`` (A1111's ``apply_refiner``, switching by sigma); a model without a discrete
    sigma table switches after ``round(steps * switch_at)`` steps. ``len(sigmas) - 1`` (the
    last, 0) when no step qualifies."""
    steps = len(sigmas) - 1
    table = getattr(model, "sigmas", None)
    if not isinstance(table, torch.Tensor) or table.ndim != 1 or len(table) < 2:
        return min(steps, max(0, round(steps * switch_at)))
    table = table.detach().double().cpu()
    n = len(table)
    for i, sigma in enumerate(sigmas[:-1].detach().double().cpu()):
        t = int(torch.argmin((table - sigma).abs()))
        if (n - 1 - t) / n >= switch_at:
            return i
    return steps


class LowResCondition(NodeType):
    description = (
        "A cascade stage's output (in the model's data range) and a noise-augmentation level "
        "-> the IMAGE_CONDITION of the next, super-resolution stage."
    )
    inputs = (Port("samples", "LATENT"),)
    outputs = (Port("image_condition", "IMAGE_CONDITION"),)
    params = (
        Param("noise_level", float, 0.0, "augmentation level, in the SR model's units", minimum=0),
    )

    def execute(self, ctx, *, samples: Latent, noise_level: float):
        if not noise_level >= 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        x = samples.samples
        level = torch.full((x.shape[0],), float(noise_level), device=x.device, dtype=x.dtype)
        return {"image_condition": ImageCondition(x, level, seeds=samples.seeds)}


class MaskLatent(NodeType):
    description = (
        "img2img's start sample, one row per seed of the batch; with a MASK (inpainting) it "
        "gets the mask at its size (bicubic, rounded: A1111's latent mask), so the sampler "
        "keeps it outside the mask; 'latent noise' / 'latent nothing' replace the masked "
        "cells with the seeds' noise / zeros."
    )
    inputs = (
        Port("latent", "LATENT", description="the encoded init image"),
        Port("mask", "MASK", optional=True),
        Port("noise", "LATENT", optional=True, description="the batch's seeds (latent noise)"),
    )
    outputs = (Port("latent", "LATENT"),)
    params = (
        Param(
            "fill",
            (int, str),
            1,
            "masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing",
        ),
        Param("blend", bool, True, "blend the prediction with the start sample every step (A1111)"),
    )

    def execute(self, ctx, *, latent: Latent, mask: Mask | None, noise, fill, blend):
        x, seeds = latent.samples, latent.seeds
        if noise is not None and noise.seeds:
            seeds = noise.seeds  # one init image for a batch: every row starts from it
            if x.shape[0] == 1 and len(seeds) > 1:
                x = x.expand(len(seeds), *x.shape[1:])
        if mask is None:
            return {"latent": Latent(x, seeds=seeds)}
        from t2i.graph.nodes import mask_image
        from t2i.masking import fill_mode, latent_mask

        fill = fill_mode(fill)
        h, w = x.shape[-2:]
        m = torch.from_numpy(latent_mask(mask_image(mask.pixels), w, h))[None, None]
        m = m.to(x.device, x.dtype)
        # latent noise: the seeds' first noise (A1111's create_random_tensors of the seeds;
        # A1111 takes the first batch's seeds for every batch of a run, here each batch's own)
        if fill == 2:
            from t2i.noise import BatchNoise

            if len(seeds) != x.shape[0]:
                raise ValueError("'latent noise' needs the batch's seeds: link MaskLatent.noise")
            drawn = BatchNoise(tuple(x.shape), seeds, device=x.device, dtype=x.dtype).next()
            x = x * (1 - m) + drawn * m
        elif fill == 3:  # latent nothing
            x = x * (1 - m)
        return {"latent": Latent(x, seeds=seeds, mask=m if blend else None)}
