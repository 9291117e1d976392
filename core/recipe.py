"""Recipes: what a family registers to turn options into a runnable graph.

A recipe factory ``factory(**options) -> Recipe`` is registered through
``t2i_register_recipes``. The :class:`Recipe` says which node output is the image
and which node parameters each request field sets (``bindings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from t2i.graph.graph import Graph, OutputRef

Binding = tuple[str, str]  # (node id, parameter name)

VARIATION_FIELDS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
"""Request fields of A1111's variation seeds, bound to ``EmptyLatent``'s parameters."""

GRAPH_FORMAT = "t2i-graph"
GRAPH_FORMAT_VERSION = 2
"""Version of the graph JSON's ``meta`` (2: a recipe's bindings, defaults and model travel)."""


def _infotext_fields(value: Any) -> dict[str, str]:
    """A graph meta's ``infotext_fields``: an object of request field -> infotext label."""
    if not isinstance(value, Mapping):
        raise ValueError(
            f"graph meta 'infotext_fields' must be an object of field -> label, "
            f"not {type(value).__name__}"
        )
    return {str(k): str(v) for k, v in value.items()}


def _freeze_bindings(value: Mapping[str, Any]) -> dict[str, tuple[Binding, ...]]:
    out: dict[str, tuple[Binding, ...]] = {}
    for field, targets in value.items():
        if (
            isinstance(targets, (tuple, list))
            and len(targets) == 2
            and all(isinstance(t, str) for t in targets)
        ):
            targets = (targets,)
        out[field] = tuple(tuple(t) for t in targets)
    return out


@attrs.frozen
class Recipe:
    """A graph plus how requests drive it.

    Attributes:
        name: the recipe's registered name (filled in by the engine).
        graph: the txt2img graph.
        output: the node output that holds the final ``IMAGE``.
        bindings: request field -> ``((node_id, param), ...)`` it sets.
        defaults: request defaults of this recipe (steps, cfg_scale, width, sampler ...).
        img2img_graph: the graph used when a request has an ``init_image``, or None.
        img2img_bindings: bindings of that graph (default: ``bindings``).
        img2img_output: the img2img graph's final ``IMAGE`` (default: ``output``).
        size_multiple: width and height must be multiples of this.
        description: one line for ``t2i recipes``.
        model_name: shown as ``Model`` in the PNG infotext.
        model_hash: shown as ``Model hash`` (A1111's 10-hex short SHA-256 of the file).
        infotext: extra ``key: value`` pairs of the PNG infotext that come from the recipe's
            own options (``{"Clip skip": 2}``); None values are left out.
        infotext_fields: request field (bound or extra) -> infotext label, for a recipe's
            own request fields a PNG should record (``{"sr_steps": "SR steps"}``).
    """

    graph: Graph
    output: OutputRef
    bindings: dict[str, tuple[Binding, ...]] = attrs.field(converter=_freeze_bindings)
    defaults: dict[str, Any] = attrs.Factory(dict)
    img2img_graph: Graph | None = None
    img2img_bindings: dict[str, tuple[Binding, ...]] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_freeze_bindings)
    )
    img2img_output: OutputRef | None = None
    size_multiple: int = 8
    name: str = ""
    description: str = ""
    model_name: str = ""
    model_hash: str = ""
    infotext: dict[str, Any] = attrs.Factory(dict)
    infotext_fields: dict[str, str] = attrs.Factory(dict)
    requires_init_image: bool = False

    def output_for(self, img2img: bool) -> OutputRef:
        """The node output holding the final image of the txt2img or the img2img graph."""
        return (self.img2img_output or self.output) if img2img else self.output

    def graph_dict(self, *, img2img: bool = False) -> dict[str, Any]:
        """The txt2img (or img2img) graph as JSON data whose ``meta`` carries everything
        :meth:`from_graph` needs to run it as the recipe runs: format version, name,
        output, bindings, defaults, size multiple, model name and hash, infotext extras."""
        graph = self.img2img_graph if img2img else self.graph
        if graph is None:
            raise ValueError(f"recipe {self.name!r} has no img2img graph")
        bindings = (self.img2img_bindings or self.bindings) if img2img else self.bindings
        data = graph.to_dict()
        data["meta"] = {
            **graph.meta,
            "format": GRAPH_FORMAT,
            "format_version": GRAPH_FORMAT_VERSION,
            "name": self.name,
            "output": self.output_for(img2img).to_json(),
            "bindings": {f: [list(t) for t in targets] for f, targets in bindings.items()},
            "defaults": dict(self.defaults),
            "size_multiple": self.size_multiple,
            "model_name": self.model_name or self.name,
            "model_hash": self.model_hash,
            "infotext": dict(self.infotext),
            "infotext_fields": dict(self.infotext_fields),
            "img2img": img2img,
        }
        return data

    @classmethod
    def from_graph(cls, graph: Graph, output: OutputRef) -> Recipe:
        """A recipe from a graph whose ``meta`` was written by :meth:`graph_dict` (or by
        hand: every key is optional)."""
        meta = graph.meta
        version = meta.get("format_version", GRAPH_FORMAT_VERSION)
        if not isinstance(version, int) or version > GRAPH_FORMAT_VERSION:
            raise ValueError(
                f"graph format version {version!r} is newer than this t2i reads "
                f"({GRAPH_FORMAT_VERSION}): upgrade t2i"
            )
        img2img = bool(meta.get("img2img", False))
        bindings = meta.get("bindings", {})
        return cls(
            graph=graph,
            output=output,
            bindings=bindings,
            defaults=dict(meta.get("defaults", {})),
            img2img_graph=graph if img2img else None,
            img2img_bindings=bindings if img2img else None,
            name=str(meta.get("name", "graph")),
            size_multiple=int(meta.get("size_multiple", 1)),
            model_name=str(meta.get("model_name", "")),
            model_hash=str(meta.get("model_hash", "")),
            infotext=dict(meta.get("infotext", {})),
            infotext_fields=_infotext_fields(meta.get("infotext_fields", {})),
            requires_init_image=img2img,
        )


def diffusion_recipe(
    *,
    tokenizer: str,
    text_encoder: str,
    denoiser: str,
    decoder: str,
    tokenizer_options: Mapping[str, Any] | None = None,
    text_encoder_options: Mapping[str, Any] | None = None,
    denoiser_options: Mapping[str, Any] | None = None,
    decoder_options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    size_multiple: int = 8,
    description: str = "",
    model_name: str = "",
    model_hash: str = "",
    infotext: Mapping[str, Any] | None = None,
    hires: bool = False,
) -> Recipe:
    """The standard text-conditioned iterative-denoising recipe (txt2img + img2img).

    ``hires=True`` makes txt2img A1111's two-pass "hires fix" (:func:`add_hires_pass`).

    ``Tokenize(prompt / negative) -> EncodeText -> Guide``, ``Sigmas(denoiser)`` and
    ``EmptyLatent(decoder)`` feed ``SampleDiffusion -> Decode``, with ``LoadImage ->
    PrepareInpaint -> EncodeImage -> MaskLatent -> SampleDiffusion.init`` and ``Decode ->
    PasteInpaint`` in the img2img graph (inpainting when the request has a ``mask``; without
    one these nodes only resize the init image). Any family whose
    components follow the diffusion contract can use it (latent or pixel diffusion).
    """

    def build(img2img: bool) -> Graph:
        g = Graph(meta={"kind": "diffusion", "img2img": img2img})
        tok = g.add(
            "tokenizer", "LoadTokenizer", name=tokenizer, options=dict(tokenizer_options or {})
        )
        enc = g.add(
            "text_encoder",
            "LoadTextEncoder",
            name=text_encoder,
            options=dict(text_encoder_options or {}),
        )
        model = g.add(
            "denoiser", "LoadDenoiser", name=denoiser, options=dict(denoiser_options or {})
        )
        dec = g.add("decoder", "LoadDecoder", name=decoder, options=dict(decoder_options or {}))
        pos_t = g.add("tokenize_positive", "Tokenize", tokenizer=tok["tokenizer"], text="")
        neg_t = g.add("tokenize_negative", "Tokenize", tokenizer=tok["tokenizer"], text="")
        pos = g.add(
            "encode_positive",
            "EncodeText",
            tokens=pos_t["tokens"],
            text_encoder=enc["text_encoder"],
        )
        neg = g.add(
            "encode_negative",
            "EncodeText",
            tokens=neg_t["tokens"],
            text_encoder=enc["text_encoder"],
        )
        empty = g.add("empty_latent", "EmptyLatent", decoder=dec["decoder"])
        links = {}
        if img2img:
            img = g.add("init_image", "LoadImage", image=None)
            prep = g.add("inpaint", "PrepareInpaint", image=img["image"])
            init = g.add("encode_image", "EncodeImage", decoder=dec["decoder"], image=prep["image"])
            masked = g.add(
                "mask_latent",
                "MaskLatent",
                latent=init["latent"],
                mask=prep["mask"],
                noise=empty["latent"],
            )
            links["init"] = masked["latent"]
        sigmas = g.add("sigmas", "Sigmas", model=model["model"])
        guide = g.add(
            "guide",
            "Guide",
            model=model["model"],
            positive=pos["conditioning"],
            negative=neg["conditioning"],
        )
        g.add(
            "sample",
            "SampleDiffusion",
            guided=guide["guided"],
            sigmas=sigmas["sigmas"],
            latent=empty["latent"],
            **links,
        )
        last = g["sample"]["samples"]
        if hires and not img2img:
            last = add_hires_pass(g, tok["tokenizer"], enc["text_encoder"], model, dec, last)
        g.add("decode", "Decode", decoder=dec["decoder"], samples=last)
        if img2img:
            g.add("paste", "PasteInpaint", image=g["decode"]["image"], mask=g["inpaint"]["mask"])
        return g

    bindings: dict[str, Any] = {
        "prompt": ("tokenize_positive", "text"),
        "negative_prompt": ("tokenize_negative", "text"),
        "width": ("empty_latent", "width"),
        "height": ("empty_latent", "height"),
        "batch_size": ("empty_latent", "batch_size"),
        "seed": ("empty_latent", "seed"),
        "steps": ("sigmas", "steps"),
        "schedule": ("sigmas", "schedule"),
        "cfg_scale": ("guide", "cfg_scale"),
        "guidance": ("guide", "guidance"),
        "guidance_options": ("guide", "guidance_options"),
        "sampler": ("sample", "sampler"),
        "eta": ("sample", "eta"),
        "noise_device": ("sample", "noise_device"),
        **{field: ("empty_latent", field) for field in VARIATION_FIELDS},
    }
    img2img_bindings = {
        **bindings,
        "init_image": ("init_image", "image"),
        "strength": ("sigmas", "strength"),
        "width": (("empty_latent", "width"), ("inpaint", "width")),
        "height": (("empty_latent", "height"), ("inpaint", "height")),
        **INPAINT_BINDINGS,
    }
    return Recipe(
        graph=build(False),
        output=OutputRef("decode", "image"),
        bindings=hires_bindings(bindings) if hires else bindings,
        defaults=dict(defaults or {}),
        img2img_graph=build(True),
        img2img_bindings=img2img_bindings,
        img2img_output=OutputRef("paste", "image"),
        size_multiple=size_multiple,
        description=description,
        model_name=model_name,
        model_hash=model_hash,
        infotext=dict(infotext or {}),
        infotext_fields=dict(HIRES_INFOTEXT) if hires else {},
    )


INPAINT_BINDINGS: dict[str, Any] = {
    "mask": ("inpaint", "mask"),
    "mask_blur": ("inpaint", "mask_blur"),
    "inpainting_mask_invert": ("inpaint", "invert"),
    "inpaint_full_res": ("inpaint", "only_masked"),
    "inpaint_full_res_padding": ("inpaint", "padding"),
    "inpainting_fill": (("inpaint", "fill"), ("mask_latent", "fill")),
}
"""Request fields of A1111's inpainting, bound to the img2img graph's ``PrepareInpaint``
(``inpaint``) and ``MaskLatent`` (``mask_latent``) nodes."""


HIRES_INFOTEXT = {
    "hr_scale": "Hires upscale",
    "hr_second_pass_steps": "Hires steps",
    "hr_upscaler": "Hires upscaler",
    "hr_sampler": "Hires sampler",
    "hr_prompt": "Hires prompt",
    "hr_negative_prompt": "Hires negative prompt",
    "denoising_strength": "Denoising strength",
}
"""A1111's hires-fix request fields and the infotext keys it writes for them."""


def add_hires_pass(g: Graph, tokenizer, text_encoder, model, dec, samples) -> Any:
    """A1111's hires fix as core nodes: ``UpscaleLatent`` (a latent or a pixel upscaler) ->
    a second ``SampleDiffusion`` from the upscaled sample at ``denoising_strength``, with its
    own prompt / negative (empty: the first pass's), steps (0: the first pass's) and sampler.
    The upscaled latent carries the seeds, so the second pass's noise is the seeds' at the
    hires size, as A1111 draws it. Returns the second pass's ``samples`` output."""
    up = g.add("hires_upscale", "UpscaleLatent", samples=samples, decoder=dec["decoder"])
    conds = {}
    for side in ("positive", "negative"):
        t = g.add(f"tokenize_hr_{side}", "Tokenize", tokenizer=tokenizer, text="")
        e = g.add(f"encode_hr_{side}", "EncodeText", tokens=t["tokens"], text_encoder=text_encoder)
        conds[side] = e["conditioning"]
    guide = g.add("guide_hr", "Guide", model=model["model"], **conds)
    # A1111's defaults: "Upscale by" 2, the "Latent" upscaler (UpscaleLatent's), strength 0.7
    sigmas = g.add("sigmas_hr", "Sigmas", model=model["model"], steps=0, strength=0.7)
    sample = g.add(
        "sample_hr",
        "SampleDiffusion",
        guided=guide["guided"],
        sigmas=sigmas["sigmas"],
        latent=up["samples"],
        init=up["samples"],
    )
    return sample["samples"]


def hires_bindings(bindings: Mapping[str, Any]) -> dict[str, Any]:
    """``bindings`` of the standard recipe extended to its hires pass (fields of
    :data:`HIRES_INFOTEXT`; later entries override earlier ones on the same parameter)."""

    def both(field: str, *extra: Binding) -> tuple[Binding, ...]:
        targets = bindings[field]
        targets = (targets,) if isinstance(targets[0], str) else tuple(targets)
        return (*targets, *extra)

    return {
        **bindings,
        "prompt": both("prompt", ("tokenize_hr_positive", "fallback")),
        "negative_prompt": both("negative_prompt", ("tokenize_hr_negative", "fallback")),
        "width": both("width", ("hires_upscale", "width")),
        "height": both("height", ("hires_upscale", "height")),
        "steps": both("steps", ("sigmas_hr", "fallback_steps")),
        "schedule": both("schedule", ("sigmas_hr", "schedule")),
        "cfg_scale": both("cfg_scale", ("guide_hr", "cfg_scale")),
        "guidance": both("guidance", ("guide_hr", "guidance")),
        "guidance_options": both("guidance_options", ("guide_hr", "guidance_options")),
        "sampler": both("sampler", ("sample_hr", "sampler")),
        "eta": both("eta", ("sample_hr", "eta")),
        "noise_device": both("noise_device", ("sample_hr", "noise_device")),
        "hr_scale": ("hires_upscale", "scale"),
        "hr_upscaler": ("hires_upscale", "upscaler"),
        "hr_second_pass_steps": ("sigmas_hr", "steps"),
        "denoising_strength": ("sigmas_hr", "strength"),
        "hr_sampler": ("sample_hr", "sampler"),
        "hr_prompt": ("tokenize_hr_positive", "text"),
        "hr_negative_prompt": ("tokenize_hr_negative", "text"),
    }
