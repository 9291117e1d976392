"""The GAN as a stepped model of the core loop (:mod:`t2i.training.stepping`).

:class:`GanTrainable` holds DF-GAN's ``netG``, ``netD`` and ``netC``. Each loop step is one
discriminator step then one generator step (DF-GAN's ``train``): hinge loss with the
matching-aware term and MA-GP for D, ``-D(G(z, s), s)`` for G; Adam with betas (0, 0.9), the
generator at ``--lr`` and the discriminator at ``--lr x d_lr_ratio`` (DF-GAN: 1e-4 / 4e-4).
The loop's EMA averages the generator alone (``ema_parameters``), and ``save`` exports it.
A word pooling config (``word_queries`` > 0) reads batches with the captions' per-token
states and mask too; MA-GP's text gradient is then the one w.r.t. the sentence vector and
the token states together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from t2i.checkpoints import save_safetensors
from t2i.training.stepping import StepTools
from t2i_gan.checkpoint import FAMILY
from t2i_gan.losses import GP_WEIGHT, hinge_fake, hinge_real, ma_gp, mismatched
from t2i_gan.models import GanConfig, NetC, NetD, NetG

BETAS = (0.0, 0.9)

Text = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
"""What G and C read of a caption: ``(sentence, words or None, mask or None)``."""


def _mismatched(text: Text) -> Text:
    """:func:`~t2i_gan.losses.mismatched` of every part of ``text`` alike."""
    return tuple(None if t is None else mismatched(t) for t in text)  # type: ignore[return-value]


class GanTrainable(nn.Module):
    """``netG`` / ``netD`` / ``netC`` trained adversarially; batches are ``(uint8 images
    (B, 3, S, S), sentence vectors (B, cond_dim))``, plus ``token states (B, T, cond_dim),
    mask (B, T)`` for a word pooling config."""

    def __init__(
        self,
        config: GanConfig,
        *,
        d_lr_ratio: float = 4.0,
        gp_weight: float = GP_WEIGHT,
        gp_sentence_weight: float = 1.0,
        training: dict | None = None,
    ) -> None:
        super().__init__()
        self.config, self.d_lr_ratio = config, float(d_lr_ratio)
        self.gp_weight, self.gp_sentence_weight = float(gp_weight), float(gp_sentence_weight)
        self.netG, self.netD, self.netC = NetG(config), NetD(config), NetC(config)
        self.training_record = dict(training or {})

    def fit_condition(self, sentences: torch.Tensor) -> None:
        """Fit G's and C's :class:`~t2i_gan.models.SentenceNorm` to the training vectors
        (no-op when the config has no ``cond_norm``)."""
        for net in (self.netG, self.netC):
            if net.cond_norm is not None:
                net.cond_norm.to(sentences.device).fit(sentences)

    def trainable_parameters(self):
        return self.parameters()

    def ema_parameters(self):
        return self.netG.parameters()

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        d_params = [*self.netD.parameters(), *self.netC.parameters()]
        return {
            "netD": torch.optim.Adam(d_params, lr=lr * self.d_lr_ratio, betas=BETAS),
            "netG": torch.optim.Adam(self.netG.parameters(), lr=lr, betas=BETAS),
        }

    def _prepare(self, batch: Any) -> tuple[torch.Tensor, Text]:
        images, sentence, *words = batch
        device = self.netG.fc.weight.device
        images = images.to(device)
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1.0
        if bool(words) != bool(self.config.word_queries):
            raise ValueError(
                f"a batch of {2 + len(words)} parts for word_queries={self.config.word_queries}: "
                "(images, sentences) without word pooling, (images, sentences, token states, "
                "mask) with it"
            )
        if not words:
            return images, (sentence.to(device).float(), None, None)
        states, mask = words
        return images, (sentence.to(device).float(), states.to(device).float(), mask.to(device))

    def discriminator_loss(
        self, images: torch.Tensor, text: Text, fake: torch.Tensor, tools: StepTools
    ) -> dict[str, torch.Tensor]:
        """DF-GAN's D loss: real + (fake + mismatched) / 2 + MA-GP (its text gradient: the
        sentence's, and the token states' for word pooling)."""
        images = images.detach().requires_grad_(True)
        sent = text[0].detach().requires_grad_(True)
        words = None if text[1] is None else text[1].detach().requires_grad_(True)
        with tools.autocast():
            real_features = self.netD(images)
            pred_real = self.netC(real_features, sent, words, text[2])
            d_real = hinge_real(pred_real)
            d_mis = hinge_fake(self.netC(real_features, *_mismatched(text)))
            d_fake = hinge_fake(self.netC(self.netD(fake.detach()), *text))
        scale = float(tools.scaler.get_scale()) if tools.scaler.is_enabled() else 1.0
        gp = ma_gp(
            images,
            (sent,) if words is None else (sent, words),
            pred_real.float(),
            weight=self.gp_weight,
            scale=scale,
            sentence_weight=self.gp_sentence_weight,
        )
        total = d_real.float() + (d_fake.float() + d_mis.float()) / 2 + gp
        return {"d_loss": total, "d_real": d_real, "d_fake": d_fake, "d_mis": d_mis, "gp": gp}

    def train_step(self, batch: Any, tools: StepTools) -> Mapping[str, torch.Tensor]:
        images, text = self._prepare(batch)
        z = torch.randn(images.shape[0], self.config.z_dim, device=images.device)
        with tools.autocast():
            fake = self.netG(z, *text)
        d = self.discriminator_loss(images, text, fake, tools)
        tools.optimize("netD", d["d_loss"])
        for p in (*self.netD.parameters(), *self.netC.parameters()):
            p.requires_grad_(False)
        try:
            with tools.autocast():
                g_loss = -self.netC(self.netD(fake), *text).float().mean()
            tools.optimize("netG", g_loss)
        finally:
            for p in (*self.netD.parameters(), *self.netC.parameters()):
                p.requires_grad_(True)
        out = {k: v.detach() for k, v in d.items()}
        return {"loss": out["d_loss"], **out, "g_loss": g_loss.detach()}

    def save(self, folder: Path) -> None:
        """Export ``model.json`` and ``netG`` / ``netD`` / ``netC`` safetensors (fp16)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("netG", "netD", "netC"):
            state = {k: v.half() for k, v in getattr(self, part).state_dict().items()}
            save_safetensors(state, folder / f"{part}.safetensors")
        config = attrs.asdict(self.config)
        if not self.config.word_queries:  # the sentence-vector model's model.json as before
            config = {k: v for k, v in config.items() if not k.startswith("word_")}
        spec = {
            "family": FAMILY,
            "config": config,
            "training": self.training_record,
        }
        (folder / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
