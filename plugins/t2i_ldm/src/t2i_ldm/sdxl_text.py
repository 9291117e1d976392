"""SDXL's text conditioning: CLIP ViT-L and OpenCLIP ViT-bigG, side by side.

SDXL (Podell et al. 2023, arXiv 2307.01952, section 2.1) conditions on two text towers:
OpenAI CLIP ViT-L/14 (width 768, 12 layers, quick GELU) and OpenCLIP ViT-bigG/14 (width 1280,
32 layers, GELU). Each tower's *penultimate* hidden state (``hidden_states[-2]``, no final
LayerNorm: sgm's ``layer="hidden"`` / ``"penultimate"`` with ``legacy=False``) is taken and
the two are concatenated along channels (768 + 1280 = 2048). The pooled vector is bigG's
final-LayerNorm state at the end token through its ``text_projection`` (1280), the first
chunk's. The refiner has bigG alone (context 1280).

As for SD 1.x (:mod:`t2i_ldm.text_encoder`): every 77-token chunk is encoded on its own
(A1111's long prompts), emphasis weights each tower's states and restores that tower's mean
(A1111 wraps each embedder), ``clip_skip`` k takes ``hidden_states[-(k + 1)]`` (diffusers'
``clip_skip`` k - 1). The two towers share CLIP's BPE vocabulary but pad differently: CLIP-L
with the end token, bigG with id 0 ("!"); one :class:`~t2i.payloads.Tokens` serves both,
bigG's padding rewritten here. An empty prompt is encoded as zeros (embeds and pooled), as
A1111 does for an empty negative prompt and diffusers' ``force_zeros_for_empty_prompt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from t2i.checkpoints import CheckpointError
from t2i.contracts import ExportSpec
from t2i.payloads import Conditioning, Tokens
from t2i_ldm import openclip
from t2i_ldm.embeddings import EmbeddingLibrary
from t2i_ldm.text_encoder import (
    EMPHASIS_MODES,
    apply_emphasis,
    build_clip_text_model,
    canonical_clip_text_state_dict,
    check_chunked_ids,
    empty_chunk_tokens,
    infer_clip_text_config,
)

PROJECTION_KEY = "text_projection.weight"
"""transformers' ``CLIPTextModelWithProjection`` projection (``(E, W)``, no bias)."""


class SdxlTextEncoder:
    """SDXL's two text towers as one :class:`t2i.contracts.TextEncoder`.

    Args:
        clip_l: CLIP ViT-L text model, or None (the refiner).
        clip_g: OpenCLIP bigG text tower as a ``CLIPTextModel`` with all its blocks.
        projection: bigG's ``text_projection`` as a bias-free Linear (W -> E).
        clip_skip: 1 = SDXL's penultimate layer; k = ``hidden_states[-(k + 1)]``.
        emphasis: "original", "no_norm" or "ignore".
        embeddings: textual-inversion vectors (SDXL files carry ``clip_l`` / ``clip_g``).
        zero_empty: an empty prompt gives zeros (A1111's empty negative, diffusers'
            ``force_zeros_for_empty_prompt``).
        pad_id_g: bigG's padding id (0).

    ``encoder(tokens)`` returns ``Conditioning(embeds (B, 77*n, 2048 | 1280), pooled (B, E))``.
    """

    def __init__(
        self,
        clip_l: CLIPTextModel | None,
        clip_g: CLIPTextModel,
        projection: nn.Linear,
        *,
        clip_skip: int = 1,
        emphasis: str = "original",
        embeddings: EmbeddingLibrary | None = None,
        zero_empty: bool = True,
        pad_id_g: int = 0,
    ) -> None:
        self.clip_l = None if clip_l is None else clip_l.eval()
        self.clip_g = clip_g.eval()
        self.projection = projection.eval().requires_grad_(False)
        self.clip_skip, self.emphasis = clip_skip, emphasis
        self.zero_empty, self.pad_id_g = zero_empty, pad_id_g
        layers = min(m.config.num_hidden_layers for m in self.towers.values())
        if not isinstance(clip_skip, int) or not 1 <= clip_skip < layers:
            raise ValueError(
                f"clip_skip must be an int in [1, {layers - 1}] (1 = SDXL's penultimate "
                f"layer), got {clip_skip!r}"
            )
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {EMPHASIS_MODES}, got {emphasis!r}")
        self.extra_tokens = 0
        if embeddings is not None and embeddings.size:
            self._add_embeddings(embeddings)

    @property
    def towers(self) -> dict[str, CLIPTextModel]:
        """``{"clip_l": ..., "clip_g": ...}`` (the refiner: bigG only), in concatenation order."""
        out = {} if self.clip_l is None else {"clip_l": self.clip_l}
        return {**out, "clip_g": self.clip_g}

    def _add_embeddings(self, library: EmbeddingLibrary) -> None:
        from t2i_ldm.embeddings import TokenEmbeddingWithExtras

        for key, model in self.towers.items():
            core = getattr(model, "text_model", model).embeddings
            table = library.table(int(model.config.hidden_size), key)
            core.token_embedding = TokenEmbeddingWithExtras(core.token_embedding, table)
        self.extra_tokens = library.size

    # -- running -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projection.weight.dtype

    @property
    def hidden_size(self) -> int:
        """Context width: 2048 (base), 1280 (refiner)."""
        return sum(int(m.config.hidden_size) for m in self.towers.values())

    @property
    def chunk_length(self) -> int:
        return int(self.clip_g.config.max_position_embeddings)

    def to(self, device=None, dtype=None) -> SdxlTextEncoder:
        for model in self.towers.values():
            model.to(device=device, dtype=dtype)
        self.projection.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``text_encoder`` (CLIP-L; not the refiner's) and ``text_encoder_2`` (bigG): one
        77-token chunk each, this encoder's ``clip_skip`` state and the pooled output, before
        emphasis (Optimum's SDXL layout, see :mod:`t2i_ldm.sdxl_export`)."""
        from t2i_ldm.sdxl_export import sdxl_text_deployment, sdxl_text_exports

        return ExportSpec(sdxl_text_exports(self), deployment=sdxl_text_deployment(self))

    def trainable_modules(self) -> dict[str, nn.Module]:
        """What fine-tuning updates (:mod:`t2i.lora`): both towers."""
        return dict(self.towers)

    def __call__(self, tokens: Tokens) -> Conditioning:
        with torch.no_grad():
            return self.encode(tokens)

    def encode(self, tokens: Tokens) -> Conditioning:
        """Encode ``tokens`` chunk by chunk (see the module docstring).

        Raises:
            ValueError: the token axis is not a multiple of 77, or an id is out of the vocabulary.
        """
        chunk = self.chunk_length
        vocab = min(int(m.config.vocab_size) for m in self.towers.values())
        check_chunked_ids(tokens.ids, chunk, vocab + self.extra_tokens)
        batch, length = tokens.ids.shape
        n = length // chunk
        ids = tokens.ids.to(self.device)
        weights = None
        if tokens.weights is not None and self.emphasis != "ignore":
            weights = tokens.weights.to(self.device).reshape(batch * n, chunk)
        parts, pooled = [], None
        for key, model in self.towers.items():
            tower_ids = self._g_ids(tokens, ids) if key == "clip_g" else ids
            flat = tower_ids.reshape(batch * n, chunk)  # (B*n, 77)
            out = model(input_ids=flat, output_hidden_states=True)
            states = out.hidden_states[-(self.clip_skip + 1)]  # (B*n, 77, W), no final LN
            if weights is not None:
                states = apply_emphasis(states, weights, normalize=self.emphasis == "original")
            parts.append(states)
            if key == "clip_g":
                pooled = self.projection(out.pooler_output)  # (B*n, E)
        embeds = torch.cat(parts, dim=-1).reshape(batch, n * chunk, -1)  # (B, 77*n, D)
        pooled = pooled.reshape(batch, n, -1)[:, 0]  # (B, E): the first chunk's
        embeds, pooled = self._zero_empty(tokens, embeds, pooled)
        pad_chunk = None
        empty = empty_chunk_tokens(tokens, chunk)
        if empty is not None:  # A1111 pads with the empty prompt's encoding (not zeroed)
            saved, self.zero_empty = self.zero_empty, False
            try:
                pad_chunk = self.encode(empty).embeds
            finally:
                self.zero_empty = saved
        return Conditioning(embeds=embeds, pooled=pooled, pad_chunk=pad_chunk)

    def _g_ids(self, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
        """bigG's ids: CLIP-L's with every padding position set to ``pad_id_g``."""
        if tokens.mask is not None:
            real = tokens.mask.to(ids.device)
        else:  # padding: positions after the first end token of each chunk
            chunk = self.chunk_length
            eos = int(self.clip_g.config.eos_token_id)
            per_chunk = ids.reshape(-1, chunk)
            after = (per_chunk == eos).int().cumsum(-1) - (per_chunk == eos).int()
            real = (after == 0).reshape(ids.shape)
        return torch.where(real, ids, torch.full_like(ids, self.pad_id_g))

    def _zero_empty(self, tokens: Tokens, embeds: torch.Tensor, pooled: torch.Tensor):
        pad = tokens.pad_chunk
        if not self.zero_empty or pad is None or tokens.ids.shape[1] != pad.shape[1]:
            return embeds, pooled
        empty = (tokens.ids == pad.to(tokens.ids.device)).all(dim=1).to(embeds.device)  # (B,)
        if not bool(empty.any()):
            return embeds, pooled
        keep = (~empty).to(embeds.dtype)
        return embeds * keep[:, None, None], pooled * keep[:, None].to(pooled.dtype)

    def __repr__(self) -> str:
        widths = "+".join(str(m.config.hidden_size) for m in self.towers.values())
        return f"SdxlTextEncoder(width={widths}, clip_skip={self.clip_skip})"


# -- construction --------------------------------------------------------------------------


def projection_layer(weight: torch.Tensor, dtype: torch.dtype | None = None) -> nn.Linear:
    """A bias-free Linear holding ``weight`` (``(E, W)``, transformers' orientation)."""
    if weight.ndim != 2:
        raise CheckpointError(f"text_projection must be 2-D, got shape {tuple(weight.shape)}")
    out_dim, in_dim = weight.shape
    with torch.device("meta"):
        layer = nn.Linear(in_dim, out_dim, bias=False)
    layer.weight = nn.Parameter(weight.to(dtype) if dtype else weight, requires_grad=False)
    return layer


def clip_l_from_state(
    state: Mapping[str, torch.Tensor],
    *,
    config: CLIPTextConfig | None = None,
    head_dim: int = 64,
    dtype: torch.dtype | None = None,
) -> CLIPTextModel:
    """CLIP-L from HF keys (``text_model.*``, an SDXL file's ``conditioner.embedders.0.
    transformer.*`` with the prefix removed, or a diffusers ``text_encoder/``)."""
    weights = canonical_clip_text_state_dict(state)
    config = config or infer_clip_text_config(weights, head_dim=head_dim)
    return build_clip_text_model(weights, config, dtype=dtype)


def clip_g_from_openclip(
    state: Mapping[str, torch.Tensor], *, head_dim: int = 64, dtype: torch.dtype | None = None
) -> tuple[CLIPTextModel, nn.Linear]:
    """bigG and its projection from OpenCLIP keys (an SDXL file's ``conditioner.embedders.1.
    model.*``): every block is kept (SD2 drops the last), ``text_projection`` ``(W, E)`` is
    transposed into the Linear."""
    source = openclip.strip_openclip_prefix(state)
    if "text_projection" not in source:
        raise CheckpointError(
            "the OpenCLIP bigG text tower has no text_projection (SDXL's pooled output needs it)",
            missing=["text_projection"],
        )
    n_blocks = len({k.split(".")[2] for k in source if k.startswith("transformer.resblocks.")})
    weights, config = openclip.convert_openclip_text(
        source, layers_used=max(n_blocks, 1), head_dim=head_dim
    )
    model = build_clip_text_model(weights, config, dtype=dtype)
    return model, projection_layer(source["text_projection"].t().contiguous(), dtype)


def clip_g_from_hf(
    state: Mapping[str, torch.Tensor],
    *,
    config: CLIPTextConfig | None = None,
    head_dim: int = 64,
    dtype: torch.dtype | None = None,
) -> tuple[CLIPTextModel, nn.Linear]:
    """bigG from a diffusers ``text_encoder_2/`` (``CLIPTextModelWithProjection`` keys)."""
    state = dict(state)
    weight = state.pop(PROJECTION_KEY, None)
    if weight is None:
        raise CheckpointError(
            f"text_encoder_2 has no {PROJECTION_KEY!r} (SDXL's pooled output needs it)",
            missing=[PROJECTION_KEY],
        )
    model = clip_l_from_state(state, config=config, head_dim=head_dim, dtype=dtype)
    return model, projection_layer(weight, dtype)


def openclip_state_from_hf(model: CLIPTextModel, projection: nn.Linear) -> dict[str, torch.Tensor]:
    """The inverse of :func:`clip_g_from_openclip`: OpenCLIP keys of a bigG tower (for writing
    A1111-layout files); ``in_proj`` packs q, k, v, ``text_projection`` is ``(W, E)``."""
    core = getattr(model, "text_model", model)
    out = {
        "token_embedding.weight": core.embeddings.token_embedding.weight,
        "positional_embedding": core.embeddings.position_embedding.weight,
        "ln_final.weight": core.final_layer_norm.weight,
        "ln_final.bias": core.final_layer_norm.bias,
        "text_projection": projection.weight.t().contiguous(),
    }
    for i, layer in enumerate(core.encoder.layers):
        p = f"transformer.resblocks.{i}."
        att = layer.self_attn
        for kind in ("weight", "bias"):
            q, k, v = (getattr(getattr(att, n), kind) for n in ("q_proj", "k_proj", "v_proj"))
            out[p + f"attn.in_proj_{kind}"] = torch.cat([q, k, v])
            out[p + f"attn.out_proj.{kind}"] = getattr(att.out_proj, kind)
            out[p + f"ln_1.{kind}"] = getattr(layer.layer_norm1, kind)
            out[p + f"ln_2.{kind}"] = getattr(layer.layer_norm2, kind)
            out[p + f"mlp.c_fc.{kind}"] = getattr(layer.mlp.fc1, kind)
            out[p + f"mlp.c_proj.{kind}"] = getattr(layer.mlp.fc2, kind)
    return {k: v.detach().contiguous() for k, v in out.items()}


def sdxl_text_encoder(
    models: Any,
    *,
    configs: tuple[CLIPTextConfig | None, CLIPTextConfig | None] = (None, None),
    head_dim: int = 64,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> SdxlTextEncoder:
    """The :class:`SdxlTextEncoder` of loaded SDXL weights (:class:`t2i_ldm.checkpoint.
    LdmModels` of format "sdxl"): CLIP-L from ``models.text_encoder`` (None: the refiner),
    bigG from ``models.extras["text_encoder_2"]``.

    Args:
        configs: the diffusers ``config.json`` of each tower, or None to read them off the
            weights (``head_dim`` wide heads; OpenCLIP's GELU for bigG).
        options: :class:`SdxlTextEncoder` options.

    Raises:
        CheckpointError: no bigG tower, or towers that do not fit.
    """
    g_reader = models.extras.get("text_encoder_2")
    if g_reader is None:
        raise CheckpointError(
            "the SDXL checkpoint holds no OpenCLIP bigG text encoder",
            fix="use a full SDXL checkpoint (conditioner.embedders.* keys or text_encoder_2/)",
        )
    clip_l = None
    if models.text_encoder is not None:
        l_state = {k: models.text_encoder.get(k) for k in models.text_encoder.keys()}
        clip_l = clip_l_from_state(l_state, config=configs[0], head_dim=head_dim, dtype=dtype)
    g_state = {k: g_reader.get(k) for k in g_reader.keys()}
    if models.extras.get("text_encoder_2_format") == "open_clip":
        clip_g, projection = clip_g_from_openclip(g_state, head_dim=head_dim, dtype=dtype)
    else:
        clip_g, projection = clip_g_from_hf(
            g_state, config=configs[1], head_dim=head_dim, dtype=dtype
        )
    if models.config.unet.context_dim != sum(
        int(m.config.hidden_size) for m in ([clip_l] if clip_l is not None else []) + [clip_g]
    ):
        raise CheckpointError(
            f"the text towers' widths do not add up to the UNet's context width "
            f"{models.config.unet.context_dim}",
            fix="use an intact SDXL checkpoint",
        )
    return SdxlTextEncoder(clip_l, clip_g, projection, **options)
