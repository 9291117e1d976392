"""Hook implementations of the LDM family (entry point ``t2i`` -> ``ldm``).

Every component is registered by import path (:func:`t2i.registry.lazy`): discovering the
plugin imports neither torch nor transformers; a factory's module is imported when the
component is first made. Factories: :mod:`t2i_ldm.factories` (``ldm.unet``, ``ldm.vae``),
:mod:`t2i_ldm.recipes` (the ``ldm`` recipe, CLIP tokenizer and text encoder),
:mod:`t2i_ldm.shapes_model` (the embedded ``ldm-shapes`` default), :mod:`t2i_ldm.train`.
"""

from __future__ import annotations

from t2i.kinds import DIFFUSION
from t2i.registry import hookimpl, lazy


def _at(module: str, name: str, doc: str, **attributes) -> object:
    return lazy(f"t2i_ldm.{module}:{name}", doc=doc, **attributes)


@hookimpl
def t2i_register_tokenizers(register) -> None:
    register(
        "ldm.clip_tokenizer",
        _at("recipes", "create_clip_tokenizer", "CLIP BPE tokenizer of an SD checkpoint"),
        aliases=("clip-bpe",),
    )
    register(
        "ldm.shapes_tokenizer",
        _at("shapes_model", "create_tokenizer", "BPE tokenizer of the ldm-shapes model"),
    )


@hookimpl
def t2i_register_text_encoders(register) -> None:
    register(
        "ldm.clip_text_encoder",
        _at("recipes", "create_clip_text_encoder", "CLIP / OpenCLIP text encoder (SD1 / SD2)"),
        aliases=("clip",),
    )
    register(
        "ldm.shapes_text_encoder",
        _at("shapes_model", "create_text_encoder", "text encoder of the ldm-shapes model"),
    )


@hookimpl
def t2i_register_denoisers(register) -> None:
    doc = "SD UNet as a Karras denoiser (epsilon or v-prediction, SD discrete schedule)"
    register("ldm.unet", _at("factories", "create_unet_denoiser", doc), contract=DIFFUSION)
    register(
        "ldm.shapes_unet",
        _at("shapes_model", "create_denoiser", "the ldm-shapes UNet as a Karras denoiser"),
        contract=DIFFUSION,
    )


@hookimpl
def t2i_register_decoders(register) -> None:
    doc = "SD KL-f8 VAE decoder (latents scaled by 0.18215) with encode for img2img"
    register("ldm.vae", _at("factories", "create_vae_decoder", doc))
    register("ldm.shapes_vae", _at("shapes_model", "create_decoder", "the ldm-shapes VAE decoder"))


@hookimpl
def t2i_register_nodes(register) -> None:
    register(
        "Ldm.SetAestheticScore",
        _at("refiner", "SetAestheticScore", "SDXL refiner: a conditioning's aesthetic score"),
    )
    register(
        "Ldm.InpaintCondition",
        _at("inpaint", "InpaintCondition", "an inpainting UNet's mask + masked-image latent"),
    )
    register(
        "Ldm.ApplyControlNet",
        _at("controlnet_apply", "ApplyControlNet", "steer an SD UNet with a ControlNet"),
    )
    register(
        "Ldm.ApplyIPAdapter",
        _at("ip_adapter_apply", "ApplyIPAdapter", "prompt an SD UNet with an image (IP-Adapter)"),
    )


@hookimpl
def t2i_register_recipes(register) -> None:
    register(
        "ldm",
        _at("recipes", "ldm_recipe", "Stable Diffusion 1.x / 2.x / XL from a checkpoint"),
        aliases=("sd", "stable-diffusion"),
    )
    register(
        "ldm-shapes",
        _at("shapes_model", "ldm_shapes_recipe", "embedded default: ldm-shapes (64x64)"),
        default=True,
    )


@hookimpl
def t2i_register_trainers(register) -> None:
    doc = "Train the ldm-shapes latent diffusion model (VAE, then UNet + text encoder)."
    register("ldm", _at("train", "LdmTrainer", doc))
    doc = "Train a ControlNet for a Stable Diffusion checkpoint (the checkpoint frozen)."
    register("controlnet", _at("controlnet_train", "ControlNetTrainer", doc))
