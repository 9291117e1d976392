"""A preallocated (static) KV cache: one shape for every decode step, so a compiled step is
one graph for the whole token loop.

:class:`~t2i.contracts.KVCache` grows by ``torch.cat`` (a new shape per token: under
``torch.compile`` a recompile, or a dynamic shape, per step). :class:`StaticKVCache` holds
``(B, heads, max_len, head_dim)`` keys and values per layer, allocated once; a step writes
its positions in place with ``index_copy_`` at a *tensor* of positions (as Hugging Face's
``StaticCache`` does) and attends over the whole ``max_len`` with :meth:`visible`, the mask of
the positions written so far. ``length`` (a Python int, kept outside any compiled graph)
counts the positions written; :meth:`advance` moves it after a step's layers are written.
"""

from __future__ import annotations

import attrs
import torch


@attrs.define(eq=False)
class StaticKVCache:
    """Keys and values ``(B, heads, max_len, head_dim)`` per layer (time axis 2), written in
    place; positions ``0 .. length - 1`` hold the tokens seen so far."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    time_dim: int = attrs.field(default=2, init=False)

    @classmethod
    def allocate(
        cls,
        layers: int,
        batch: int,
        heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> StaticKVCache:
        """An empty cache (zeros) of ``layers`` layers holding ``max_len`` positions."""
        shape = (batch, heads, max_len, head_dim)
        make = lambda: [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]  # noqa: E731
        return cls(make(), make())

    @property
    def max_len(self) -> int:
        return int(self.keys[0].shape[self.time_dim])

    def positions(self, count: int) -> torch.Tensor:
        """The ``(count,)`` int64 positions the next ``count`` tokens take (on the cache's
        device); raises ``ValueError`` past ``max_len``."""
        if self.length + count > self.max_len:
            raise ValueError(
                f"{count} more positions after {self.length} overflow the cache's {self.max_len}"
            )
        return torch.arange(self.length, self.length + count, device=self.keys[0].device)

    def write(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k`` / ``v`` ``(B, heads, S, head_dim)`` at ``positions`` ``(S,)`` of layer
        ``layer`` in place; returns the layer's whole (``max_len``) keys and values."""
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(self.time_dim, positions, k.to(keys.dtype))
        values.index_copy_(self.time_dim, positions, v.to(values.dtype))
        return keys, values

    def visible(self, positions: torch.Tensor) -> torch.Tensor:
        """Bool ``(S, max_len)``: query at ``positions[i]`` sees the keys at or before it
        (written by this step or an earlier one; later slots may hold anything)."""
        keys = torch.arange(self.max_len, device=positions.device)
        return keys[None, :] <= positions[:, None]

    def advance(self, count: int) -> None:
        """Count ``count`` more positions as written (after every layer wrote them)."""
        if self.length + count > self.max_len:
            raise ValueError(f"length {self.length + count} beyond max_len {self.max_len}")
        self.length += count
