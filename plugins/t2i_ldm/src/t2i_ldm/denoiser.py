"""The denoiser component of the LDM family: the SD UNet as a Karras denoiser.

SD is a discrete-time DDPM model (Ho et al. 2020) trained on 1000 ``scaled_linear``
timesteps (betas 0.00085..0.012). :class:`LdmDenoiser` maps a sigma to a fractional
timestep, scales the input by ``1 / sqrt(sigma^2 + 1)`` and turns the UNet's epsilon or
v prediction into ``x0`` through :class:`t2i.diffusion.sampling.denoisers.DiscreteDenoiser`
(Karras et al. 2022, table 1; Salimans & Ho 2022 for v).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch

from t2i.contracts import ExportSpec
from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning
from t2i_ldm.config import NoiseScheduleConfig

if TYPE_CHECKING:
    from t2i_ldm.deepcache import DeepCache
    from t2i_ldm.unet import UNetModel

_NOT_IN_DIFFUSERS = ("context_pool.",)
"""UNet submodules of this plugin that diffusers' UNet2DConditionModel lacks."""


@attrs.frozen
class MicroConditioning:
    """SDXL's micro-conditioning numbers (Podell et al. 2023, arXiv 2307.01952, section 2.2).

    The base model embeds ``(original_h, original_w, crop_top, crop_left, target_h,
    target_w)``, the refiner ``(original_h, original_w, crop_top, crop_left,
    aesthetic_score)``. Sizes default to the image being made (latent size times
    ``factor``), as A1111 and diffusers do.

    Attributes:
        factor: pixels per latent cell (the VAE's, 8).
        original_size: ``(h, w)``, or None for the image size.
        crop_top_left: ``(top, left)`` (A1111's ``sdxl_crop_top`` / ``sdxl_crop_left``: 0).
        target_size: ``(h, w)``, or None for the image size.
        aesthetic_score: the refiner's score for the prompt (A1111 and diffusers: 6.0).
        negative_aesthetic_score: the refiner's score for the negative prompt (2.5); a
            conditioning carries it in ``micro`` when the graph sets one.
    """

    factor: int = 8
    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    aesthetic_score: float = 6.0
    negative_aesthetic_score: float = 2.5

    def values(self, shape: tuple[int, ...], count: int, *, negative: bool = False) -> list:
        """The ``count`` (6: base, 5: refiner) numbers for a ``(B, C, h, w)`` latent."""
        size = (shape[2] * self.factor, shape[3] * self.factor)
        head = [*(self.original_size or size), *self.crop_top_left]
        if count == 6:
            return [*head, *(self.target_size or size)]
        if count == 5:
            score = self.negative_aesthetic_score if negative else self.aesthetic_score
            return [*head, score]
        raise ValueError(
            f"an SDXL UNet embeds 6 (base) or 5 (refiner) micro-conditioning numbers; this "
            f"one's label_emb width asks for {count}: the text encoder does not match the UNet"
        )


def micro_numbers(
    micro: MicroConditioning, shape: tuple[int, ...], count: int, cond: object
) -> torch.Tensor:
    """SDXL's ``(B, count)`` float32 micro-conditioning numbers for a ``(B, C, h, w)`` latent:
    ``micro``'s, or the conditioning's own ``micro`` (all ``count``, or the refiner's score)."""
    b = shape[0]
    numbers = torch.tensor([micro.values(shape, count)], dtype=torch.float32).expand(b, -1)
    own = getattr(cond, "micro", None)  # the conditioning's: (B, K), or the score (B, 1)
    if own is None:
        return numbers
    own = own.to(torch.float32).expand(b, -1) if own.shape[0] == 1 else own.float()
    if own.shape[-1] == count:
        return own
    if own.shape[-1] == 1 and count == 5:
        return torch.cat([numbers[:, :4], own.cpu()], dim=1)
    raise ValueError(
        f"conditioning micro numbers of shape {tuple(own.shape)} do not fit this UNet's {count}"
    )


class UNetPredictor:
    """``(x_in, t, cond) -> prediction`` for :class:`DiscreteDenoiser`: calls the UNet with
    ``cond.embeds`` as cross-attention context (SD ignores the padding mask); an SDXL UNet
    also gets ``cond.pooled`` and the :class:`MicroConditioning` numbers (``label_emb``);
    with a :class:`~t2i_ldm.deepcache.DeepCache` the UNet runs through it; with ``control``
    (:class:`~t2i_ldm.controlnet_apply.ControlSteering` units) their residuals, computed on
    the latent alone and summed (diffusers' ``MultiControlNetModel``), go into the UNet; with
    an ``image_prompt`` (:class:`~t2i_ldm.ip_adapter.ImagePrompt`) its steered UNet copy runs,
    each row's image tokens after the text context."""

    def __init__(
        self,
        unet: UNetModel,
        micro: MicroConditioning | None = None,
        deepcache: DeepCache | None = None,
        control: tuple[Any, ...] = (),
        image_prompt: Any = None,
    ) -> None:
        self.unet = unet
        self.micro = micro or MicroConditioning()
        self.deepcache = deepcache
        self.control = tuple(control)
        self.image_prompt = image_prompt

    def evolve(self, **changes: Any) -> UNetPredictor:
        """A predictor of the same UNet with ``changes`` (``control``, ``image_prompt``)."""
        fields = {"micro": self.micro, "deepcache": self.deepcache, "control": self.control,
                  "image_prompt": self.image_prompt, **changes}  # fmt: skip
        return UNetPredictor(self.unet, **fields)

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning | torch.Tensor
    ) -> torch.Tensor:
        context = cond.embeds if isinstance(cond, Conditioning) else cond
        y = self.vector(x, cond) if self.unet.config.adm_in_channels else None
        from t2i_ldm.inpaint import concat_image_condition  # an inpainting UNet's 5 channels

        context = context.to(x.device)
        negative = cond.negative if isinstance(cond, Conditioning) else None
        residuals = self._residuals(x, t, context, y, negative)
        x = concat_image_condition(self.unet, x, cond)
        unet = self.unet
        if self.image_prompt is not None:
            unet = self.image_prompt.unet
            context = self.image_prompt.extend(context, negative)
        if self.deepcache is not None:
            if self.control:
                raise ValueError("DeepCache skips the blocks a ControlNet steers: use one")
            return self.deepcache(unet, x, t, context, y)
        if residuals is not None:
            return unet(x, t, context, y, control=residuals)
        return unet(x, t, context, y)

    def _residuals(self, x, t, context, y: Any, negative: Any) -> list[torch.Tensor] | None:
        """The control units' residuals summed, or None when none steers this step
        (``negative``: the negative prompt's rows of a guidance batch, or None)."""
        total = None
        for unit in self.control:
            found = unit(x, t, context, y, negative)
            if found is not None:
                total = found if total is None else [a + b for a, b in zip(total, found)]
        return total

    def vector(self, x: torch.Tensor, cond: Conditioning | torch.Tensor) -> torch.Tensor:
        """SDXL's ``(B, adm_in_channels)`` label_emb input for latents ``x``."""
        from t2i_ldm.unet import sdxl_vector

        pooled = cond.pooled if isinstance(cond, Conditioning) else None
        if pooled is None:
            raise ValueError(
                "an SDXL UNet needs the pooled text embedding (Conditioning.pooled): use the "
                "checkpoint's SDXL text encoder"
            )
        cfg = self.unet.config
        rest = cfg.adm_in_channels - pooled.shape[-1]
        if rest <= 0 or rest % cfg.micro_embed_dim:
            raise ValueError(
                f"pooled text of width {pooled.shape[-1]} does not fit this UNet's label_emb "
                f"({cfg.adm_in_channels} = pooled + n * {cfg.micro_embed_dim}): the text "
                "encoder does not match the UNet"
            )
        b = x.shape[0]
        pooled = pooled.to(x.device).expand(b, -1) if pooled.shape[0] == 1 else pooled
        micro = micro_numbers(self.micro, tuple(x.shape), rest // cfg.micro_embed_dim, cond)
        return sdxl_vector(pooled.to(x.device), micro.to(x.device), cfg.micro_embed_dim)


class LdmDenoiser(DiscreteDenoiser):
    """``D(x, sigma, cond) -> x0`` for an SD UNet (a :class:`t2i.contracts.KarrasDenoiser`).

    Args:
        unet: the UNet.
        prediction_type: "epsilon" (SD1, SD2-512) or "v_prediction" (SD2-768-v).
        schedule: the trained noise schedule (SD default: scaled_linear, 1000 steps).
        quantize: round timesteps to trained ones (k-diffusion ``quantize``).
        micro: SDXL's size / crop / aesthetic numbers (:class:`MicroConditioning`).
        deepcache: reuse deep UNet features across steps (:mod:`t2i_ldm.deepcache`, opt-in).

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
        micro: MicroConditioning | None = None,
        deepcache: DeepCache | None = None,
    ) -> None:
        schedule = schedule or NoiseScheduleConfig()
        super().__init__(
            UNetPredictor(unet, micro, deepcache),
            schedule.alphas_cumprod(),
            prediction_type,
            quantize=quantize,
        )
        self.unet = unet
        self.schedule = schedule
        self.deepcache = deepcache

    def with_control(self, control: Any) -> LdmDenoiser:
        """This denoiser (the same UNet) with a ControlNet's ``control`` steering each call
        besides any unit already steering it (:mod:`t2i_ldm.controlnet_apply`)."""
        import copy

        if self.deepcache is not None:
            raise ValueError(
                "DeepCache skips the UNet blocks a ControlNet steers: drop deepcache or the "
                "controlnet"
            )
        steered = copy.copy(self)
        steered.model = self.model.evolve(control=(*self.model.control, control))
        return steered

    def with_image_prompt(self, prompt: Any) -> LdmDenoiser:
        """This denoiser with an IP-Adapter's image prompt (:mod:`t2i_ldm.ip_adapter_apply`)."""
        import copy

        if self.model.image_prompt is not None:
            raise ValueError("one IP-Adapter at a time: this denoiser already has one")
        steered = copy.copy(self)
        steered.model = self.model.evolve(image_prompt=prompt)
        return steered

    def reset_step_cache(self) -> None:
        """Start a new sampling run: drop DeepCache's features (nothing when it is off)."""
        if self.deepcache is not None:
            self.deepcache.reset()

    def to(self, device=None, dtype=None) -> LdmDenoiser:
        """Move the UNet (the sigma tables follow the input's device on their own)."""
        self.unet.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``unet``: ``(sample, timestep, encoder_hidden_states) -> out_sample``, the call this
        denoiser makes inside its Karras wrapper (Optimum's layout, see :mod:`t2i_ldm.export`);
        an SDXL UNet also takes ``text_embeds`` and ``time_ids`` (:mod:`t2i_ldm.sdxl_export`)."""
        from t2i_ldm.export import denoiser_deployment, unet_export

        if self.model.image_prompt is not None:
            raise ValueError(
                "ONNX export of an IP-Adapter UNet is not implemented yet: export the checkpoint "
                "without ip_adapter=, or run the IP-Adapter with the torch runtime"
            )
        if self.model.control:
            raise ValueError(
                "ONNX export of a ControlNet-steered UNet is not implemented yet: export the "
                "checkpoint without controlnet=, or run the ControlNet with the torch runtime"
            )

        if self.unet.config.in_channels != self.unet.config.out_channels:
            raise ValueError(
                f"ONNX export of an inpainting UNet ({self.unet.config.in_channels}-channel input: "
                "the latent + mask + masked-image latent) is not implemented yet; export the "
                "ordinary checkpoint, or run the inpainting one with the torch runtime"
            )

        if self.unet.config.adm_in_channels:  # SDXL: + text_embeds, time_ids
            from t2i_ldm.sdxl_export import micro_count, sdxl_denoiser_deployment, sdxl_unet_export

            pooled, count = micro_count(self.unet)
            export = sdxl_unet_export(self.unet, pooled, count)
            deployment = sdxl_denoiser_deployment(self, pooled, count)
            return ExportSpec((export,), deployment=deployment)
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
