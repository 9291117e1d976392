"""Payloads that travel along graph edges: frozen attrs classes, never dicts.

Each payload type has a socket name (``CONDITIONING``, ``LATENT`` ...) used by
graph ports. Tensors are batch-first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # torch is imported where a payload is built, not when t2i is imported
    import torch


def _optional_tensor(_inst, attribute, value):
    import torch

    if value is not None and not isinstance(value, torch.Tensor):
        raise TypeError(f"{attribute.name} must be a torch.Tensor or None, got {type(value)}")


def _tensor(_inst, attribute, value):
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{attribute.name} must be a torch.Tensor, got {type(value)}")


@attrs.frozen(eq=False)
class Tokens:
    """Token ids of a batch of prompts.

    Attributes:
        ids: ``(B, T)`` int64 token ids.
        weights: ``(B, T)`` float emphasis weight per token (1.0 = neutral), or None.
        mask: ``(B, T)`` bool, True where the token is real (not padding), or None.
        pad_chunk: ``(1, L)`` ids of the chunk that lengthens these tokens in whole chunks
            (a chunking tokenizer's empty prompt: A1111's empty chunk), or None. A text
            encoder encodes it into :attr:`Conditioning.pad_chunk`.
    """

    ids: torch.Tensor = attrs.field(validator=_tensor)
    weights: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    mask: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    pad_chunk: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])


def _move(t: torch.Tensor | None, device, dtype) -> torch.Tensor | None:
    if t is None:
        return None
    return t.to(device=device, dtype=dtype if t.is_floating_point() else None)


def _expand(t: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    return None if t is None else t.expand(batch, *t.shape[1:])


@attrs.frozen(eq=False)
class ImageCondition:
    """A cascade's low-resolution image, given to a super-resolution denoiser (or any image
    a denoiser is conditioned on by concatenation: an SD inpainting UNet's mask + masked-image
    latent, ``t2i_ldm.inpaint``).

    Imagen (Saharia et al. 2022, section 2.5) and DeepFloyd IF condition each
    super-resolution stage on the previous stage's output, noised at an augmentation
    level the model also receives (noise conditioning augmentation).

    Attributes:
        image: ``(B, C, h, w)`` low-resolution image in the model's data range ([-1, 1]).
        noise_level: ``(B,)`` augmentation level per row, in the units the model was
            trained with (IF: a timestep in 0..1000; Imagen: a fraction in [0, 1]).
        seeds: the seed of each row, for models that draw the augmentation noise.
    """

    image: torch.Tensor = attrs.field(validator=_tensor)
    noise_level: torch.Tensor = attrs.field(validator=_tensor)
    seeds: tuple[int, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.noise_level.shape != (self.image.shape[0],):
            raise ValueError(
                f"noise_level must have shape ({self.image.shape[0]},) to match the image "
                f"batch, got {tuple(self.noise_level.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])

    def repeat_to(self, batch: int) -> ImageCondition:
        if self.batch_size == batch:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot repeat an image condition of batch {self.batch_size}")
        return ImageCondition(_expand(self.image, batch), _expand(self.noise_level, batch))

    def to(self, device=None, dtype=None) -> ImageCondition:
        return ImageCondition(
            _move(self.image, device, dtype), _move(self.noise_level, device, dtype), self.seeds
        )

    @staticmethod
    def cat(items: list[ImageCondition]) -> ImageCondition:
        import torch

        return ImageCondition(
            torch.cat([c.image for c in items]),
            torch.cat([c.noise_level for c in items]),
            tuple(s for c in items for s in c.seeds),
        )


@attrs.frozen(eq=False)
class Conditioning:
    """What a text encoder gives a model.

    Attributes:
        embeds: ``(B, T, D)`` per-token states (cross-attention context).
        pooled: ``(B, D')`` pooled embedding, or None.
        mask: ``(B, T)`` bool attention mask (True = attend), or None.
        image: the low-resolution image of a cascade stage (:class:`ImageCondition`), or
            None; the sampling node attaches it to the prompt's and the negative's.
        pad_chunk: ``(1, L, D)`` states that lengthen ``embeds`` in whole repeats (the
            encoding of an empty prompt's chunk), or None. :meth:`cat` pads a shorter item
            with it instead of zeros: A1111's rule for a prompt and a negative prompt of
            different chunk counts (``pad_cond_uncond``), for models without an attention
            mask (Stable Diffusion's cross-attention attends to every position).
        micro: ``(B, K)`` numbers a denoiser embeds beside the text for this conditioning
            (SDXL's refiner: the aesthetic score, 6.0 for the prompt and 2.5 for the
            negative), or None for the denoiser's defaults.
        negative: ``(B,)`` bool, True for the rows that are the negative prompt's in a
            guidance batch (set by classifier-free guidance on ``[cond; uncond]``), or None
            when every row is a prompt's: what a model that steers the prompt's rows alone
            reads (A1111's ControlNet "ControlNet is more important").
    """

    embeds: torch.Tensor = attrs.field(validator=_tensor)
    pooled: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    mask: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    image: ImageCondition | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(ImageCondition)),
    )
    pad_chunk: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    micro: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)
    negative: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    def repeat_to(self, batch: int) -> Conditioning:
        """Repeat a batch-1 conditioning to ``batch`` rows (a batch of one prompt)."""
        if self.batch_size == batch and (self.image is None or self.image.batch_size == batch):
            return self
        if self.batch_size not in (1, batch):
            raise ValueError(f"cannot repeat a conditioning of batch {self.batch_size} to {batch}")
        image = None if self.image is None else self.image.repeat_to(batch)
        if self.batch_size == batch:
            return attrs.evolve(self, image=image)
        e = lambda t: _expand(t, batch)  # noqa: E731
        return Conditioning(
            e(self.embeds), e(self.pooled), e(self.mask), image, self.pad_chunk, e(self.micro),
            e(self.negative),
        )  # fmt: skip

    def with_image(self, image: ImageCondition | None) -> Conditioning:
        """This conditioning with ``image`` attached (a cascade's super-resolution stage)."""
        return attrs.evolve(self, image=image)

    def to(self, device=None, dtype=None) -> Conditioning:
        image = None if self.image is None else self.image.to(device, dtype)
        m = lambda t: _move(t, device, dtype)  # noqa: E731
        return Conditioning(
            m(self.embeds), m(self.pooled), m(self.mask), image, m(self.pad_chunk), m(self.micro),
            m(self.negative),
        )  # fmt: skip

    def padded_to(self, length: int) -> Conditioning | None:
        """This conditioning lengthened to ``length`` tokens with whole :attr:`pad_chunk`
        repeats, or None when it has no pad chunk or the gap is not whole chunks."""
        import torch

        gap = length - self.embeds.shape[1]
        if gap == 0:
            return self
        if self.pad_chunk is None or gap < 0 or gap % self.pad_chunk.shape[1]:
            return None
        filler = self.pad_chunk.to(self.embeds.device, self.embeds.dtype)
        filler = filler.expand(self.batch_size, -1, -1).repeat(1, gap // filler.shape[1], 1)
        mask = self.mask
        if mask is not None:
            mask = torch.nn.functional.pad(mask, (0, gap), value=True)
        return attrs.evolve(self, embeds=torch.cat([self.embeds, filler], dim=1), mask=mask)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch. A shorter token axis is lengthened with its
        :attr:`pad_chunk` (A1111's empty-chunk padding) when it has one and the gap is whole
        chunks; otherwise it is zero-padded and masked out.

        Image conditions are concatenated too (all items have one, or none has)."""
        import torch

        length = max(c.embeds.shape[1] for c in items)
        items = [c.padded_to(length) or c for c in items]
        embeds, masks, pooled = [], [], []
        any_mask = any(c.mask is not None for c in items) or any(
            c.embeds.shape[1] != length for c in items
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
        images = [c.image for c in items]
        if any(i is not None for i in images) and not all(i is not None for i in images):
            raise ValueError("cannot concatenate conditionings with and without an image")
        chunks = [c.pad_chunk for c in items]
        same = all(p is not None and p.shape == chunks[0].shape for p in chunks)
        micro = [c.micro for c in items]
        if any(m is not None for m in micro) and not all(m is not None for m in micro):
            raise ValueError("cannot concatenate conditionings with and without micro numbers")
        return Conditioning(
            torch.cat(embeds),
            torch.cat(pooled) if has_pooled else None,
            torch.cat(masks) if any_mask else None,
            ImageCondition.cat(images) if images[0] is not None else None,
            chunks[0] if same else None,
            torch.cat(micro) if micro[0] is not None else None,
        )


@attrs.frozen
class SeedVariation:
    """A1111's variation seeds of a batch (``subseed``, ``subseed_strength``,
    ``seed_resize_from_w/h``); :class:`t2i.noise.BatchNoise` draws the noise by them.

    Attributes:
        subseeds: the variation seed of each row.
        strength: slerp weight toward the subseed's noise, in [0, 1] (0 = none).
        resize_from: ``(h, w)`` in sample cells to draw the seed noise at, or None.
    """

    subseeds: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    strength: float = 0.0
    resize_from: tuple[int, int] | None = None

    def noise_options(self) -> dict:
        """Keyword options of :class:`t2i.noise.BatchNoise`."""
        return {
            "subseeds": self.subseeds,
            "subseed_strength": self.strength,
            "resize_from": self.resize_from,
        }


@attrs.frozen(eq=False)
class Latent:
    """A batch in a model's sample space (VAE latents, pixels, or noise ``z``).

    Attributes:
        samples: ``(B, C, H, W)`` tensor (``(B, D)`` for a GAN's ``z``).
        seeds: the seed of each row, when the latent was drawn from seeds.
        variation: variation seeds of the batch's noise (A1111's subseeds), or None.
        mask: an img2img start sample's inpainting mask at the sample's size, ``(1 or B, 1,
            H, W)`` of 0 / 1 (1 = resample, 0 = keep these samples), or None (ComfyUI's
            ``noise_mask``): the diffusion sampler blends its prediction with the start
            sample outside it after every step (A1111's rule).
    """

    samples: torch.Tensor = attrs.field(validator=_tensor)
    seeds: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    variation: SeedVariation | None = None
    mask: torch.Tensor | None = attrs.field(default=None, validator=_optional_tensor)


@attrs.frozen(eq=False)
class Image:
    """A batch of images: ``pixels`` is ``(B, 3, H, W)`` float in [0, 1]."""

    pixels: torch.Tensor = attrs.field(validator=_tensor)

    def to_pil(self) -> list:
        """Convert to a list of RGB ``PIL.Image.Image`` (rounded, clamped)."""
        import torch
        from PIL import Image as PILImage

        arr = (self.pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).cpu().numpy()
        return [PILImage.fromarray(a, mode="RGB") for a in arr]

    @staticmethod
    def from_pil(images) -> Image:
        """Build from one PIL image or a list of equally sized ones."""
        import numpy as np
        import torch

        if not isinstance(images, (list, tuple)):
            images = [images]
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
        return Image(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0)


@attrs.frozen(eq=False)
class Mask:
    """An inpainting mask, processed as A1111 does (:func:`t2i.masking.prepare`), and how the
    generated image goes back into the init image.

    Attributes:
        pixels: ``(1, 1, H, W)`` in [0, 1] at the sampled image's size (the crop's, for "only
            masked"), blurred: 1 = repaint, 0 = keep.
        base: the image the result is pasted into (``Image``, the init image's size for "only
            masked", else the request's).
        overlay: ``(1, 1, H0, W0)`` in [0, 1] at the base's size: how much of the generated
            image each pixel takes in the paste-back.
        box: ``(x1, y1, x2, y2)``, the region of ``base`` the sampled image fills, or None.
    """

    pixels: torch.Tensor = attrs.field(validator=_tensor)
    base: Image
    overlay: torch.Tensor = attrs.field(validator=_tensor)
    box: tuple[int, int, int, int] | None = None


@attrs.frozen(eq=False)
class Sigmas:
    """A diffusion schedule to run: ``sigmas`` descending ``(n + 1,)`` float64, ending with 0.

    ``steps`` is the requested step count (img2img runs only the schedule's tail).
    """

    sigmas: torch.Tensor = attrs.field(validator=_tensor)
    steps: int = 0


@attrs.frozen(eq=False)
class GuidedModel:
    """A model, its conditioning and a guidance component, bound by the ``Guide`` node.

    The sampling node calls :meth:`bind` once it knows the batch, device and dtype.

    Attributes:
        model: the unguided model component (any generation shape).
        guidance: the guidance component (``wrap(model, uncond=..., scale=...)``).
        positive, negative: the prompt's and the negative prompt's conditioning, or None.
        scale: the guidance scale.
        name: the guidance's registered name, for messages.
    """

    model: object
    guidance: object
    positive: Conditioning | None = None
    negative: Conditioning | None = None
    scale: float = 1.0
    name: str = ""

    def bind(self, batch: int, device=None, dtype=None) -> tuple[object, Conditioning | None]:
        """``(guided model, positive conditioning)`` for a batch of ``batch`` rows.

        Both conditionings are repeated to ``batch`` rows and moved to ``device``/``dtype``
        first; the guided model closes over the negative one.
        """

        def place(c: Conditioning | None) -> Conditioning | None:
            return None if c is None else c.repeat_to(batch).to(device, dtype)

        guided = self.guidance.wrap(self.model, uncond=place(self.negative), scale=self.scale)
        return guided, place(self.positive)


SOCKET_TYPES: dict[str, type | None] = {
    "TEXT": str,
    "INT": int,
    "FLOAT": float,
    "TOKENS": Tokens,
    "CONDITIONING": Conditioning,
    "LATENT": Latent,
    "IMAGE": Image,
    "MASK": Mask,
    "IMAGE_CONDITION": ImageCondition,
    "SIGMAS": Sigmas,
    "GUIDED_MODEL": GuidedModel,
    # component instances travel too: their Python type is the plugin's business
    "TOKENIZER": None,
    "TEXT_ENCODER": None,
    "DENOISER": None,
    "DECODER": None,
    "ANY": None,
}
