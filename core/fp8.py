"""FP8 (E4M3) linear layers: an opt-in, lossy, inference-time conversion for any family.

:class:`Float8Linear` holds a linear layer's weight in ``torch.float8_e4m3fn`` with one float32
scale per output row (``amax / 448``), quantizes its input dynamically at each call (per row
of the flattened input, or one scale for the whole tensor) and multiplies with
``torch._scaled_mm`` (FP8 tensor cores on Ada / Hopper; a reference kernel on the CPU), the
bias added after, in the input's dtype. E4M3 keeps 3 mantissa bits: each operand carries up to
2^-4 = 6 % relative rounding error per element, which averages out to a few percent relative
error per matmul output; a whole denoiser's output moves by about that much.

:func:`convert_linears_to_fp8` swaps a module's eligible ``nn.Linear`` children in place. It is
a conversion of loaded weights, done after loading: the converted module's state dict holds
FP8 weights and scales and is not meant to be saved or loaded into the original model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
ALIGN = 16
"""``torch._scaled_mm`` needs both dimensions of the weight to be multiples of 16."""
MIN_FEATURES = 64
"""Default of ``min_features``: narrower layers gain nothing from FP8 and lose precision."""
MIN_CAPABILITY = (8, 9)
"""FP8 tensor cores: Ada (8.9) and Hopper (9.0) or later."""


def quantize_rows(
    x: torch.Tensor, *, per_tensor: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, K)`` -> its E4M3 values and the ``(M, 1)`` float32 scales with ``x ~ q * scale``:
    one scale per row (``amax / 448``), or the tensor's when ``per_tensor``."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()  # (M, 1)
    if per_tensor:
        amax = amax.amax().expand_as(amax)
    scale = amax.clamp(min=1e-12) / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)  # 448 is E4M3's largest finite
    return q, scale.contiguous()


class Float8Linear(nn.Module):
    """A drop-in for ``nn.Linear`` (inference only) with an E4M3 weight, per-row scales.

    Buffers ``weight`` ``(out, in)`` float8_e4m3fn and ``weight_scale`` ``(1, out)`` float32;
    ``bias`` stays a parameter in the model's dtype. Device moves reach the buffers, dtype casts
    (``.half()``, ``.to(dtype)``) only the bias: the FP8 weight keeps its format. ``activation``:
    ``"row"`` (a scale per input row, the default) or ``"tensor"`` (one per call).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, *, activation: str = "row"
    ) -> None:
        super().__init__()
        if activation not in ("row", "tensor"):
            raise ValueError(f"activation must be 'row' or 'tensor', got {activation!r}")
        out_features, in_features = weight.shape
        if in_features % ALIGN or out_features % ALIGN:
            raise ValueError(
                f"FP8 needs both dimensions to be multiples of {ALIGN}, got {tuple(weight.shape)}"
            )
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        with torch.no_grad():
            q, scale = quantize_rows(weight.detach())
        self.register_buffer("weight", q)
        self.register_buffer("weight_scale", scale.reshape(1, out_features).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, activation: str = "row") -> Float8Linear:
        """The FP8 copy of ``linear`` (on its device)."""
        return cls(linear.weight, linear.bias, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, scale = quantize_rows(
            x.reshape(-1, self.in_features), per_tensor=self.activation == "tensor"
        )
        # CUDA's row-wise kernel writes bf16 only; the CPU's writes the input dtype
        out_dtype = x.dtype if x.device.type == "cpu" else torch.bfloat16
        out = torch._scaled_mm(
            q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype
        ).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*lead, self.out_features)

    def dequantized(self) -> torch.Tensor:
        """The weight the FP8 values stand for, ``(out, in)`` float32 (tests, error studies)."""
        return self.weight.float() * self.weight_scale.t()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):
        fp8 = {name: self._buffers.pop(name) for name in ("weight", "weight_scale")}
        try:
            super()._apply(fn, recurse)
        finally:
            probe = fn(torch.zeros((), device=fp8["weight"].device))
            for name, tensor in fp8.items():
                self._buffers[name] = tensor.to(probe.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation}"
        )


def eligible(linear: nn.Module, min_features: int = MIN_FEATURES) -> bool:
    """A plain ``nn.Linear`` with both dimensions multiples of 16 and at least ``min_features``."""
    if type(linear) is not nn.Linear:
        return False
    out_features, in_features = linear.weight.shape
    return (
        in_features % ALIGN == 0
        and out_features % ALIGN == 0
        and min(in_features, out_features) >= min_features
    )


def convert_linears_to_fp8(
    module: nn.Module,
    *,
    min_features: int = MIN_FEATURES,
    skip: Iterable[str] = (),
    activation: str = "row",
) -> list[str]:
    """Replace, in place, every eligible ``nn.Linear`` under ``module`` (:func:`eligible`; not
    ``module`` itself) by a :class:`Float8Linear`; returns the converted layers' paths.

    ``skip``: glob patterns of paths to leave alone (``"time_embed.*"``, ``"*.to_out.0"``).
    """
    patterns = tuple(skip)
    targets = [
        (name, child)
        for name, child in module.named_modules()
        if name
        and eligible(child, min_features)
        and not any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]
    for name, child in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Float8Linear.from_linear(child, activation=activation))
    return [name for name, _ in targets]


def fp8_device_problem(device: torch.device) -> str | None:
    """Why FP8 cannot run on ``device`` (None when it can: the CPU, CUDA 8.9+)."""
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"FP8 runs on CUDA (Ada / Hopper) or the CPU, not on {device.type}; drop fp8"
    if getattr(torch.version, "hip", None):
        return "FP8 (float8_e4m3fn) is not supported on ROCm devices yet; drop fp8"
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < MIN_CAPABILITY:
        return (
            f"FP8 needs an Ada or Hopper GPU (compute capability 8.9 or later); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}: "
            "drop fp8 (--fp8), or use compile=True (--compile) for speed without it"
        )
    return None
