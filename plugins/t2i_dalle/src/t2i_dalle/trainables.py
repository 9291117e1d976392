"""The two stages of DALL-E as models of the core loop (:func:`t2i.training.train`).

:class:`DVAETrainable` (stage 1, Ramesh et al. 2021 section 2.1): the encoder's logits are
relaxed with Gumbel-softmax at a temperature annealed from 1 to ``tau_min`` (cosine, over
``anneal_steps``); the decoder reads the relaxed one-hot map and gives a logit-Laplace
distribution per pixel (location ``mu``, log-scale ``ln b``) of the ``map_pixels`` image;
the loss is its negative log-likelihood plus ``beta`` times the KL of the encoder's
categorical to the uniform prior, ``beta`` rising linearly from 0 to ``kl_weight`` over
``kl_warmup`` steps (the paper: 0 -> 6.6 over 5,000 updates). Both terms are per pixel
channel (the KL's sum over cells divided by ``3 H W``). The step counter is a persistent buffer,
so a resumed run continues both schedules.

:class:`PriorTrainable` (stage 2): the transformer on argmax dVAE tokens of the images and the
caption's word ids, ``(CE_text + 7 CE_image) / 8``; a share ``uncond_prob`` of captions is
replaced by the empty prompt, which super-conditioning uses as the unconditional side.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from t2i.checkpoints import save_safetensors
from t2i_dalle.checkpoint import DVAE_FILE, TRANSFORMER_FILE, write_spec
from t2i_dalle.dvae import Decoder, DVAEConfig, Encoder, map_pixels


@attrs.frozen
class DVAESchedule:
    """Temperature and KL-weight schedules of dVAE training (in optimizer steps)."""

    tau_min: float = 1 / 16
    anneal_steps: int = 2000
    kl_weight: float = 6.6
    kl_warmup: int = 500
    anneal_seconds: float | None = None
    """When set, the anneal also ends after this much training time (a time-boxed run)."""
    diversity_weight: float = 0.0
    """Weight of the codebook-use term (:func:`codebook_diversity`); 0 is the paper's loss."""

    def progress(self, step: int, seconds: float = 0.0) -> float:
        frac = step / max(1, self.anneal_steps)
        if self.anneal_seconds:
            frac = max(frac, seconds / self.anneal_seconds)
        return min(1.0, frac)

    def tau(self, step: int, seconds: float = 0.0) -> float:
        frac = self.progress(step, seconds)
        return self.tau_min + (1 - self.tau_min) * 0.5 * (1 + math.cos(math.pi * frac))

    def beta(self, step: int) -> float:
        return self.kl_weight * min(1.0, step / max(1, self.kl_warmup))


def logit_laplace_nll(x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Mean NLL of ``x`` (in ``map_pixels`` range) under the logit-Laplace ``(mu, ln b)``.

    ``p(x) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x))`` (the paper's equation 1).
    """
    c = x.shape[1]
    mu, ln_b = stats[:, :c].float(), stats[:, c:].float().clamp(min=-7.0)
    y = torch.logit(x)
    nll = (y - mu).abs() * torch.exp(-ln_b) + ln_b + math.log(2.0) + torch.log(x * (1 - x))
    return nll.mean()


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """``KL(q || uniform)`` per cell, summed over cells, mean over the batch."""
    logq = F.log_softmax(logits.float(), 1)
    kl = (logq.exp() * (logq + math.log(logits.shape[1]))).sum(1)
    return kl.flatten(1).sum(1).mean()


def codebook_diversity(logits: torch.Tensor) -> torch.Tensor:
    """``1 - H(mean q) / ln K``: 0 when the batch uses every code equally, 1 when one code.

    ``mean q`` is the encoder's softmax averaged over the batch's cells; the term is the
    codebook-use penalty of Gumbel-softmax quantisers (wav2vec 2.0's diversity loss, Baevski
    et al. 2020, eq. 4, in entropy form). The KL to the uniform prior acts on each cell and
    lets the batch collapse onto a few codes; this term acts on their aggregate.
    """
    mean_q = F.softmax(logits.float(), 1).mean(dim=(0, *range(2, logits.dim())))
    entropy = -(mean_q * torch.log(mean_q.clamp_min(1e-12))).sum()
    return 1 - entropy / math.log(logits.shape[1])


class DVAETrainable(nn.Module):
    """Stage 1: the dVAE; batches are uint8 images ``(B, 3, S, S)``."""

    def __init__(self, config: DVAEConfig, schedule: DVAESchedule, training: dict | None = None):
        super().__init__()
        self.config, self.schedule = config, schedule
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("seconds", torch.zeros((), dtype=torch.float64))  # training time
        self._clock: float | None = None
        self.training_record = dict(training or {})
        self.last: dict[str, float] = {}

    def trainable_parameters(self):
        return self.parameters()

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        x = map_pixels(images.float() / 255.0)
        step = int(self.step)
        tau, beta = self.schedule.tau(step, float(self.seconds)), self.schedule.beta(step)
        logits = self.encoder(x)
        soft = F.gumbel_softmax(logits.float(), tau=tau, dim=1).to(logits.dtype)
        nll = logit_laplace_nll(x, self.decoder(soft))
        kl = kl_to_uniform(logits) / x[0].numel()
        loss = nll + beta * kl
        diversity = codebook_diversity(logits)
        if self.schedule.diversity_weight:
            loss = loss + self.schedule.diversity_weight * diversity
        if self.training:
            self._tick()
            self._metrics = (nll.detach(), kl.detach(), diversity.detach(), logits.detach())
        return loss

    def logged_metrics(self) -> dict[str, float]:
        """The last step's NLL, KL, codebook-use term, codes used and temperature."""
        if getattr(self, "_metrics", None) is None:
            return {}
        nll, kl, diversity, logits = self._metrics
        step = int(self.step)
        return {
            "nll": float(nll), "kl": float(kl), "diversity": float(diversity),
            "codes_used": int(torch.unique(logits.argmax(1)).numel()),
            "tau": self.schedule.tau(step, float(self.seconds)),
        }  # fmt: skip

    def _tick(self) -> None:
        """Advance the schedules' step and training-time counters (pauses over 5 s skipped)."""
        now = time.monotonic()
        if self._clock is not None:
            self.seconds += min(now - self._clock, 5.0)
        self._clock = now
        self.step += 1

    @torch.no_grad()
    def reconstruction_error(self, images: torch.Tensor) -> float:
        """Mean |x - decode(argmax tokens)| in [0, 1] pixels (the hard path used at inference)."""
        x = images.float() / 255.0
        return float((self.decoder.images(self.encoder.tokens(x)) - x).abs().mean())

    def save(self, folder: Path) -> None:
        """``dvae.safetensors`` (fp16) + ``dalle.json`` (no transformer yet)."""
        folder = Path(folder)
        state = {f"encoder.{k}": v.half() for k, v in self.encoder.state_dict().items()}
        state.update({f"decoder.{k}": v.half() for k, v in self.decoder.state_dict().items()})
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(state, folder / DVAE_FILE)
        write_spec(
            folder,
            dvae=attrs.asdict(self.config),
            transformer=None,
            words=self.training_record.get("words", []),
            training={"vae": self.training_record},
        )


class PriorTrainable(nn.Module):
    """Stage 2: the transformer; batches are ``(text ids (B, T), image tokens (B, N))``."""

    def __init__(self, transformer: nn.Module, *, uncond_ids: torch.Tensor, uncond_prob: float,
                 pad: int, folder_spec: dict, dvae_file: Path) -> None:  # fmt: skip
        super().__init__()
        self.transformer = transformer
        self.register_buffer("uncond_ids", uncond_ids.clone(), persistent=False)
        self.uncond_prob, self.pad = float(uncond_prob), int(pad)
        self.folder_spec, self.dvae_file = dict(folder_spec), Path(dvae_file)
        self.last: dict[str, float] = {}

    def trainable_parameters(self):
        return self.transformer.parameters()

    def loss(self, batch) -> torch.Tensor:
        text, image = batch
        if self.uncond_prob > 0:
            drop = torch.rand(text.shape[0], device=text.device) < self.uncond_prob
            text = torch.where(drop[:, None], self.uncond_ids.to(text.device), text)
        return self.transformer.loss(text, image, text_pad=self.pad)[0]

    def save(self, folder: Path) -> None:
        """The full model folder: the dVAE it was trained on, the transformer, the spec."""
        import shutil

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.dvae_file.resolve() != (folder / DVAE_FILE).resolve():
            shutil.copyfile(self.dvae_file, folder / DVAE_FILE)
        state = {k: v.half() for k, v in self.transformer.state_dict().items()}
        save_safetensors(state, folder / TRANSFORMER_FILE)
        spec = dict(self.folder_spec)
        spec["transformer"] = attrs.asdict(self.transformer.config)
        write_spec(folder, **{k: v for k, v in spec.items() if k != "family"})
