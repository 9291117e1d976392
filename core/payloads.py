"""Payloads that travel along graph edges: frozen attrs classes, never dicts.

Each payload type has a socket name (``CONDITIONING``, ``LATENT`` ...) used by
graph ports. Tensors are batch-first.
"""

from __future__ import annotations

import attrs
import torch


def _optional_tensor(_inst, attribute, value):
    if value is not None and not isinstance(value, torch.Tensor):
        raise TypeError(f"{attribute.name} must be a torch.Tensor or None, got {type(value)}")


def _tensor(_inst, attribute, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{attribute.name} must be a torch.Tensor, got {type(value)}")


@attrs.frozen(eq=False)
class Tokens:
    """Token ids of a batch of prompts.

    Attributes:
        ids: ``(B, T)`` int64 token ids.
        weights: ``(B, T)`` float emphasis weight per token (1.0 = neutral), or None.
        mask: ``(B, T)`` bool, True where the token is real (not padding), or None.
    """

    ids: torch.Tensor = attrs.field(validator=_tensor)
    weights: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    mask: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])


@attrs.frozen(eq=False)
class Conditioning:
    """What a text encoder gives a denoiser.

    Attributes:
        embeds: ``(B, T, D)`` per-token states (cross-attention context).
        pooled: ``(B, D')`` pooled embedding, or None.
        mask: ``(B, T)`` bool attention mask (True = attend), or None.
    """

    embeds: torch.Tensor = attrs.field(validator=_tensor)
    pooled: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    mask: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    def repeat_to(self, batch: int) -> Conditioning:
        """Repeat a batch-1 conditioning to ``batch`` rows (a batch of one prompt)."""
        if self.batch_size == batch:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot repeat a conditioning of batch {self.batch_size} to {batch}")

        def rep(t):
            return None if t is None else t.expand(batch, *t.shape[1:])

        return Conditioning(rep(self.embeds), rep(self.pooled), rep(self.mask))

    def to(self, device=None, dtype=None) -> Conditioning:
        def f(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return Conditioning(f(self.embeds), f(self.pooled), f(self.mask))

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch; shorter token axes are zero-padded and masked out."""
        length = max(c.embeds.shape[1] for c in items)
        embeds, masks, pooled = [], [], []
        any_mask = (
            any(c.mask is not None for c in items) or len({c.embeds.shape[1] for c in items}) > 1
        )
        for c in items:
            b, t, _ = c.embeds.shape
            pad = length - t
            embeds.append(torch.nn.functional.pad(c.embeds, (0, 0, 0, pad)))
            if any_mask:
                m = (
                    c.mask
                    if c.mask is not None
                    else torch.ones(b, t, dtype=torch.bool, device=c.embeds.device)
                )
                masks.append(torch.nn.functional.pad(m, (0, pad), value=False))
            pooled.append(c.pooled)
        has_pooled = all(p is not None for p in pooled)
        return Conditioning(
            torch.cat(embeds),
            torch.cat(pooled) if has_pooled else None,
            torch.cat(masks) if any_mask else None,
        )


@attrs.frozen(eq=False)
class Latent:
    """A batch in a model's sample space (VAE latents, pixels, or noise ``z``).

    Attributes:
        samples: ``(B, C, H, W)`` tensor (``(B, D)`` for a GAN's ``z``).
        seeds: the seed of each row, when the latent was drawn from seeds.
    """

    samples: torch.Tensor = attrs.field(validator=_tensor)
    seeds: tuple[int, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen(eq=False)
class Image:
    """A batch of images: ``pixels`` is ``(B, 3, H, W)`` float in [0, 1]."""

    pixels: torch.Tensor = attrs.field(validator=_tensor)

    def to_pil(self) -> list:
        """Convert to a list of RGB ``PIL.Image.Image`` (rounded, clamped)."""
        from PIL import Image as PILImage

        arr = (self.pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).cpu().numpy()
        return [PILImage.fromarray(a, mode="RGB") for a in arr]

    @staticmethod
    def from_pil(images) -> Image:
        """Build from one PIL image or a list of equally sized ones."""
        import numpy as np

        if not isinstance(images, (list, tuple)):
            images = [images]
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
        return Image(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0)


SOCKET_TYPES: dict[str, type | None] = {
    "TEXT": str,
    "INT": int,
    "FLOAT": float,
    "TOKENS": Tokens,
    "CONDITIONING": Conditioning,
    "LATENT": Latent,
    "IMAGE": Image,
    # component instances travel too: their Python type is the plugin's business
    "TOKENIZER": None,
    "TEXT_ENCODER": None,
    "DENOISER": None,
    "DECODER": None,
    "ANY": None,
}
