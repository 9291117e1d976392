"""The options of one DreamBooth run, checked when they are made (before any model work).

Names and defaults follow diffusers' ``examples/dreambooth/train_dreambooth.py`` and
``train_dreambooth_lora.py`` (``--learning_rate`` 5e-6 full / 5e-4 LoRA, ``--rank`` 4,
``--prior_loss_weight`` 1.0, ``--num_class_images`` 100, ``--train_batch_size`` 4,
``--checkpointing_steps`` 500, ``--validation_steps`` 100, ``--max_grad_norm`` 1.0, AdamW
weight decay 1e-2), with dashes: a bad value raises :class:`DreamBoothOptionsError` naming
the command-line option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

PRECISIONS = {"no": "fp32", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
"""``--mixed-precision`` (diffusers' names) -> the core loop's precision."""
LORA_LR, FULL_LR = 5e-4, 5e-6
DENOISER_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
"""diffusers' LoRA targets in the UNet (attention projections)."""
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""diffusers' LoRA targets in the text encoder."""
RESUME_KEYS = (
    "recipe",
    "recipe_options",
    "instance_prompt",
    "class_prompt",
    "prior_preservation",
    "resolution",
    "train_text_encoder",
    "lora",
    "rank",
    "lora_targets",
    "batch_size",
    "grad_accum",
    "precision",
    "stage",
)
"""Options a resumed run must share with the run that saved the state."""


class DreamBoothOptionsError(ValueError):
    """Options that cannot work; the message names the option and the fix."""


def _check(test, option: str, need: str, fix: str):
    def validate(_instance: Any, _attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not test(value):
            raise DreamBoothOptionsError(f"{option} must be {need}, got {value!r}: {fix}")

    return validate


def _positive(option: str, fix: str):
    return _check(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, option, ">= 1", fix
    )


@attrs.frozen
class DreamBoothOptions:
    """One ``t2i dreambooth`` run (every field is an option of the command, dashed).

    Attributes:
        instance_dir: the subject's images (3-5 in the paper).
        instance_prompt: the prompt with the rare identifier, "a sks star".
        output_dir: the run folder: state, ``class_images/``, ``validation/``, ``model/``.
        recipe: the base model (any diffusion recipe); ``recipe_options`` its build options
            (``{"checkpoint": "sd15.safetensors"}``).
        class_prompt: "a star"; with ``prior_preservation`` the class images are made from it.
        prior_preservation: add the class-specific prior-preservation loss (paper eq. 2).
        prior_loss_weight: its lambda; ``num_class_images``: how many class images;
            ``class_dir``: where they are cached (default ``OUTPUT_DIR/class_images``);
            ``sample_batch_size``: images per generation call.
        resolution: training size in pixels (default: the recipe's default width).
        train_text_encoder: fine-tune the text encoder too.
        lora: train LoRA adapters (peft) instead of the full weights; ``rank`` (alpha =
            rank, as diffusers); ``lora_targets``: layer-name suffixes to adapt (default:
            attention projections, diffusers' targets).
        learning_rate: default 5e-6 (full) or 5e-4 (LoRA).
        steps, batch_size, grad_accum, precision, gradient_checkpointing, max_grad_norm:
            the loop's (``--max-train-steps`` ... of diffusers).
        checkpointing_steps: steps between saves of the resumable state.
        resume_from_checkpoint: "latest" continues the run in ``output_dir``.
        validation_prompts, validation_steps, num_validation_images: a grid PNG of the
            prompts every N steps in ``OUTPUT_DIR/validation/``.
        offset_noise: add ``offset * N(0, 1)`` per sample and channel to the noise
            (diffusers' ``--offset_noise`` uses 0.1); 0 turns it off.
        snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 recommended); None off.
        stage: the denoiser loader node to train in a recipe with several (a cascade);
            default: the first (the base stage).
        seed, device: the run's seed and device (default: CUDA when available).
    """

    instance_dir: str = attrs.field(converter=str)
    instance_prompt: str = attrs.field(
        validator=_check(lambda v: bool(v.strip()), "--instance-prompt", "text", "'a sks star'")
    )
    output_dir: str = attrs.field(converter=str)
    recipe: str = "ldm-shapes"
    recipe_options: dict[str, Any] = attrs.Factory(dict)
    class_prompt: str | None = None
    prior_preservation: bool = False
    prior_loss_weight: float = attrs.field(
        default=1.0, validator=_check(lambda v: v >= 0, "--prior-loss-weight", ">= 0", "1.0")
    )
    num_class_images: int = attrs.field(
        default=100, validator=_positive("--num-class-images", "100")
    )
    class_dir: str | None = None
    sample_batch_size: int = attrs.field(default=4, validator=_positive("--sample-batch-size", "4"))
    resolution: int | None = attrs.field(default=None, validator=_positive("--resolution", "512"))
    train_text_encoder: bool = False
    lora: bool = False
    rank: int = attrs.field(default=4, validator=_positive("--rank", "4"))
    lora_targets: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    learning_rate: float | None = attrs.field(
        default=None, validator=_check(lambda v: v > 0, "--learning-rate", "> 0", "e.g. 5e-6")
    )
    steps: int = attrs.field(default=400, validator=_positive("--max-train-steps", "400"))
    batch_size: int = attrs.field(default=4, validator=_positive("--train-batch-size", "4"))
    grad_accum: int = attrs.field(
        default=1, validator=_positive("--gradient-accumulation-steps", "1")
    )
    precision: str = attrs.field(
        default="no",
        validator=_check(lambda v: v in PRECISIONS, "--mixed-precision", "no, bf16 or fp16", "no"),
    )
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    checkpointing_steps: int = attrs.field(
        default=500, validator=_positive("--checkpointing-steps", "500")
    )
    resume_from_checkpoint: str | None = None
    validation_prompts: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    validation_steps: int = attrs.field(
        default=100, validator=_positive("--validation-steps", "100")
    )
    num_validation_images: int = attrs.field(
        default=4, validator=_positive("--num-validation-images", "4")
    )
    offset_noise: float = attrs.field(
        default=0.0, validator=_check(lambda v: v >= 0, "--offset-noise", ">= 0", "0.1")
    )
    snr_gamma: float | None = attrs.field(
        default=None, validator=_check(lambda v: v > 0, "--snr-gamma", "> 0", "5.0")
    )
    stage: str | None = None
    seed: int = 0
    device: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.prior_preservation and not (self.class_prompt and self.class_prompt.strip()):
            raise DreamBoothOptionsError(
                "--with-prior-preservation needs --class-prompt (e.g. 'a star'): the class "
                "images are generated from it"
            )
        if self.resume_from_checkpoint not in (None, "latest"):
            state = Path(self.output_dir) / "dreambooth.state.pt"
            if Path(self.resume_from_checkpoint).resolve() != state.resolve():
                raise DreamBoothOptionsError(
                    f"--resume-from-checkpoint takes 'latest' or {state} (the run's state), "
                    f"got {self.resume_from_checkpoint!r}"
                )

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return LORA_LR if self.lora else FULL_LR

    @property
    def loop_precision(self) -> str:
        return PRECISIONS[self.precision]

    @property
    def class_folder(self) -> Path:
        return Path(self.class_dir) if self.class_dir else Path(self.output_dir) / "class_images"

    def record(self) -> dict[str, Any]:
        """JSON-able options (paths as strings), as ``options.json`` of the run stores."""
        data = attrs.asdict(self)
        data["recipe_options"] = {
            k: (os.fspath(v) if isinstance(v, os.PathLike) else v)
            for k, v in self.recipe_options.items()
        }
        data["lora_targets"] = None if self.lora_targets is None else list(self.lora_targets)
        data["validation_prompts"] = list(self.validation_prompts)
        return data
