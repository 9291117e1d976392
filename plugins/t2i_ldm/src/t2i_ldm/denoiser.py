"""The denoiser component of the LDM family: the SD UNet as a Karras denoiser.

SD is a discrete-time DDPM model (Ho et al. 2020) trained on 1000 ``scaled_linear``
timesteps (betas 0.00085..0.012). :class:`LdmDenoiser` maps a sigma to a fractional
timestep, scales the input by ``1 / sqrt(sigma^2 + 1)`` and turns the UNet's epsilon or
v prediction into ``x0`` through :class:`t2i.diffusion.sampling.denoisers.DiscreteDenoiser`
(Karras et al. 2022, table 1; Salimans & Ho 2022 for v).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from t2i.contracts import ExportSpec
from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning
from t2i_ldm.config import NoiseScheduleConfig

if TYPE_CHECKING:
    from t2i_ldm.unet import UNetModel

_NOT_IN_DIFFUSERS = ("context_pool.",)
"""UNet submodules of this plugin that diffusers' UNet2DConditionModel lacks."""


class UNetPredictor:
    """``(x_in, t, cond) -> prediction`` for :class:`DiscreteDenoiser`: calls the UNet with
    ``cond.embeds`` as cross-attention context (SD ignores the padding mask)."""

    def __init__(self, unet: UNetModel) -> None:
        self.unet = unet

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning | torch.Tensor
    ) -> torch.Tensor:
        context = cond.embeds if isinstance(cond, Conditioning) else cond
        return self.unet(x, t, context.to(x.device))


class LdmDenoiser(DiscreteDenoiser):
    """``D(x, sigma, cond) -> x0`` for an SD UNet (a :class:`t2i.contracts.KarrasDenoiser`).

    Args:
        unet: the UNet.
        prediction_type: "epsilon" (SD1, SD2-512) or "v_prediction" (SD2-768-v).
        schedule: the trained noise schedule (SD default: scaled_linear, 1000 steps).
        quantize: round timesteps to trained ones (k-diffusion ``quantize``).

    Attributes:
        sigma_min, sigma_max, sigmas: the trained sigma range and ascending table
            (SD: about 0.0292 .. 14.61).
    """

    def __init__(
        self,
        unet: UNetModel,
        prediction_type: str = "epsilon",
        schedule: NoiseScheduleConfig | None = None,
        *,
        quantize: bool = False,
    ) -> None:
        schedule = schedule or NoiseScheduleConfig()
        super().__init__(
            UNetPredictor(unet), schedule.alphas_cumprod(), prediction_type, quantize=quantize
        )
        self.unet = unet
        self.schedule = schedule

    def to(self, device=None, dtype=None) -> LdmDenoiser:
        """Move the UNet (the sigma tables follow the input's device on their own)."""
        self.unet.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``unet``: ``(sample, timestep, encoder_hidden_states) -> out_sample``, the call this
        denoiser makes inside its Karras wrapper (Optimum's layout, see :mod:`t2i_ldm.export`)."""
        from t2i_ldm.export import denoiser_deployment, unet_export

        return ExportSpec((unet_export(self.unet),), deployment=denoiser_deployment(self))

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """What fine-tuning updates (:mod:`t2i.lora`): the UNet."""
        return {"unet": self.unet}

    def lora_modules(self) -> dict[str, torch.nn.Module]:
        """The UNet's Linear / Conv2d layers by their diffusers names (``down_blocks.0.
        attentions.0.transformer_blocks.0.attn1.to_q``), the names kohya and diffusers
        LoRA files use (:func:`t2i_ldm.keymaps.unet_key_map`)."""
        from t2i_ldm.keymaps import unet_key_map

        layers = {
            name: m
            for name, m in self.unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
        }
        # layers SD has no counterpart of (ldm-shapes' context pooling) keep their own names
        own = {n for n in layers if n.startswith(_NOT_IN_DIFFUSERS)}
        keys = [f"{name}.weight" for name in layers if name not in own]
        mapping = unet_key_map(self.unet.config, keys)
        return {
            (name if name in own else mapping[f"{name}.weight"].removesuffix(".weight")): m
            for name, m in layers.items()
        }

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype
