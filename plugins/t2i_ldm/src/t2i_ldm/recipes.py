"""The ``ldm`` recipe (aliases ``sd``, ``stable-diffusion``) and its checkpoint components.

``Engine.build("ldm", checkpoint="model.safetensors", sampler="DPM++ 2M Karras")`` loads a
Stable Diffusion 1.x/2.x checkpoint (CompVis/A1111 single file or diffusers folder) once and
shares it between the four components (tokenizer, text encoder, denoiser, decoder). Each
part can be swapped through the engine's overrides (``text_encoder=...``, ``decoder=...``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from t2i.checkpoints import CheckpointError

TOKENIZER_ENV = "T2I_CLIP_TOKENIZER"
"""Where to find a CLIP vocabulary for single-file checkpoints (which carry none)."""


DTYPES = ("float32", "float16", "bfloat16")
EMPHASIS_MODES = ("original", "no_norm", "ignore")
""":data:`t2i_ldm.text_encoder.EMPHASIS_MODES`, not imported from there: a recipe built for a
deployment runtime imports no text-encoder module."""
DEPLOYED_NODES = ("text_encoder", "denoiser", "decoder")
"""Loader nodes that, all provided by a deployment runtime, spare the recipe the checkpoint."""


def _dtype(value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        from t2i.engine import EngineError

        raise EngineError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return getattr(torch, value)


def _check_recipe_options(**options: Any) -> None:
    """Refuse a bad option of the ``ldm`` recipe before any file is read (EngineError)."""
    from t2i.engine import EngineError
    from t2i_ldm.config import PREDICTION_TYPES

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    rules = {
        "checkpoint": (lambda v: isinstance(v, (str, os.PathLike)), "a file or folder path"),
        "tokenizer": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a path"),
        "prediction_type": (lambda v: v is None or v in PREDICTION_TYPES, PREDICTION_TYPES),
        "clip_skip": (positive_int, "an integer >= 1"),
        "emphasis": (lambda v: v in EMPHASIS_MODES, EMPHASIS_MODES),
        "dtype": (lambda v: v is None or isinstance(v, torch.dtype) or v in DTYPES, DTYPES),
        "allow_pickle": (lambda v: isinstance(v, bool), "true or false"),
        "use_ema": (lambda v: isinstance(v, bool), "true or false"),
        "text_head_dim": (positive_int, "an integer >= 1"),
        "embeddings_dir": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a folder"),
        "hires": (lambda v: isinstance(v, bool), "true or false"),
        "refiner": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a file or folder"),
        "refiner_switch_at": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
            "a number in [0, 1]",
        ),
        "deployed": (lambda v: v is None or isinstance(v, Mapping), "what a runtime passes"),
        "vae": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a VAE file or folder"),
        "vae_tiling": (
            lambda v: isinstance(v, bool) or (isinstance(v, int) and v >= 32 and v % 8 == 0),
            "true, false or a tile size in pixels (a multiple of 8, at least 32)",
        ),
        "controlnet": (
            lambda v: v is None or isinstance(v, (str, os.PathLike)) or _paths(v),
            "a ControlNet file or diffusers folder, or a list of them",
        ),
        "ip_adapter": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a file"),
        "image_encoder": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a folder"),
    }
    for name, value in options.items():
        ok, allowed = rules[name]
        if not ok(value):
            raise EngineError(f"recipe 'ldm': option {name}={value!r} is invalid; use {allowed}")


def _paths(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of paths."""
    paths = isinstance(value, (list, tuple)) and bool(value)
    return paths and all(isinstance(p, (str, os.PathLike)) for p in value)


def _with_controlnet(recipe, controlnet: Any, facts, deployed, deepcache, load: dict):
    """The recipe steered by ``controlnet`` (one path or a list), each file read now (a bad
    one fails at build, naming the problem; the nodes then find them cached)."""
    from t2i.engine import EngineError
    from t2i_ldm.controlnet_apply import steer

    if facts.models is None or _provides(deployed, "denoiser"):
        raise EngineError(
            "recipe 'ldm': controlnet steers the torch UNet; the deployment runtime's exported "
            "UNet takes no ControlNet residuals: drop controlnet (or the runtime)"
        )
    if deepcache is not None:
        raise EngineError(
            "recipe 'ldm': DeepCache skips the UNet blocks a ControlNet steers: drop deepcache "
            "or controlnet"
        )
    return steer(recipe, controlnet, facts.models.config.unet, allow_pickle=load["allow_pickle"],
                 dtype=load.get("dtype") or "float32")  # fmt: skip


def _with_ip_adapter(recipe, adapter: Any, encoder: Any, facts, deployed, load: dict):
    """The recipe with an IP-Adapter image prompt, its files read now."""
    from t2i.engine import EngineError
    from t2i_ldm.ip_adapter_apply import attach_ip_adapter, checked_paths

    if facts.models is None or _provides(deployed, "denoiser"):
        raise EngineError(
            "recipe 'ldm': ip_adapter changes the torch UNet's cross-attentions; the deployment "
            "runtime's exported UNet has none: drop ip_adapter (or the runtime)"
        )
    adapter, encoder = checked_paths(adapter, encoder, load["allow_pickle"])
    return attach_ip_adapter(recipe, adapter, encoder, allow_pickle=load["allow_pickle"])


def _provides(deployed: Mapping[str, Any] | None, node: str) -> bool:
    """Whether a deployment runtime's export rebuilds loader ``node``'s component."""
    return node in (deployed or {}).get("provided", ())


def _vae_options(vae: Any, models: Any, load: dict[str, Any], deployed: Any):
    """The decoder options and infotext fields of the ``vae`` option (resolved by
    :func:`~t2i_ldm.vae_override.chosen_vae`; the file read now, so a bad one fails at build
    time). A runtime whose export provides the decoder runs the VAE it was exported with: the
    PNG fields come from the export, no file is read, and a ``vae`` the export was not made
    with is refused, since it would be ignored."""
    from t2i_ldm.vae_override import (
        AUTOMATIC,
        INFOTEXT_KEYS,
        NONE,
        chosen_vae,
        load_vae_override,
        vae_infotext,
    )

    if _provides(deployed, "decoder"):
        recorded = deployed.get("graph", {}).get("meta", {}).get("infotext", {})
        if vae not in (None, AUTOMATIC, NONE) and "VAE" not in recorded:
            from t2i.engine import EngineError

            raise EngineError(
                "recipe 'ldm': this export decodes with the checkpoint's own VAE, so vae= "
                "would be ignored: export again with --option vae=... (or drop vae)"
            )
        return load, {k: recorded[k] for k in INFOTEXT_KEYS if k in recorded}
    vae = chosen_vae(vae, load["checkpoint"], allow_pickle=load["allow_pickle"])
    if vae is None:
        return load, {}
    if models is not None:
        template = models.vae.config if models.vae is not None else models.config.vae
        load_vae_override(vae, template, dtype=load.get("dtype"), allow_pickle=load["allow_pickle"])
    return {**load, "vae": vae}, vae_infotext(vae)


def deepcache_options(
    recipe: str, deepcache: Any, branch: Any, unet_config: Any = None
) -> dict[str, Any]:
    """The denoiser options of a recipe's ``deepcache`` / ``deepcache_branch`` (empty when off:
    the plain graph); a bad value raises :class:`~t2i.engine.EngineError` naming it and the fix
    (the branch checked against ``unet_config``'s depth when given)."""
    from t2i.engine import EngineError
    from t2i_ldm.deepcache import DEFAULT_BRANCH, check_deepcache, input_block_count

    if deepcache is None:
        if branch != DEFAULT_BRANCH:
            raise EngineError(
                f"recipe {recipe!r}: deepcache_branch={branch!r} needs deepcache=N (N >= 1)"
            )
        return {}
    blocks = input_block_count(unet_config) if unet_config is not None else None
    try:
        check_deepcache(deepcache, branch, blocks)
    except ValueError as exc:
        raise EngineError(f"recipe {recipe!r}: {exc}") from None
    out = {"deepcache": deepcache}
    return out if branch == DEFAULT_BRANCH else {**out, "deepcache_branch": branch}


@functools.lru_cache(maxsize=2)
def _load_cached(
    path: str,
    stamp: tuple,
    dtype: Any,
    prediction_type: str | None,
    allow_pickle: bool,
    use_ema: bool,
):
    from t2i_ldm.loader import load_ldm

    return load_ldm(
        path,
        dtype=dtype,
        prediction_type=prediction_type,
        allow_pickle=allow_pickle,
        use_ema=use_ema,
    )


def load_models(
    checkpoint: str | os.PathLike,
    *,
    dtype: Any = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
    use_ema: bool = False,
):
    """:func:`t2i_ldm.loader.load_ldm`, read once per file while it is unchanged."""
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError("no such file or folder", path=path, fix="check the path")
    st = path.stat()
    return _load_cached(
        str(path.resolve()),
        (st.st_mtime_ns, st.st_size),
        _dtype(dtype),
        prediction_type,
        allow_pickle,
        use_ema,
    )


def embedding_library(embeddings_dir: str | os.PathLike | None, allow_pickle: bool = False):
    """The :class:`~t2i_ldm.embeddings.EmbeddingLibrary` of a folder, or None for none."""
    if embeddings_dir is None:
        return None
    from t2i_ldm.embeddings import EmbeddingLibrary

    return EmbeddingLibrary.from_folder(embeddings_dir, allow_pickle=allow_pickle)


def create_clip_tokenizer(
    *,
    checkpoint: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    embeddings_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    dtype: Any = None,
    **options: Any,
):
    """CLIP BPE tokenizer of a checkpoint (``dtype``, ``allow_pickle``: the other components',
    so the checkpoint is read once): ``tokenizer=`` (a ``tokenizer/`` folder or OpenAI's
    ``bpe_simple_vocab_16e6.txt(.gz)``), else ``$T2I_CLIP_TOKENIZER``, else the checkpoint's
    diffusers ``tokenizer/`` folder, else CLIP's merges list (:func:`find_bpe_file`; the
    plugin ships one, so single-file SD checkpoints need no download). ``embeddings_dir``:
    textual-inversion embeddings whose file names a prompt may use (``allow_pickle`` for
    ``.pt`` files).
    """
    from t2i_ldm.tokenizer import ClipTokenizer

    library = embedding_library(embeddings_dir, allow_pickle)
    if library is not None:
        options["embeddings"] = library

    source = tokenizer or os.environ.get(TOKENIZER_ENV)
    sd2 = False
    if checkpoint is not None:
        models = load_models(checkpoint, dtype=dtype, allow_pickle=allow_pickle)  # cached once
        sd2 = models.text_encoder_format == "open_clip"
        if source is None:
            source = models.extras.get("tokenizer_dir")
    if source is None:
        from t2i_ldm.tokenizer import find_bpe_file

        source = find_bpe_file()
    if source is None:
        raise CheckpointError(
            "single-file checkpoints carry no CLIP vocabulary",
            path=checkpoint,
            fix="pass tokenizer='path/to/tokenizer' (a diffusers tokenizer/ folder or "
            f"bpe_simple_vocab_16e6.txt.gz), or set {TOKENIZER_ENV}",
        )
    source = Path(source)
    if sd2 and "pad_id" not in options:
        options["pad_id"] = 0  # OpenCLIP pads with "!" (id 0)
    try:
        if source.is_dir():
            return ClipTokenizer.from_folder(source, **options)
        return ClipTokenizer.from_bpe_file(source, **options)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON errors are ValueErrors
        raise CheckpointError(
            f"cannot read the CLIP vocabulary ({type(exc).__name__}: {exc})",
            path=source,
            fix="pass tokenizer= a diffusers tokenizer/ folder (vocab.json + merges.txt) or "
            "bpe_simple_vocab_16e6.txt.gz",
        ) from exc


def create_clip_text_encoder(
    *,
    checkpoint: str | os.PathLike,
    dtype: Any = None,
    clip_skip: int = 1,
    emphasis: str = "original",
    head_dim: int = 64,
    embeddings_dir: str | os.PathLike | None = None,
    **load: Any,
):
    """The checkpoint's CLIP (SD1) or OpenCLIP (SD2) text encoder, web-UI chunking and emphasis;
    ``embeddings_dir``: the tokenizer's textual-inversion embeddings (same folder)."""
    from t2i_ldm.text_encoder import ClipTextEncoder

    models = load_models(checkpoint, dtype=dtype, **load)
    library = embedding_library(embeddings_dir, load.get("allow_pickle", False))
    if models.text_encoder_format == "sdxl":
        return _sdxl_text_encoder(
            models, checkpoint, dtype, head_dim, clip_skip=clip_skip, emphasis=emphasis,
            embeddings=library,
        )  # fmt: skip
    reader = models.text_encoder
    if reader is None:
        raise CheckpointError(
            "the checkpoint holds no text encoder",
            path=checkpoint,
            fix="use a full SD checkpoint, or swap the text encoder: "
            "Engine.build('ldm', text_encoder='...')",
        )
    state = {k: reader.get(k) for k in reader.keys()}
    if models.text_encoder_format == "open_clip":
        state = {f"cond_stage_model.model.{k}": v for k, v in state.items()}
    extra_cfg = models.extras.get("text_encoder_config")
    config = _text_config(extra_cfg, checkpoint) if extra_cfg else None
    try:
        return ClipTextEncoder.from_state_dict(
            state,
            config=config,
            dtype=_dtype(dtype),
            clip_skip=clip_skip,
            emphasis=emphasis,
            head_dim=head_dim,
            embeddings=library,
        )
    except CheckpointError as exc:
        raise exc.located(checkpoint) from exc


def _sdxl_text_encoder(models, checkpoint, dtype, head_dim, **options):
    """SDXL's CLIP-L + OpenCLIP bigG (:func:`t2i_ldm.sdxl_text.sdxl_text_encoder`)."""
    from t2i_ldm.sdxl_text import sdxl_text_encoder

    raw = (models.extras.get("text_encoder_config"), models.extras.get("text_encoder_2_config"))
    configs = tuple(_text_config(c, checkpoint) if c else None for c in raw)
    try:
        return sdxl_text_encoder(
            models, configs=configs, head_dim=head_dim, dtype=_dtype(dtype), **options
        )
    except CheckpointError as exc:
        raise exc.located(checkpoint) from exc


_TEXT_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)


def _text_config(raw: dict[str, Any], checkpoint: str | os.PathLike):
    """The ``CLIPTextConfig`` of a diffusers ``text_encoder/config.json``, its sizes checked."""
    from transformers import CLIPTextConfig
    from transformers.activations import ACT2FN

    where = Path(checkpoint) / "text_encoder" / "config.json"
    fields = {k: v for k, v in raw.items() if not k.startswith("_") and k != "architectures"}
    for key in _TEXT_SIZES:
        value = fields.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{key}={value!r} must be an integer >= 1", path=where)
    act = fields.get("hidden_act", "quick_gelu")
    if not isinstance(act, str) or act not in ACT2FN:
        raise CheckpointError(
            f"hidden_act={act!r} is not an activation transformers has", path=where
        )
    try:
        config = CLIPTextConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid CLIP text config ({exc})", path=where) from exc
    if config.hidden_size % config.num_attention_heads:
        raise CheckpointError(
            f"hidden_size {config.hidden_size} does not split into "
            f"{config.num_attention_heads} heads",
            path=where,
        )
    return config


@attrs.frozen
class CheckpointFacts:
    """What the ``ldm`` recipe reads from its checkpoint: the native resolution, whether the
    UNet inpaints (more input than output channels), the A1111 model hash, the tokenizer's
    options, and the loaded models (None when a deployment runtime provides them all)."""

    resolution: int
    inpaint: bool
    model_hash: str
    tokenizer_options: dict[str, Any]
    models: Any = None


def checkpoint_facts(
    checkpoint: str, tok: dict[str, Any], deployed: Mapping[str, Any] | None, **load: Any
) -> CheckpointFacts:
    """The checkpoint's :class:`CheckpointFacts`: loaded (and cached for the components), or,
    when ``deployed`` (a runtime's export, :data:`t2i_onnx.runtime.DEPLOYED_OPTION`) provides
    every model component, read from the export with no checkpoint file opened."""
    from t2i.files import short_hash

    if deployed is not None and set(DEPLOYED_NODES) <= set(deployed.get("provided", ())):
        return _exported_facts(checkpoint, tok, deployed)
    models = load_models(checkpoint, **load)  # fail early, and warm
    if models.text_encoder_format == "open_clip":
        tok = {**tok, "pad_id": 0}  # recorded, so an export's tokenizer pads as OpenCLIP does
    return CheckpointFacts(
        resolution=models.config.resolution,
        inpaint=models.config.unet.in_channels > models.config.unet.out_channels,
        model_hash=short_hash(checkpoint) if Path(checkpoint).is_file() else "",
        tokenizer_options=tok,
        models=models,
    )


def _exported_facts(
    checkpoint: str, tok: dict[str, Any], deployed: Mapping[str, Any]
) -> CheckpointFacts:
    """:class:`CheckpointFacts` from an export's recorded graph: defaults (the resolution),
    model hash, an ``Ldm.InpaintCondition`` node, the tokenizer node's ``pad_id``; the
    tokenizer reads the vocabulary the export carries instead of the checkpoint."""
    import structlog

    graph = deployed["graph"]
    meta, nodes = graph.get("meta", {}), graph.get("nodes", {})
    recorded = nodes.get("tokenizer", {}).get("params", {}).get("options", {})
    if recorded.get("checkpoint") not in (None, checkpoint):
        structlog.get_logger(__name__).warning(
            "ldm_deployed_checkpoint_differs", checkpoint=checkpoint,
            exported=recorded.get("checkpoint"), runs="the export's models",
        )  # fmt: skip
    tok = {k: v for k, v in tok.items() if k not in ("checkpoint", "dtype")}
    folder = deployed.get("tokenizers", {}).get("tokenizer")
    if folder is not None:
        tok["tokenizer"] = str(folder)
    if "pad_id" in recorded:
        tok["pad_id"] = recorded["pad_id"]
    return CheckpointFacts(
        resolution=int(meta.get("defaults", {}).get("width", 512)),
        inpaint=any(n.get("type") == "Ldm.InpaintCondition" for n in nodes.values()),
        model_hash=str(meta.get("model_hash", "")),
        tokenizer_options=tok,
    )


def ldm_recipe(
    *,
    checkpoint: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    prediction_type: str | None = None,
    clip_skip: int = 1,
    emphasis: str = "original",
    dtype: str | None = None,
    allow_pickle: bool = False,
    use_ema: bool = False,
    text_head_dim: int = 64,
    embeddings_dir: str | os.PathLike | None = None,
    hires: bool = False,
    refiner: str | os.PathLike | None = None,
    refiner_switch_at: float = 0.8,
    deployed: Mapping[str, Any] | None = None,
    deepcache: int | None = None,
    deepcache_branch: int = 1,
    vae: str | os.PathLike | None = None,
    vae_tiling: bool | int = False,
    controlnet: str | os.PathLike | list | None = None,
    ip_adapter: str | os.PathLike | None = None,
    image_encoder: str | os.PathLike | None = None,
):
    """Recipe ``ldm``: Stable Diffusion 1.x / 2.x / XL from a checkpoint file or diffusers folder.

    SDXL checkpoints (A1111 ``conditioner.embedders.*`` single files, diffusers SDXL folders)
    are detected from their keys. ``refiner`` (an SDXL refiner checkpoint) finishes the
    sampling from ``refiner_switch_at`` on, as A1111's Refiner (:mod:`t2i_ldm.refiner`).

    Options: ``tokenizer`` (vocabulary for single files), ``prediction_type`` (override the
    detected one), ``clip_skip``, ``emphasis`` ("original", "no_norm", "ignore"), ``dtype``,
    ``allow_pickle`` (.ckpt files), ``use_ema``, ``text_head_dim`` (only for non-SD text towers
    in single files, whose configuration is inferred from the weights), ``embeddings_dir``
    (textual-inversion embeddings used by file name in prompts; ``.pt`` files need
    ``allow_pickle``), ``hires`` (txt2img is A1111's two-pass hires fix: request fields
    ``hr_scale``, ``hr_upscaler``, ``hr_second_pass_steps``, ``denoising_strength``,
    ``hr_sampler``, ``hr_prompt``, ``hr_negative_prompt``), ``deployed`` (set by a deployment
    runtime, :func:`checkpoint_facts`: with every model component exported, the checkpoint
    is not read, nor the ``refiner`` when its stage is exported too), ``deepcache`` (a full
    UNet step every N steps, the shallow blocks of ``deepcache_branch`` reusing the deep
    features between: :mod:`t2i_ldm.deepcache`; off by default; the base model only, not an
    exported UNet), ``vae`` (a standalone VAE file or diffusers VAE folder that decodes and
    encodes in place of the checkpoint's own, A1111's "SD VAE": :mod:`t2i_ldm.vae_override`;
    unset or ``"Automatic"``: ``MODEL.vae.safetensors`` beside a single file if there is one,
    else the checkpoint's own; ``"None"``: the checkpoint's own), ``vae_tiling`` (decode in
    tiles as diffusers' ``enable_tiling``: True for tiles of the model's native size, or a
    tile size in pixels; :mod:`t2i_ldm.vae_tiling`), ``controlnet`` (a ControlNet file or
    diffusers folder, or a list of them, steering every pass; request fields
    ``control_image``, ``control_weight``, ``control_start``, ``control_end``,
    ``control_resize``, suffixed ``_1``, ``_2`` ... for the later units:
    :mod:`t2i_ldm.controlnet_apply`), ``ip_adapter`` (an IP-Adapter file: an image prompt,
    request fields ``ip_image``, ``ip_scale``; ``image_encoder``: its CLIP vision folder,
    default ``image_encoder/`` beside it: :mod:`t2i_ldm.ip_adapter_apply`).
    """
    from t2i.recipe import diffusion_recipe

    _check_recipe_options(
        checkpoint=checkpoint,
        tokenizer=tokenizer,
        prediction_type=prediction_type,
        clip_skip=clip_skip,
        emphasis=emphasis,
        dtype=dtype,
        allow_pickle=allow_pickle,
        use_ema=use_ema,
        text_head_dim=text_head_dim,
        embeddings_dir=embeddings_dir,
        hires=hires,
        refiner=refiner,
        refiner_switch_at=refiner_switch_at,
        deployed=deployed,
        vae=vae,
        vae_tiling=vae_tiling,
        controlnet=controlnet,
        ip_adapter=ip_adapter,
        image_encoder=image_encoder,
    )
    deepcache_options("ldm", deepcache, deepcache_branch)  # before any file is read
    checkpoint = str(checkpoint)
    embedding_library(embeddings_dir, allow_pickle)  # fail early (no such folder)
    emb = {"embeddings_dir": str(embeddings_dir)} if embeddings_dir is not None else {}
    load = {"checkpoint": checkpoint, "allow_pickle": allow_pickle}
    if dtype:
        load["dtype"] = dtype
    tok = {"checkpoint": checkpoint, **({"tokenizer": str(tokenizer)} if tokenizer else {})}
    tok.update({**emb, **({"allow_pickle": True} if allow_pickle else {})})
    tok.update({"dtype": dtype} if dtype else {})
    refined = None  # the refiner stage of a base + refiner export
    if refiner is not None:
        from t2i_ldm.sdxl_deployed import exported_refiner

        refined = exported_refiner(deployed, refiner)
    facts = checkpoint_facts(
        checkpoint,
        tok,
        deployed if refiner is None or refined is not None else None,
        dtype=dtype,
        prediction_type=prediction_type,
        allow_pickle=allow_pickle,
        use_ema=use_ema,
    )
    unet_config = facts.models.config.unet if facts.models is not None else None
    decoder_options, vae_fields = _vae_options(vae, facts.models, load, deployed)
    if vae_tiling:
        tile = facts.resolution if vae_tiling is True else int(vae_tiling)
        decoder_options = {**decoder_options, "tile_size": tile}
        if _provides(deployed, "decoder"):
            import structlog

            structlog.get_logger(__name__).warning(
                "vae_tiling_not_deployed", runs="the exported VAE decoder, whole"
            )
    model_opts = {
        **load,
        "use_ema": use_ema,
        **({"prediction_type": prediction_type} if prediction_type else {}),
        **deepcache_options("ldm", deepcache, deepcache_branch, unet_config),
    }
    if deepcache is not None and _provides(deployed, "denoiser"):
        from t2i.engine import EngineError

        raise EngineError(
            "recipe 'ldm': deepcache runs the torch UNet's shallow blocks; the deployment "
            "runtime's exported UNet has none: drop deepcache (or the runtime)"
        )
    recipe = diffusion_recipe(
        tokenizer="ldm.clip_tokenizer",
        text_encoder="ldm.clip_text_encoder",
        denoiser="ldm.unet",
        decoder="ldm.vae",
        tokenizer_options=facts.tokenizer_options,
        text_encoder_options={
            **load,
            "clip_skip": clip_skip,
            "emphasis": emphasis,
            "head_dim": text_head_dim,
            **emb,
        },
        denoiser_options=model_opts,
        decoder_options=decoder_options,
        defaults={
            "width": facts.resolution,
            "height": facts.resolution,
            "steps": 20,
            "cfg_scale": 7.0,
            "sampler": "dpmpp_2m",  # its default schedule ("Automatic") is Karras
        },
        size_multiple=8,
        description="Stable Diffusion 1.x/2.x/XL from a checkpoint (single file or diffusers "
        "folder)",
        model_name=Path(checkpoint).stem,
        model_hash=facts.model_hash,
        infotext={"Clip skip": clip_skip if clip_skip > 1 else None, **vae_fields},
        hires=hires,
    )
    if facts.inpaint:  # SD inpainting
        from t2i_ldm.inpaint import attach_inpaint_condition

        recipe = attach_inpaint_condition(recipe)
    if controlnet is not None:
        recipe = _with_controlnet(recipe, controlnet, facts, deployed, deepcache, load)
    if ip_adapter is not None:
        recipe = _with_ip_adapter(recipe, ip_adapter, image_encoder, facts, deployed, load)
    if refiner is None:
        return recipe
    from t2i_ldm.refiner import attach_refiner

    return attach_refiner(
        recipe,
        facts.models,
        refiner,
        refiner_switch_at,
        hires=hires,
        dtype=dtype,
        pickle=allow_pickle,
        exported=refined,
    )
