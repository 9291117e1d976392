"""CLIP's text transformer (Radford et al., 2021, arXiv 2103.00020) in plain PyTorch.

Why it exists: importing transformers' ``CLIPTextModel`` costs seconds on a small CPU (its
modeling module pulls in ``torch._dynamo``, ``torch.distributed.tensor`` and sympy), which was
most of ``t2i generate``'s start-up on the embedded ``ldm-shapes`` model (issue 23.5). This
module is the same network with the same module tree and parameter names as transformers' v5
``CLIPTextModel`` (``embeddings.token_embedding``, ``encoder.layers.N.self_attn.q_proj``, ...,
``final_layer_norm``; no ``text_model.`` level), so its state dicts and LoRA layer names are the
same, and the same arithmetic in the same order (pre-LN residual blocks, causal
``scaled_dot_product_attention``, quick GELU or GELU, the end token's state as ``pooler_output``),
so its outputs equal transformers' bit for bit on the CPU (``tests/plugins/ldm/test_clip_text.py``
checks that on random weights). :class:`t2i_ldm.text_encoder.ClipTextEncoder` runs either.

It is built to hold weights that are loaded into it (:func:`load_clip_text_model` builds it with
:func:`t2i.checkpoints.empty_module`: no random initialisation is computed and thrown away);
training a CLIP text model from scratch still uses transformers' class and its initialisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("quick_gelu", "gelu")


@attrs.frozen
class ClipTextConfig:
    """The fields of transformers' ``CLIPTextConfig`` that the text model reads, with its
    defaults (so a ``model.json`` ``text`` object or a diffusers ``config.json`` reads the
    same); ``from_dict`` refuses keys it does not know rather than ignoring them."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = attrs.field(default="quick_gelu")
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407

    @hidden_act.validator
    def _act(self, _attribute, value) -> None:
        if value not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClipTextConfig:
        """From a ``CLIPTextConfig``-style dict (``model.json``'s ``text``).

        Raises:
            ValueError: a key this model does not read (named), or a bad value.
        """
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CLIP text config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class ClipTextEmbeddings(nn.Module):
    """Token embedding + learned absolute position embedding."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # not in the state dict, so made here for real even when the weights are on "meta"
        # (where arange would also import sympy through torch's decompositions)
        weight = self.position_embedding.weight
        device = torch.device("cpu") if weight.is_meta else weight.device
        positions = torch.arange(config.max_position_embeddings, device=device)
        self.register_buffer("position_ids", positions.expand((1, -1)), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length > self.position_embedding.weight.shape[0]:
            raise ValueError(
                f"{length} tokens are more than the model's "
                f"{self.position_embedding.weight.shape[0]} positions"
            )
        positions = self.position_ids[:, :length]  # (1, T)
        return self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, T, C)


class ClipAttention(nn.Module):
    """Causal multi-head self-attention (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``)."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = (batch, length, -1, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
            is_causal=True,  # (a single token attends to itself either way)
        )
        out = out.transpose(1, 2).reshape(batch, length, -1).contiguous()  # (B, T, C)
        return self.out_proj(out)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


class ClipMlp(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.act = quick_gelu if config.hidden_act == "quick_gelu" else F.gelu
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    """Pre-LN residual block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.self_attn = ClipAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ClipMlp(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEncoder(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ClipEncoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.gradient_checkpointing = False
        """Recompute each layer in the backward pass (training; as transformers' flag)."""


@dataclasses.dataclass(frozen=True)
class ClipTextOutput:
    """What transformers' ``BaseModelOutputWithPooling`` holds, by the same names.

    A frozen dataclass rather than an attrs class: Dynamo traces a dataclass's ``__init__``,
    while attrs' frozen ``__init__`` (``object.__setattr__``) is a graph break under
    ``torch.compile``.

    ``hidden_states``: with ``output_hidden_states``, the embeddings then every layer's output
    (``num_hidden_layers + 1`` entries, before the final LayerNorm), else None.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ClipTextModel(nn.Module):
    """The CLIP text transformer: ``input_ids (B, T)`` -> :class:`ClipTextOutput`.

    ``pooler_output`` is the final-LayerNorm state at the first end token
    (``config.eos_token_id``; for the legacy ``eos_token_id == 2`` configs, the highest id, as
    transformers does).
    """

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ClipTextEmbeddings(config)
        self.encoder = ClipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.eos_token_id = config.eos_token_id

    def forward(
        self, input_ids: torch.Tensor, *, output_hidden_states: bool = False
    ) -> ClipTextOutput:
        input_ids = input_ids.view(-1, input_ids.shape[-1])  # (B, T)
        x = self.embeddings(input_ids)  # (B, T, C)
        states = [x] if output_hidden_states else None
        recompute = (
            self.encoder.gradient_checkpointing and self.training and torch.is_grad_enabled()
        )
        for layer in self.encoder.layers:
            if recompute:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            if states is not None:
                states.append(x)
        last = self.final_layer_norm(x)
        ids = input_ids.to(dtype=torch.int, device=last.device)
        if self.eos_token_id == 2:
            end = ids.argmax(dim=-1)
        else:
            end = (ids == self.eos_token_id).int().argmax(dim=-1)
        pooled = last[torch.arange(last.shape[0], device=last.device), end]  # (B, C)
        return ClipTextOutput(last, pooled, tuple(states) if states is not None else None)


def load_clip_text_model(
    config: ClipTextConfig,
    weights: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    what: str = "text encoder",
    fix: str = "",
) -> ClipTextModel:
    """A :class:`ClipTextModel` holding ``weights`` (transformers v5 ``CLIPTextModel`` keys),
    built on the meta device and assigned (no initialisation is computed); eval mode, frozen.

    Raises:
        t2i.checkpoints.CheckpointMismatchError: missing, unexpected or mis-shaped keys, listed.
    """
    from t2i.checkpoints import empty_module, load_into

    model = empty_module(ClipTextModel, config)
    load_into(model, weights, dtype=dtype, what=what, fix=fix or None)
    return model.eval().requires_grad_(False)
