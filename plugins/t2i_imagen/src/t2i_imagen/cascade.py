"""The cascade graph of the Imagen family: base stage -> super-resolution stage.

::

    Tokenize(prompt / negative) -> EncodeText ----------------------+----------------+
    Imagen.CascadeLatents(width, height, seeds) -> base, sr         |                |
    base: LoadDenoiser -> Sigmas, Guide(positive, negative) -> SampleDiffusion(base)  |
          -> Imagen.LowResCondition(noise_level)                                      |
    sr:   LoadDenoiser -> Sigmas, Guide(positive, negative, image_condition) ---------+
          -> SampleDiffusion(sr) -> Decode(pixels) -> IMAGE

The two stages share the prompt's encoding (IF's stage II reuses stage I's T5 embeddings)
and have their own steps, schedule, sampler, guidance and guidance scale: the request's
``steps`` / ``cfg_scale`` / ``sampler`` / ``guidance`` set the base stage, ``sr_steps`` /
``sr_cfg_scale`` / ``sr_sampler`` / ``sr_guidance`` the SR stage (each defaulting to the
recipe's). img2img (``init_image``, ``strength``) runs on the base stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from t2i.graph.graph import Graph
from t2i.recipe import Recipe

STAGE_FIELDS = {
    "steps": ("sigmas", "steps"),
    "schedule": ("sigmas", "schedule"),
    "cfg_scale": ("guide", "cfg_scale"),
    "guidance": ("guide", "guidance"),
    "guidance_options": ("guide", "guidance_options"),
    "sampler": ("sample", "sampler"),
    "eta": ("sample", "eta"),
}
"""Per-stage request fields: ``FIELD`` sets the base stage's node, ``sr_FIELD`` the SR's."""
SR_INFOTEXT = {
    "sr_steps": "SR steps",
    "sr_sampler": "SR sampler",
    "sr_schedule": "SR schedule type",
    "sr_cfg_scale": "SR CFG scale",
    "sr_guidance": "SR guidance",
    "noise_level": "Noise level",
}
"""The SR stage's settings as the PNG infotext records them (``Recipe.infotext_fields``)."""


def cascade_graph(
    *,
    tokenizer: dict[str, Any],
    text_encoder: dict[str, Any],
    base: dict[str, Any],
    sr: dict[str, Any],
    decoder: dict[str, Any],
    base_size: int,
    factor: int,
    img2img: bool = False,
) -> Graph:
    """The two-stage graph (module docstring); components as ``{"name", "options"}``."""
    g = Graph(meta={"kind": "diffusion", "cascade": True, "img2img": img2img})
    tok = g.add("tokenizer", "LoadTokenizer", **tokenizer)
    enc = g.add("text_encoder", "LoadTextEncoder", **text_encoder)
    dec = g.add("decoder", "LoadDecoder", **decoder)
    text = {}
    for side in ("positive", "negative"):
        t = g.add(f"tokenize_{side}", "Tokenize", tokenizer=tok["tokenizer"], text="")
        c = g.add(
            f"encode_{side}", "EncodeText", text_encoder=enc["text_encoder"], tokens=t["tokens"]
        )
        text[side] = c["conditioning"]
    sizes = g.add("latents", "Imagen.CascadeLatents", base_size=base_size, factor=factor)
    for stage, spec in (("base", base), ("sr", sr)):
        model = g.add(f"{stage}_model", "LoadDenoiser", **spec)
        links, extra = {}, {}
        if stage == "sr":
            low = g.add("low_res", "Imagen.LowResCondition", samples=g["base_sample"]["samples"])
            links["image_condition"] = low["image_condition"]
        elif img2img:
            img = g.add("init_image", "LoadImage", image=None)
            options = {**decoder.get("options", {}), "factor": factor}
            low = g.add("base_decoder", "LoadDecoder", name=decoder["name"], options=options)
            down = g.add("encode_image", "EncodeImage", decoder=low["decoder"], image=img["image"])
            extra["init"] = down["latent"]
        sigmas = g.add(f"{stage}_sigmas", "Sigmas", model=model["model"])
        guide = g.add(
            f"{stage}_guide",
            "Guide",
            model=model["model"],
            positive=text["positive"],
            negative=text["negative"],
            **links,
        )
        g.add(
            f"{stage}_sample",
            "SampleDiffusion",
            guided=guide["guided"],
            sigmas=sigmas["sigmas"],
            latent=sizes[stage],
            **extra,
        )
    g.add("decode", "Decode", decoder=dec["decoder"], samples=g["sr_sample"]["samples"])
    return g


def cascade_bindings(img2img: bool = False) -> dict[str, Any]:
    """Request field -> node parameters of :func:`cascade_graph`."""
    bindings: dict[str, Any] = {
        "prompt": ("tokenize_positive", "text"),
        "negative_prompt": ("tokenize_negative", "text"),
        "width": ("latents", "width"),
        "height": ("latents", "height"),
        "batch_size": ("latents", "batch_size"),
        "seed": ("latents", "seed"),
        "noise_level": ("low_res", "noise_level"),
        "noise_device": (("base_sample", "noise_device"), ("sr_sample", "noise_device")),
    }
    for field, (node, param) in STAGE_FIELDS.items():
        bindings[field] = (f"base_{node}", param)
        bindings[f"sr_{field}"] = (f"sr_{node}", param)
    if img2img:
        bindings["init_image"] = ("init_image", "image")
        bindings["strength"] = ("base_sigmas", "strength")
    return bindings


def cascade_recipe(
    *,
    components: dict[str, dict[str, Any]],
    base_size: int,
    factor: int,
    defaults: Mapping[str, Any],
    description: str,
    model_name: str,
    model_hash: str = "",
    infotext: Mapping[str, Any] | None = None,
) -> Recipe:
    """A :class:`Recipe` of the cascade (txt2img and base-stage img2img)."""
    graphs = [cascade_graph(**components, base_size=base_size, factor=factor, img2img=i)
              for i in (False, True)]  # fmt: skip
    return Recipe(
        graph=graphs[0],
        output=graphs[0]["decode"]["image"],
        bindings=cascade_bindings(False),
        defaults=dict(defaults),
        img2img_graph=graphs[1],
        img2img_bindings=cascade_bindings(True),
        size_multiple=factor,
        description=description,
        model_name=model_name,
        model_hash=model_hash,
        infotext=dict(infotext or {}),
        infotext_fields=SR_INFOTEXT,
    )
