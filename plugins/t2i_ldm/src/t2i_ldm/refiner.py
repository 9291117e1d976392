"""SDXL's refiner as a second stage of the ``ldm`` recipe's graph (A1111's "Refiner").

A1111 (>= 1.6, ``sd_samplers_common.apply_refiner``) samples with the base model until the
step whose sigma's nearest training timestep ``t`` has ``(999 - t) / 1000 >=
refiner_switch_at`` and finishes the remaining steps with the refiner, conditioned by the
refiner's own text encoder (OpenCLIP bigG) with the aesthetic score 6.0 for the prompt and
2.5 for the negative prompt. The same run as core nodes:

``Sigmas -> SplitSigmas(model=base, switch_at)``: ``high`` feeds the base ``SampleDiffusion``
(which stops at the switch sigma), ``low`` a second ``SampleDiffusion`` with the refiner's
``Guide``, whose ``init`` is the base's partial sample and ``add_noise=False`` (the sample is
already at that sigma); the prompt's tokens go through the refiner's ``EncodeText`` and
``Ldm.SetAestheticScore``; the refiner's VAE decodes (the base's when it has none). Unlike
A1111's single sampler loop, a multistep sampler (DPM++ 2M) restarts its history at the
switch and an ancestral one draws the second stage's noise afresh; Euler is identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import Conditioning

INFOTEXT = ("Refiner", "Refiner switch at")
"""The infotext keys A1111 writes for a refined image."""


class SetAestheticScore(NodeType):
    description = (
        "SDXL refiner: the aesthetic score its UNet embeds for this conditioning (A1111 and "
        "diffusers: 6.0 for the prompt, 2.5 for the negative)."
    )
    inputs = (Port("conditioning", "CONDITIONING"),)
    outputs = (Port("conditioning", "CONDITIONING"),)
    params = (Param("score", float, 6.0, "aesthetic score", minimum=0.0, maximum=10.0),)

    def execute(self, ctx, *, conditioning: Conditioning, score: float):
        import attrs

        micro = torch.full((conditioning.batch_size, 1), float(score), dtype=torch.float32)
        return {"conditioning": attrs.evolve(conditioning, micro=micro)}


def check_refiner(refiner: str | os.PathLike, models: Any, **load: Any) -> Any:
    """The refiner's loaded weights; an SD 1.x/2.x file, or one whose UNet takes no
    aesthetic score, is refused with an :class:`~t2i.engine.EngineError`."""
    from t2i.engine import EngineError
    from t2i_ldm.recipes import load_models

    if models.text_encoder_format != "sdxl":
        raise EngineError(
            "recipe 'ldm': option refiner= needs an SDXL base checkpoint; "
            f"checkpoint= is {models.config.name!r}"
        )
    ref = load_models(refiner, **load)
    if ref.text_encoder_format != "sdxl" or ref.config.name == "sdxl":
        raise EngineError(
            f"recipe 'ldm': refiner={str(refiner)!r} is {ref.config.name!r}, not an SDXL "
            "refiner (sd_xl_refiner_1.0.safetensors, or a StableDiffusionXLImg2ImgPipeline "
            "folder)"
        )
    return ref


def add_refiner_stage(
    graph, *, refiner: str, switch_at: float, decode_with_refiner: bool = True
) -> None:
    """Edit the ``ldm`` recipe's graph in place (see the module docstring): the base's
    ``sample`` runs the sigmas before the switch, ``sample_refiner`` the rest, ``decode``
    decodes the refiner's sample, with the refiner's VAE when it has one (the model loaded
    at the end, as in A1111 and diffusers' base + refiner ensemble). The refiner's components
    take the base's options."""
    for node, name in (("denoiser", "ldm.unet"), ("text_encoder", "ldm.clip_text_encoder")):
        options = {**graph[node].params.get("options", {}), "checkpoint": refiner}
        kind = "LoadDenoiser" if node == "denoiser" else "LoadTextEncoder"
        graph.add(f"refiner_{node}", kind, name=name, options=options)
    conds = {}
    for side, score in (("positive", 6.0), ("negative", 2.5)):
        enc = graph.add(
            f"encode_refiner_{side}",
            "EncodeText",
            tokens=graph[f"tokenize_{side}"]["tokens"],
            text_encoder=graph["refiner_text_encoder"]["text_encoder"],
        )
        node = graph.add(
            f"aesthetic_{side}", "Ldm.SetAestheticScore", conditioning=enc["conditioning"]
        )
        graph.set_params(node.id, score=score)
        conds[side] = node["conditioning"]
    model = graph["refiner_denoiser"]["model"]
    guide = graph.add("guide_refiner", "Guide", model=model, **conds)
    split = graph.add(
        "split_sigmas",
        "SplitSigmas",
        model=graph["denoiser"]["model"],
        sigmas=graph["sigmas"]["sigmas"],
    )
    graph.set_params("split_sigmas", switch_at=float(switch_at))
    graph.connect(split["high"], "sample", "sigmas")
    base = graph["sample"]["samples"]
    sample = graph.add(
        "sample_refiner",
        "SampleDiffusion",
        guided=guide["guided"],
        sigmas=split["low"],
        latent=base,
        init=base,
    )
    graph.set_params("sample_refiner", add_noise=False)
    graph.connect(sample["samples"], "decode", "samples")
    if decode_with_refiner:
        options = {**graph["decoder"].params.get("options", {}), "checkpoint": refiner}
        dec = graph.add("refiner_decoder", "LoadDecoder", name="ldm.vae", options=options)
        graph.connect(dec["decoder"], "decode", "decoder")


def refiner_bindings(bindings: dict[str, Any]) -> dict[str, Any]:
    """The recipe's bindings extended to the refiner stage (same cfg scale, guidance and
    sampler as the base, as A1111's one sampler loop)."""

    def both(field: str, *extra) -> tuple:
        targets = bindings[field]
        targets = (targets,) if isinstance(targets[0], str) else tuple(targets)
        return (*targets, *extra)

    return {
        **bindings,
        "cfg_scale": both("cfg_scale", ("guide_refiner", "cfg_scale")),
        "guidance": both("guidance", ("guide_refiner", "guidance")),
        "guidance_options": both("guidance_options", ("guide_refiner", "guidance_options")),
        "sampler": both("sampler", ("sample_refiner", "sampler")),
        "eta": both("eta", ("sample_refiner", "eta")),
        "noise_device": both("noise_device", ("sample_refiner", "noise_device")),
    }


def with_refiner(
    recipe, *, refiner: str, switch_at: float, decode: bool = True, title: str | None = None
):
    """``recipe`` (the ``ldm`` recipe of an SDXL base) with the refiner as its second stage,
    in txt2img and img2img, and A1111's ``Refiner`` / ``Refiner switch at`` infotext;
    ``decode``: the refiner's VAE decodes (it has one); ``title``: the ``Refiner`` infotext
    (default the file's name and hash, read from it)."""
    import attrs

    from t2i.files import short_hash

    graphs = {"graph": recipe.graph.copy()}
    if recipe.img2img_graph is not None:
        graphs["img2img_graph"] = recipe.img2img_graph.copy()
    for graph in graphs.values():
        add_refiner_stage(graph, refiner=refiner, switch_at=switch_at, decode_with_refiner=decode)
    if title is None:
        name = Path(refiner).stem
        title = f"{name} [{short_hash(refiner)}]" if Path(refiner).is_file() else name
    bindings = {k: v for k, v in recipe.bindings.items()}
    changes: dict[str, Any] = dict(graphs)
    changes["bindings"] = refiner_bindings(bindings)
    if recipe.img2img_bindings is not None:
        changes["img2img_bindings"] = refiner_bindings(dict(recipe.img2img_bindings))
    changes["infotext"] = {**recipe.infotext, INFOTEXT[0]: title, INFOTEXT[1]: switch_at}
    return attrs.evolve(recipe, **changes)


def attach_refiner(
    recipe,
    models: Any,
    refiner,
    switch_at: float,
    *,
    hires: bool,
    dtype: Any,
    pickle: bool,
    exported: dict[str, Any] | None = None,
):
    """The ``ldm`` recipe's ``refiner=`` option: check the pair, then :func:`with_refiner`.
    ``exported`` (:func:`t2i_ldm.sdxl_deployed.exported_refiner`), with the base's models
    deployed too (``models`` None): the export's stage, no checkpoint read."""
    if hires:
        from t2i.engine import EngineError

        raise EngineError("recipe 'ldm': refiner= with hires=true is not supported yet")
    if exported is not None and models is None:  # checked when it was exported
        return with_refiner(
            recipe,
            refiner=str(refiner),
            switch_at=float(switch_at),
            decode=exported["decode"],
            title=exported["title"],
        )
    ref = check_refiner(refiner, models, dtype=dtype, allow_pickle=pickle, use_ema=False)
    return with_refiner(
        recipe, refiner=str(refiner), switch_at=float(switch_at), decode=ref.vae is not None
    )
