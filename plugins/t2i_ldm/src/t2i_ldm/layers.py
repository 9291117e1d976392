"""Leaf layers shared by the UNet and the VAE: GroupNorm and attention through ``t2i_kernels``.

Both dispatch to :mod:`t2i_kernels` (Triton on CUDA, PyTorch elsewhere), so the models
never pick a kernel themselves.
"""

from __future__ import annotations

import torch
from torch import nn


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same ``weight``/``bias`` keys) with an optional fused activation.

    Args:
        num_groups: groups.
        num_channels: channels.
        eps: variance epsilon (1e-5 in the UNet's residual blocks, 1e-6 elsewhere).
        activation: None or "silu": applied after the affine transform, in one kernel.
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, activation: str | None = None
    ) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=True)
        if activation not in (None, "silu"):
            raise ValueError(f"activation must be None or 'silu', got {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import t2i_kernels

        return t2i_kernels.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, activation=self.activation
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}"


def needs_upcast(q: torch.Tensor) -> bool:
    """Whether ``upcast_attention`` must run attention on float32 copies of half ``q``/``k``/``v``.

    The LDM code upcasts because its plain ``softmax(q k^T)`` overflows fp16 at SD2.1's scale.
    On CUDA every kernel the dispatch picks (PyTorch's flash / memory-efficient SDPA, the
    Triton flash kernel) accumulates scores and softmax in float32 already, so the upcast only
    costs: it forced fp32 memory-efficient attention, 60% of SD2.1's compiled step (issue 18
    profile, BENCHMARKS.md). diffusers' SDPA processor skips it the same way. Elsewhere (the
    CPU's math path) it is kept.
    """
    return q.dtype != torch.float32 and q.device.type != "cuda"


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, upcast: bool = False
) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T / sqrt(D)) v`` on ``(B, H, S, D)`` tensors.

    Args:
        q: ``(B, H, Sq, D)`` queries.
        k: ``(B, H, Sk, D)`` keys.
        v: ``(B, H, Sk, D)`` values.
        upcast: SD2.1's ``upcast_attention``: compute in float32 and cast the result back
            where the kernel would otherwise form ``q k^T`` in half precision (see
            :func:`needs_upcast`).

    Returns:
        ``(B, H, Sq, D)`` in the dtype of ``q``.
    """
    import t2i_kernels

    if upcast and needs_upcast(q):
        dtype = q.dtype
        return t2i_kernels.attention(q.float(), k.float(), v.float()).to(dtype)
    return t2i_kernels.attention(q, k, v)
