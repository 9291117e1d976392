"""The denoiser component of the LDM family: the SD UNet as a Karras denoiser.

SD is a discrete-time DDPM model (Ho et al. 2020) trained on 1000 ``scaled_linear``
timesteps (betas 0.00085..0.012). :class:`LdmDenoiser` maps a sigma to a fractional
timestep, scales the input by ``1 / sqrt(sigma^2 + 1)`` and turns the UNet's epsilon or
v prediction into ``x0`` through :class:`t2i.diffusion.sampling.denoisers.DiscreteDenoiser`
(Karras et al. 2022, table 1; Salimans & Ho 2022 for v).
"""

from __future__ import annotations

import torch

from t2i.contracts import ExportSpec
from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning
from t2i_ldm.config import NoiseScheduleConfig
from t2i_ldm.unet import UNetModel


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
        from t2i_ldm.export import unet_export

        return ExportSpec((unet_export(self.unet),))

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype
