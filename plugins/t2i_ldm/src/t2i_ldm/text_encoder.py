"""CLIP text encoder for Stable Diffusion 1.x / 2.x, with the web UI's chunking and emphasis.

Wraps transformers' ``CLIPTextModel`` (Radford et al., 2021, arXiv 2103.00020). SD1 uses
OpenAI's CLIP ViT-L/14 text tower (``FrozenCLIPEmbedder``: ``last_hidden_state``, after the
final LayerNorm); SD2 uses OpenCLIP ViT-H/14, converted by :mod:`t2i_ldm.openclip` into the
same model class with 23 of its 24 blocks.

What this module adds, as AUTOMATIC1111's web UI does (``modules/sd_hijack_clip.py``,
``modules/sd_emphasis.py``; documented behaviour, independent implementation):

- every 77-token chunk of :class:`t2i.payloads.Tokens` is encoded on its own and the results are
  concatenated along the token axis: ``(B, 77*n)`` ids give ``(B, 77*n, D)`` embeds;
- clip skip: ``clip_skip=1`` is the last layer, ``clip_skip=2`` the penultimate layer's hidden
  state passed through the final LayerNorm (diffusers' ``clip_skip=k`` is ours ``k+1``);
- emphasis "original": multiply each token's state by its weight, then rescale so the mean of
  the result equals the mean before weighting; "no_norm" skips the rescale, "ignore" the weights.
  The web UI takes both means over a whole batch of one chunk; we take them per prompt and
  chunk, so a prompt's conditioning does not depend on the other prompts of its batch (identical
  for the usual batch of one repeated prompt).

Weights load from a state dict in the SD1 single-file layout
(``cond_stage_model.transformer.text_model.*``), the diffusers ``text_encoder/`` layout
(``text_model.*``) or SD2's OpenCLIP layout (``cond_stage_model.model.*``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import torch

from t2i.checkpoints import CheckpointError, checked_shape
from t2i.contracts import ExportSpec
from t2i.payloads import Conditioning, Tokens
from t2i_ldm.embeddings import EmbeddingLibrary

if TYPE_CHECKING:  # imported where used: ldm-shapes runs t2i_ldm.clip_text, not transformers
    from transformers import CLIPTextConfig, CLIPTextModel

log = structlog.get_logger(__name__)

SD1_PREFIX = "cond_stage_model.transformer."
"""Where SD1 single-file checkpoints keep the HF-format CLIP text model."""
CANONICAL_PREFIX = "text_model."
"""Checkpoint key layout of ``CLIPTextModel`` (transformers >= 5 drops it inside the model)."""
EMPHASIS_MODES = ("original", "no_norm", "ignore")
_IGNORED_BUFFERS = ("text_model.embeddings.position_ids",)
"""Buffers some checkpoints carry that the model rebuilds itself (``arange``)."""


class TextEncoderWeightsError(CheckpointError, ValueError):
    """A state dict does not fit the text model; the message lists the offending keys."""


def clip_text_config(name: str) -> CLIPTextConfig:
    """Named text-encoder configurations matching :attr:`t2i_ldm.config.LdmConfig.text_encoder`.

    ``"clip_l"``: OpenAI CLIP ViT-L/14 text tower (SD1: width 768, 12 layers, quick GELU).
    ``"openclip_h"``: OpenCLIP ViT-H/14 text tower as SD2 uses it (width 1024, 23 of 24 layers,
    GELU). ``"tiny"``: width 32, 2 layers, 2 heads, full CLIP vocabulary, for tests.
    """
    common = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        layer_norm_eps=1e-5,
    )
    from transformers import CLIPTextConfig

    key = name.strip().lower().replace("-", "_")
    if key == "clip_l":
        return CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            hidden_act="quick_gelu",
            projection_dim=768,
            pad_token_id=1,
            **common,
        )
    if key == "openclip_h":
        return CLIPTextConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            hidden_act="gelu",
            projection_dim=1024,
            pad_token_id=0,
            **common,
        )
    if key == "tiny":
        return CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            hidden_act="quick_gelu",
            projection_dim=32,
            pad_token_id=1,
            **common,
        )
    raise KeyError(f"unknown text encoder config {name!r}; known: clip_l, openclip_h, tiny")


def _model_prefix(model: CLIPTextModel) -> str:
    """Key prefix of the installed transformers' ``CLIPTextModel`` (``text_model.`` before v5)."""
    return CANONICAL_PREFIX if hasattr(model, "text_model") else ""


def _text_core(model: CLIPTextModel):
    """The module holding ``embeddings``, ``encoder`` and ``final_layer_norm``."""
    return getattr(model, "text_model", model)


def canonical_clip_text_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Text-model keys in the ``text_model.*`` layout, from SD1 single-file or diffusers layouts.

    SD1 single files: only keys under ``cond_stage_model.transformer.`` are taken (the rest of a
    whole checkpoint is ignored); old files without ``text_model.`` after that prefix are fixed.
    Otherwise every key is taken: ``text_model.*`` as is, bare ``embeddings.*`` /
    ``encoder.*`` / ``final_layer_norm.*`` (transformers >= 5 layout) get the prefix.
    """
    if any(k.startswith(SD1_PREFIX) for k in state_dict):
        n = len(SD1_PREFIX)
        items = {k[n:]: v for k, v in state_dict.items() if k.startswith(SD1_PREFIX)}
    else:
        items = dict(state_dict)
    out = {}
    for key, value in items.items():
        out[key if key.startswith(CANONICAL_PREFIX) else CANONICAL_PREFIX + key] = value
    return out


def infer_clip_text_config(
    weights: Mapping[str, torch.Tensor], *, head_dim: int = 64, hidden_act: str = "quick_gelu"
) -> CLIPTextConfig:
    """Read a ``CLIPTextConfig`` off canonical (``text_model.*``) weights.

    Heads and activation cannot be read from shapes: ``head_dim`` (64 in every CLIP) and
    ``hidden_act`` ("quick_gelu" for OpenAI CLIP, "gelu" for OpenCLIP) are given.
    """
    from transformers import CLIPTextConfig

    try:
        vocab_size, width = _shape(weights, "text_model.embeddings.token_embedding.weight", 2)
        context = _shape(weights, "text_model.embeddings.position_embedding.weight", 2)[0]
        intermediate = _shape(weights, "text_model.encoder.layers.0.mlp.fc1.weight", 2)[0]
    except KeyError as missing:
        raise TextEncoderWeightsError(
            f"not a CLIP text model state dict: {missing} is missing"
        ) from None
    layer_key = re.compile(r"text_model\.encoder\.layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in weights if (m := layer_key.match(k))}
    if width % head_dim:
        raise TextEncoderWeightsError(f"width {width} is not a multiple of head_dim {head_dim}")
    return CLIPTextConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(width),
        intermediate_size=int(intermediate),
        num_hidden_layers=len(layers),
        num_attention_heads=int(width // head_dim),
        max_position_embeddings=int(context),
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        projection_dim=int(width),
        bos_token_id=int(vocab_size) - 2,
        eos_token_id=int(vocab_size) - 1,
        pad_token_id=1,
    )


def _shape(weights: Mapping[str, torch.Tensor], key: str, rank: int) -> tuple[int, ...]:
    return checked_shape(
        weights[key].shape, key, rank, what="text encoder", error=TextEncoderWeightsError
    )


def build_clip_text_model(
    weights: Mapping[str, torch.Tensor],
    config: CLIPTextConfig,
    *,
    dtype: torch.dtype | None = None,
) -> CLIPTextModel:
    """A ``CLIPTextModel`` holding exactly ``weights`` (canonical ``text_model.*`` keys).

    Raises:
        TextEncoderWeightsError: missing, unexpected or mis-shaped keys, all listed.
    """
    from transformers import CLIPTextModel

    weights = {k: v for k, v in weights.items() if k not in _IGNORED_BUFFERS}
    with torch.device("meta"):
        model = CLIPTextModel(config)
    prefix = _model_prefix(model)
    expected = {
        CANONICAL_PREFIX + k[len(prefix) :]: tuple(v.shape) for k, v in model.state_dict().items()
    }
    expected = {k: v for k, v in expected.items() if k not in _IGNORED_BUFFERS}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(
        f"{k}: {tuple(weights[k].shape)} != {expected[k]}"
        for k in set(weights) & set(expected)
        if tuple(weights[k].shape) != expected[k]
    )
    wrong += sorted(  # an integer tensor cannot become a floating-point parameter
        f"{k}: dtype {weights[k].dtype} is not floating point"
        for k in set(weights) & set(expected)
        if not weights[k].is_floating_point()
    )
    if missing or unexpected or wrong:
        raise TextEncoderWeightsError(
            "text encoder state dict does not fit the CLIP text config "
            f"(width {config.hidden_size}, {config.num_hidden_layers} layers): "
            f"missing={_listing(missing)} unexpected={_listing(unexpected)} "
            f"wrong_shape={_listing(wrong)}"
        )
    state = {prefix + k[len(CANONICAL_PREFIX) :]: v for k, v in weights.items()}
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers stay on "meta": rebuild them
        for name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_meta:
                continue
            if name != "position_ids":
                raise RuntimeError(f"CLIPTextModel has an unknown non-persistent buffer {name!r}")
            module.register_buffer(
                name, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False
            )
    return model.eval().requires_grad_(False)


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"


class ClipTextEncoder:
    """CLIP text model as a :class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning``.

    Args:
        model: a transformers ``CLIPTextModel`` (SD1's CLIP-L or converted OpenCLIP).
        clip_skip: 1 = last layer (SD1 default); k = the k-th layer from the end, then the final
            LayerNorm. For SD2's converted 23-layer model, 1 already is SD2's "penultimate".
        emphasis: "original", "no_norm" or "ignore" (see the module docstring).

    ``encoder(tokens)`` returns ``Conditioning(embeds (B, 77*n, D), pooled (B, D), mask=None)``;
    ``pooled`` is the end-token state of the first chunk (``pooler_output``, no projection).
    SD attends to every position, padding included, so no mask is returned.
    """

    def __init__(
        self,
        model: CLIPTextModel,
        *,
        clip_skip: int = 1,
        emphasis: str = "original",
        embeddings: EmbeddingLibrary | None = None,
        embedding_key: str = "",
    ) -> None:
        self.model = model.eval()
        self.clip_skip = clip_skip
        self.emphasis = emphasis
        self._check_options(clip_skip, emphasis)
        self.extra_tokens = 0
        if embeddings is not None and embeddings.size:
            self._add_embeddings(embeddings, embedding_key)

    def _add_embeddings(self, library: EmbeddingLibrary, key: str) -> None:
        """Look up ids past the vocabulary in ``library`` (the tokenizer's numbering): its
        vectors for this encoder's width (``key``: SDXL's ``clip_l`` / ``clip_g``)."""
        from t2i_ldm.embeddings import TokenEmbeddingWithExtras

        embeddings = _text_core(self.model).embeddings
        table = library.table(self.hidden_size, key)
        embeddings.token_embedding = TokenEmbeddingWithExtras(embeddings.token_embedding, table)
        self.extra_tokens = library.size

    def _check_options(self, clip_skip: int, emphasis: str) -> None:
        layers = self.model.config.num_hidden_layers
        if not isinstance(clip_skip, int) or not 1 <= clip_skip <= layers:
            raise ValueError(
                f"clip_skip must be an int in [1, {layers}] (1 = no skip), got {clip_skip!r}"
            )
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {EMPHASIS_MODES}, got {emphasis!r}")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        *,
        config: CLIPTextConfig | None = None,
        dtype: torch.dtype | None = None,
        head_dim: int = 64,
        **options,
    ) -> ClipTextEncoder:
        """Load from SD1 single-file, diffusers ``text_encoder/`` or SD2 OpenCLIP keys.

        Args:
            state_dict: the text-encoder keys (a whole single-file checkpoint works too: keys
                outside the text encoder's prefix are ignored).
            config: the model configuration; None reads it off the weights (SD1/diffusers: CLIP
                ViT-L/14's quick GELU and 64-wide heads; OpenCLIP: SD2's penultimate layer).
            dtype: cast the weights; None keeps theirs.
            head_dim: attention head width used when ``config`` is None (64 in every CLIP).
            options: ``clip_skip``, ``emphasis``, ``embeddings`` (an
                :class:`~t2i_ldm.embeddings.EmbeddingLibrary`), ``embedding_key``.

        Raises:
            TextEncoderWeightsError: the keys do not fit; every offending key is named.
        """
        from t2i_ldm import openclip

        if openclip.is_openclip_text_state_dict(state_dict):
            weights, inferred = openclip.convert_openclip_text(state_dict, head_dim=head_dim)
            weights = dict(weights)
        else:
            weights = canonical_clip_text_state_dict(state_dict)
            inferred = None
        if config is None:
            config = (
                inferred
                if inferred is not None
                else infer_clip_text_config(weights, head_dim=head_dim)
            )
        model = build_clip_text_model(weights, config, dtype=dtype)
        log.debug(
            "clip_text_encoder.loaded",
            width=config.hidden_size,
            layers=config.num_hidden_layers,
            act=config.hidden_act,
        )
        return cls(model, **options)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, **options) -> ClipTextEncoder:
        """Load a diffusers ``text_encoder/`` folder: ``config.json`` + ``model.safetensors``."""
        from safetensors.torch import load_file
        from transformers import CLIPTextConfig

        path = Path(path)
        files = sorted(path.glob("*.safetensors"))
        if not (path / "config.json").is_file() or not files:
            raise FileNotFoundError(
                f"{path} is not a diffusers text_encoder folder: it needs config.json and "
                "model.safetensors (pickle .bin weights are not loaded)"
            )
        raw = json.loads((path / "config.json").read_text())
        raw.pop("architectures", None)
        config = CLIPTextConfig(**{k: v for k, v in raw.items() if not k.startswith("_")})
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file)))
        return cls.from_state_dict(state, config=config, **options)

    # -- running -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def chunk_length(self) -> int:
        """Tokens per chunk, start and end included (77)."""
        return int(self.model.config.max_position_embeddings)

    def to(self, device=None, dtype=None) -> ClipTextEncoder:
        """Move the model; returns ``self``."""
        self.model.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``text_encoder``: one 77-token chunk with this encoder's ``clip_skip``, before
        emphasis (Optimum's CLIP layout, see :mod:`t2i_ldm.export`)."""
        from t2i_ldm.export import clip_text_deployment, clip_text_export

        export = clip_text_export(self.model, self.clip_skip)
        return ExportSpec((export,), deployment=clip_text_deployment(self.model, self.emphasis))

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """What fine-tuning updates (:mod:`t2i.lora`): the transformers CLIP text model, whose
        layer names (``text_model.encoder.layers.0.self_attn.q_proj``) LoRA files use."""
        return {"text_model": self.model}

    def lora_modules(self) -> dict[str, torch.nn.Module]:
        """Linear layers by the names LoRA files use, whatever the installed transformers'
        module layout: ``text_model.encoder.layers.0.self_attn.q_proj`` first, then the same
        layers without ``text_model.`` (what diffusers writes under transformers >= 5)."""
        prefix = _model_prefix(self.model)
        layers = {
            name[len(prefix) :]: m
            for name, m in self.model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.startswith(prefix)
        }
        return {**{CANONICAL_PREFIX + n: m for n, m in layers.items()}, **layers}

    def __call__(self, tokens: Tokens) -> Conditioning:
        """Encode without autograd (inference)."""
        with torch.no_grad():
            return self.encode(tokens)

    def encode(
        self, tokens: Tokens, *, clip_skip: int | None = None, emphasis: str | None = None
    ) -> Conditioning:
        """Encode ``tokens`` chunk by chunk; autograd follows the caller's mode.

        Raises:
            ValueError: the token axis is not a multiple of 77, or an id is out of the vocabulary.
        """
        clip_skip = self.clip_skip if clip_skip is None else clip_skip
        emphasis = self.emphasis if emphasis is None else emphasis
        self._check_options(clip_skip, emphasis)
        ids = tokens.ids
        chunk = self.chunk_length
        check_chunked_ids(ids, chunk, self.model.config.vocab_size + self.extra_tokens)
        batch, length = ids.shape
        n_chunks = length // chunk
        flat = ids.to(self.device).reshape(batch * n_chunks, chunk)  # (B*n, 77)
        states, pooled = clip_chunk_states(self.model, flat, clip_skip)
        if tokens.weights is not None and emphasis != "ignore":
            weights = tokens.weights.to(self.device).reshape(batch * n_chunks, chunk)
            states = apply_emphasis(states, weights, normalize=emphasis == "original")
        embeds = states.reshape(batch, n_chunks * chunk, -1)  # (B, 77*n, D)
        pooled = pooled.reshape(batch, n_chunks, -1)[:, 0]  # (B, D)
        empty = empty_chunk_tokens(tokens, chunk)
        pad_chunk = None
        if empty is not None:  # the empty prompt, encoded on its own as A1111 does
            pad_chunk = self.encode(empty, clip_skip=clip_skip, emphasis=emphasis).embeds
        return Conditioning(embeds=embeds, pooled=pooled, pad_chunk=pad_chunk)

    def __repr__(self) -> str:
        c = self.model.config
        return (
            f"ClipTextEncoder(width={c.hidden_size}, layers={c.num_hidden_layers}, "
            f"act={c.hidden_act}, clip_skip={self.clip_skip}, emphasis={self.emphasis!r})"
        )


def clip_chunk_states(
    model: CLIPTextModel, input_ids: torch.Tensor, clip_skip: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """One 77-token chunk per row through the CLIP text model, before emphasis.

    Args:
        model: the text model.
        input_ids: ``(N, 77)`` token ids.
        clip_skip: 1 = ``last_hidden_state``; k = the k-th hidden state from the end through
            the final LayerNorm.

    Returns:
        ``(states (N, 77, D), pooler_output (N, D))``.
    """
    out = model(input_ids=input_ids, output_hidden_states=clip_skip > 1)
    if clip_skip == 1:
        states = out.last_hidden_state
    else:
        states = _text_core(model).final_layer_norm(out.hidden_states[-clip_skip])
    return states, out.pooler_output


def empty_chunk_tokens(tokens: Tokens, chunk: int) -> Tokens | None:
    """``tokens.pad_chunk`` as tokens of its own (weights 1: encoded like an empty prompt).

    Raises:
        ValueError: a pad chunk that is not ``(1, chunk)`` ids.
    """
    pad = tokens.pad_chunk
    if pad is None:
        return None
    if tuple(pad.shape) != (1, chunk):
        raise ValueError(f"tokens.pad_chunk must be (1, {chunk}), got {tuple(pad.shape)}")
    return Tokens(ids=pad, weights=torch.ones(pad.shape))


def check_chunked_ids(ids: torch.Tensor, chunk: int, vocab_size: int) -> None:
    """Raise ValueError unless ``ids`` is ``(B, chunk * n)`` with every id in the vocabulary."""
    if ids.ndim != 2:
        raise ValueError(f"tokens.ids must be (B, T), got shape {tuple(ids.shape)}")
    length = ids.shape[1]
    if length == 0 or length % chunk:
        raise ValueError(
            f"token axis {length} is not a positive multiple of {chunk}: tokenize with the "
            f"model's tokenizer, which pads every prompt to whole {chunk}-token chunks"
        )
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}); the tokenizer does not match")


def apply_emphasis(
    states: torch.Tensor, weights: torch.Tensor, *, normalize: bool = True
) -> torch.Tensor:
    """Weight token states; with ``normalize``, restore each chunk's mean (web UI "Original").

    Args:
        states: ``(N, 77, D)`` encoder output, one row per chunk.
        weights: ``(N, 77)`` per-token weights.
        normalize: rescale each row so its mean over tokens and channels is unchanged.

    Returns:
        ``(N, 77, D)`` in the dtype of ``states`` (computed in float32 at least).
    """
    work = states.float() if states.dtype in (torch.float16, torch.bfloat16) else states
    weighted = work * weights.to(work.dtype)[..., None]
    if normalize:
        before = work.mean(dim=(1, 2), keepdim=True)
        after = weighted.mean(dim=(1, 2), keepdim=True)
        scale = torch.where(after != 0, before / torch.where(after != 0, after, 1), 1)
        weighted = weighted * scale
    return weighted.to(states.dtype)
