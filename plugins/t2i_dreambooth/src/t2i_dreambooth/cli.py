"""``t2i dreambooth``: the command line of :func:`t2i_dreambooth.dreambooth`.

Option names are diffusers' ``train_dreambooth.py`` ones with dashes (``--instance-data-dir``,
``--with-prior-preservation``, ``--max-train-steps`` ...), plus ``--recipe`` / ``--checkpoint``
/ ``--option KEY=VALUE`` for the base model and ``--lora`` for ``train_dreambooth_lora.py``.
Options that cannot work exit with status 2 and one ``error:`` line, before model work.
"""

from __future__ import annotations

import json

import click


class DreamBoothUsageError(click.UsageError):
    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _recipe_options(checkpoint: str | None, pairs: tuple[str, ...]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DreamBoothUsageError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    if checkpoint:
        options["checkpoint"] = checkpoint
    return options


@click.command("dreambooth")
@click.option("--instance-data-dir", required=True, type=click.Path(), help="The subject's images.")
@click.option("--instance-prompt", required=True, help="Prompt with the identifier: 'a sks star'.")
@click.option("--output-dir", default="dreambooth-model", show_default=True, help="Run folder.")
@click.option("--recipe", default="ldm-shapes", show_default=True, help="Base model recipe.")
@click.option("--checkpoint", default=None, help="Checkpoint of the base recipe (SD file ...).")
@click.option(
    "--option",
    "recipe_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A base-recipe option (repeatable).",
)
@click.option("--class-prompt", default=None, help="Prompt of the class: 'a star'.")
@click.option("--with-prior-preservation", is_flag=True, help="Add the prior-preservation loss.")
@click.option("--prior-loss-weight", type=float, default=1.0, show_default=True)
@click.option("--num-class-images", type=int, default=100, show_default=True)
@click.option("--class-data-dir", default=None, help="Class image cache (OUT/class_images).")
@click.option("--sample-batch-size", type=int, default=4, show_default=True)
@click.option("--resolution", type=int, default=None, help="Training size (recipe default).")
@click.option("--train-text-encoder", is_flag=True, help="Fine-tune the text encoder too.")
@click.option("--lora", is_flag=True, help="Train LoRA adapters (peft) instead of all weights.")
@click.option("--rank", type=int, default=4, show_default=True, help="LoRA rank (alpha = rank).")
@click.option(
    "--lora-targets",
    default=None,
    help="Comma-separated layer-name suffixes to adapt (default: attention projections).",
)
@click.option("--learning-rate", type=float, default=None, help="Default 5e-6, LoRA 5e-4.")
@click.option("--max-train-steps", type=int, default=400, show_default=True)
@click.option("--train-batch-size", type=int, default=4, show_default=True)
@click.option("--gradient-accumulation-steps", type=int, default=1, show_default=True)
@click.option(
    "--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]), default="no", show_default=True
)
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True)
@click.option("--checkpointing-steps", type=int, default=500, show_default=True)
@click.option("--resume-from-checkpoint", default=None, help="'latest': continue the run.")
@click.option("--validation-prompt", multiple=True, help="Rendered every --validation-steps.")
@click.option("--validation-steps", type=int, default=100, show_default=True)
@click.option("--num-validation-images", type=int, default=4, show_default=True)
@click.option(
    "--offset-noise",
    type=float,
    default=0.0,
    show_default=True,
    help="Offset-noise strength (diffusers' flag uses 0.1).",
)
@click.option("--snr-gamma", type=float, default=None, help="Min-SNR weighting gamma (5.0).")
@click.option("--stage", default=None, help="Denoiser node to train in a cascade (default: base).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when available).")
def dreambooth_command(**v) -> None:
    """Fine-tune a diffusion recipe on a few images of one subject (DreamBooth)."""
    from t2i_dreambooth.data import InstanceImagesError
    from t2i_dreambooth.options import DreamBoothOptions, DreamBoothOptionsError
    from t2i_dreambooth.run import dreambooth

    targets = v["lora_targets"]
    try:
        options = DreamBoothOptions(
            instance_dir=v["instance_data_dir"],
            instance_prompt=v["instance_prompt"],
            output_dir=v["output_dir"],
            recipe=v["recipe"],
            recipe_options=_recipe_options(v["checkpoint"], v["recipe_option"]),
            class_prompt=v["class_prompt"],
            prior_preservation=v["with_prior_preservation"],
            prior_loss_weight=v["prior_loss_weight"],
            num_class_images=v["num_class_images"],
            class_dir=v["class_data_dir"],
            sample_batch_size=v["sample_batch_size"],
            resolution=v["resolution"],
            train_text_encoder=v["train_text_encoder"],
            lora=v["lora"],
            rank=v["rank"],
            lora_targets=None if not targets else tuple(t.strip() for t in targets.split(",")),
            learning_rate=v["learning_rate"],
            steps=v["max_train_steps"],
            batch_size=v["train_batch_size"],
            grad_accum=v["gradient_accumulation_steps"],
            precision=v["mixed_precision"],
            gradient_checkpointing=v["gradient_checkpointing"],
            max_grad_norm=v["max_grad_norm"],
            checkpointing_steps=v["checkpointing_steps"],
            resume_from_checkpoint=v["resume_from_checkpoint"],
            validation_prompts=v["validation_prompt"],
            validation_steps=v["validation_steps"],
            num_validation_images=v["num_validation_images"],
            offset_noise=v["offset_noise"],
            snr_gamma=v["snr_gamma"],
            stage=v["stage"],
            seed=v["seed"],
            device=v["device"],
        )
        folder = dreambooth(options)
    except (DreamBoothOptionsError, InstanceImagesError) as error:
        raise DreamBoothUsageError(str(error)) from error
    click.echo(str(folder))
