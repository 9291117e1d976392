"""The two stages of ``t2i train ldm`` as :class:`t2i.training.TrainableModel` s.

Stage 1, :class:`VaeTraining`: the KL autoencoder learns L1 reconstruction plus a small KL
term (Rombach et al. 2022 without the adversarial loss). Stage 2,
:class:`TextToImageTraining`: the UNet and the text encoder learn SD's epsilon objective
(Ho et al. 2020) on the frozen autoencoder's latents, through the denoiser adapter's
:meth:`~t2i.diffusion.sampling.denoisers.DiscreteDenoiser.loss`, with 10% of the captions
dropped to the empty prompt for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from t2i.checkpoints import save_safetensors
from t2i_ldm.denoiser import LdmDenoiser


def _kl(posterior: Any) -> torch.Tensor:
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum((1, 2, 3)).mean()


class VaeTraining(nn.Module):
    """Stage 1: ``loss(pixels)`` = L1 reconstruction + 1e-6 KL; pixels ``(B, 3, H, W)`` in
    [-1, 1]. ``save`` writes ``vae.safetensors``."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def trainable_parameters(self):
        return self.vae.parameters()

    def loss(self, pixels: torch.Tensor) -> torch.Tensor:
        recon, posterior = self.vae(pixels)
        kl = posterior.kl().mean() if hasattr(posterior, "kl") else _kl(posterior)
        return F.l1_loss(recon.float(), pixels) + 1e-6 * kl

    def save(self, folder: Path) -> None:
        save_safetensors(self.vae.state_dict(), Path(folder) / "vae.safetensors")


@attrs.define(eq=False)
class ExportParts:
    """What the model folder needs besides the trained modules (see
    :func:`t2i_ldm.model_folder.write_model_folder`); ``training`` is the record."""

    vae: nn.Module
    tokenizer_dir: Path
    unet_config: Any
    vae_config: Any
    training: dict[str, Any] = attrs.Factory(dict)


class TextToImageTraining(nn.Module):
    """Stage 2: ``loss((latents, ids))`` of unscaled posterior modes ``(B, z, h, w)`` and
    caption ids ``(B, 77)``.

    A caption is replaced by the empty prompt with probability ``drop``; the timestep is
    uniform over the trained ones and sigma is its entry of the trained table, so the UNet
    sees ``sqrt(a_t) x0 + sqrt(1 - a_t) eps`` at timestep ``t``. The latent scaling factor
    is a buffer, so that a resumed run keeps the one it started with. ``save`` writes the
    model folder.
    """

    def __init__(
        self,
        unet: nn.Module,
        text_model: nn.Module,
        *,
        empty_ids: torch.Tensor,
        scaling_factor: float,
        parts: ExportParts,
        drop: float = 0.1,
    ) -> None:
        super().__init__()
        self.unet, self.text_model = unet, text_model
        self.denoiser = LdmDenoiser(unet)
        self.register_buffer("scaling_factor", torch.tensor(float(scaling_factor)))
        self.register_buffer("empty_ids", empty_ids.reshape(1, -1).clone(), persistent=False)
        self.register_buffer("sigmas", self.denoiser.sigmas.float(), persistent=False)
        self.parts, self.drop = parts, drop

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Caption ids -> the text states the UNet attends to."""
        states = self.text_model(input_ids=ids)
        if not isinstance(states, torch.Tensor):  # a transformers output (CLIP)
            states = states.last_hidden_state
        return states

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        latents, ids = batch
        x0 = latents * self.scaling_factor
        dropped = torch.rand(ids.shape[0], device=ids.device) < self.drop
        ids = torch.where(dropped[:, None], self.empty_ids.expand_as(ids), ids)
        t = torch.randint(0, self.sigmas.numel(), (ids.shape[0],), device=ids.device)
        noise = torch.randn_like(x0)
        states = self.encode(ids)
        return self.denoiser.loss(x0, states, noise=noise, sigma=self.sigmas[t]).mean()

    def save(self, folder: Path) -> None:
        from t2i_ldm.model_folder import write_model_folder

        write_model_folder(
            Path(folder),
            unet=self.unet,
            vae=self.parts.vae,
            text_model=self.text_model,
            tokenizer_dir=self.parts.tokenizer_dir,
            scaling_factor=float(self.scaling_factor),
            unet_config=self.parts.unet_config,
            vae_config=self.parts.vae_config,
            training=self.parts.training,
        )
