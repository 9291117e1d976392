"""DreamBooth's objective as a :class:`t2i.training.TrainableModel` for any diffusion family.

Ruiz et al. 2023, eq. 2: ``E[w_t |x^(a_t x + s_t e, c) - x|^2 + lambda w_t' |x^(a_t' x_pr +
s_t' e', c_pr) - x_pr|^2]``: the denoising loss on the subject's images with the instance
prompt, plus ``lambda`` (``--prior-loss-weight``) times the same loss on the frozen model's
class images with the class prompt. Each row's loss is the denoiser's own
``loss(x0, cond, *, noise, sigma)`` (its prediction target: epsilon, v, x0), at a sigma of
its trained table (uniform timestep, as diffusers) or, for a continuous model, log-uniform
in its range. Options: offset noise (``noise + offset * N(0, 1)`` per sample and channel,
Guttenberg 2023, diffusers' ``--offset_noise``) and Min-SNR-gamma weighting (Hang et al.
2023: ``min(SNR, gamma) / SNR`` for epsilon, ``/ (SNR + 1)`` for v; ``SNR = 1 / sigma^2``).

Images are encoded by the frozen decoder once (the posterior's mode); when the text encoder
is frozen the two prompts are encoded once too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from t2i.checkpoints import save_safetensors
from t2i.payloads import Conditioning
from t2i_dreambooth.adapters import TrainedPart


def _cond_to(cond: Conditioning, device: torch.device) -> Conditioning:
    def move(t):
        return None if t is None else t.to(device)

    return attrs.evolve(
        cond, embeds=move(cond.embeds), pooled=move(cond.pooled), mask=move(cond.mask)
    )


def _cat(a: Conditioning, b: Conditioning) -> Conditioning | None:
    """Rows of ``a`` then ``b`` (None when their shapes differ: run them apart)."""
    fields = {}
    for name in ("embeds", "pooled", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and x.shape[1:] != y.shape[1:]):
            return None
        fields[name] = None if x is None else torch.cat([x, y])
    return Conditioning(**fields)


def min_snr_weights(sigma: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) for losses in the prediction's own space."""
    snr = 1.0 / sigma.double().pow(2)
    weight = snr.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return (weight / (snr + 1)).float()
    if prediction_type == "sample":
        return weight.float()
    return (weight / snr).float()


class DreamBoothModel(nn.Module):
    """``loss((instance_rows, class_rows))``: the DreamBooth loss of one batch.

    Args:
        denoiser: the recipe's (a copy of it), trained in place.
        text_encoder: the recipe's; trained when ``text_part`` is given.
        parts: what trains (:func:`t2i_dreambooth.adapters.prepare`), denoiser first.
        instance_latents, class_latents: encoded images ``(N, C, h, w)`` (class: or None).
        instance_tokens, class_tokens: the two prompts' tokens (one row each).
        prior_loss_weight, offset_noise, snr_gamma: see the module docstring.
        export: ``export(folder)`` writes what the run folder holds besides the weights.
    """

    def __init__(
        self,
        *,
        denoiser: Any,
        text_encoder: Any,
        parts: list[TrainedPart],
        instance_latents: torch.Tensor,
        class_latents: torch.Tensor | None,
        instance_tokens: Any,
        class_tokens: Any,
        lora: bool,
        prior_loss_weight: float = 1.0,
        offset_noise: float = 0.0,
        snr_gamma: float | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # not submodules: what trains is registered once, in ``trained``; a frozen text
        # encoder that is an nn.Module must not bring its parameters into the optimizer
        self.__dict__.update(denoiser=denoiser, text_encoder=text_encoder)
        self.parts, self.lora = parts, lora
        self.trained = nn.ModuleDict(
            {p.kind: nn.ModuleDict({k or "module": m for k, m in p.modules.items()}) for p in parts}
        )
        self.register_buffer("instance_latents", instance_latents, persistent=False)
        self.register_buffer(
            "class_latents", class_latents if class_latents is not None else None, persistent=False
        )
        self.instance_tokens, self.class_tokens = instance_tokens, class_tokens
        self.train_text = any(p.kind == "text_encoder" for p in parts)
        self._conds: dict[str, Conditioning] = {}
        if not self.train_text:
            with torch.no_grad():
                self._conds = {"instance": text_encoder(instance_tokens)}
                if class_tokens is not None:
                    self._conds["class"] = text_encoder(class_tokens)
        self.prior_loss_weight, self.offset_noise = prior_loss_weight, offset_noise
        self.snr_gamma, self.record = snr_gamma, dict(record or {})
        sigmas = getattr(denoiser, "sigmas", None)
        table = torch.as_tensor(sigmas).float() if sigmas is not None else torch.zeros(0)
        self.register_buffer("sigma_table", table, persistent=False)
        self.prediction_type = getattr(denoiser, "prediction_type", "epsilon")

    # -- the contract ---------------------------------------------------------------------
    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Only what trains (the base weights come from the recipe again on resume)."""
        # copied to the host: a full fine-tune's copy on the GPU would raise its peak memory
        return {
            n: p.detach().to("cpu", copy=True)
            for n, p in self.named_parameters()
            if p.requires_grad
        }

    def load_state_dict(self, state: Any, strict: bool = True) -> Any:
        mine = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        misfit = [n for n in set(mine) & set(state) if mine[n].shape != state[n].shape]
        if missing or unexpected or misfit:
            raise ValueError(
                "the saved state holds other trained weights than this run trains "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {misfit[:3]}): "
                "resume with the options it was started with, or train into a new --output-dir"
            )
        with torch.no_grad():
            for n, p in mine.items():
                p.copy_(state[n])
        return None

    def _encode(self, which: str, rows: int, device: torch.device) -> Conditioning:
        if self.train_text:
            tokens = self.instance_tokens if which == "instance" else self.class_tokens
            encode = getattr(self.text_encoder, "encode", self.text_encoder)
            cond = encode(tokens)
        else:
            cond = self._conds[which]
        return _cond_to(cond, device).repeat_to(rows)

    def _sigmas(self, rows: int, device: torch.device) -> torch.Tensor:
        if self.sigma_table.numel():
            t = torch.randint(0, self.sigma_table.numel(), (rows,), device=device)
            return self.sigma_table[t]
        lo, hi = float(self.denoiser.sigma_min), float(self.denoiser.sigma_max)
        u = torch.rand(rows, device=device)
        return torch.exp(torch.log(torch.tensor(lo)) * (1 - u) + torch.log(torch.tensor(hi)) * u)

    def _losses(self, x0: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        noise = torch.randn_like(x0)
        if self.offset_noise:
            noise = noise + self.offset_noise * torch.randn(
                x0.shape[0], x0.shape[1], *([1] * (x0.ndim - 2)), device=x0.device
            )
        sigma = self._sigmas(x0.shape[0], x0.device)
        losses = self.denoiser.loss(x0, cond, noise=noise, sigma=sigma)
        if self.snr_gamma is not None:
            losses = losses * min_snr_weights(sigma, self.snr_gamma, self.prediction_type)
        return losses

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inst_rows, class_rows = batch
        device = self.instance_latents.device
        x_inst = self.instance_latents[inst_rows.to(device)]
        n = x_inst.shape[0]
        c_inst = self._encode("instance", n, device)
        if self.class_latents is None:
            return self._losses(x_inst, c_inst).mean()
        x_cls = self.class_latents[class_rows.to(device)]
        c_cls = self._encode("class", x_cls.shape[0], device)
        both = _cat(c_inst, c_cls)
        if both is not None:  # one forward pass, as diffusers concatenates the two halves
            inst, prior = self._losses(torch.cat([x_inst, x_cls]), both).split([n, len(x_cls)])
        else:
            inst, prior = self._losses(x_inst, c_inst), self._losses(x_cls, c_cls)
        return inst.mean() + self.prior_loss_weight * prior.mean()

    def save(self, folder: Path) -> None:
        """``lora.safetensors`` (diffusers layout) or ``<kind>.safetensors`` (full weights,
        what ``Engine.build(recipe, weights=folder)`` loads), and ``dreambooth.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        if self.lora:
            state = {k: v for p in self.parts for k, v in p.lora_state().items()}
            save_safetensors(state, folder / "lora.safetensors", metadata={"format": "pt"})
            files.append("lora.safetensors")
        else:
            for p in self.parts:
                state = nn.ModuleDict({k or "module": m for k, m in p.modules.items()})
                save_safetensors(state.state_dict(), folder / f"{p.kind}.safetensors")
                files.append(f"{p.kind}.safetensors")
        record = {**self.record, "files": files}
        (folder / "dreambooth.json").write_text(json.dumps(record, indent=1))
