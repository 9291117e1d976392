"""t2i_dreambooth: DreamBooth (Ruiz et al., CVPR 2023, arXiv 2208.12242) for any diffusion family.

A few images of one subject are bound to a rare identifier ("a sks star") by fine-tuning a
recipe's denoiser (and optionally its text encoder), fully or through LoRA (peft), while the
class-specific prior-preservation loss on images the frozen model made from the class
prompt ("a star") keeps the class from drifting. It works through contracts only: the
recipe's components (tokenizer, text encoder, a denoiser with ``loss(x0, cond, *, noise,
sigma)``, a decoder with ``encode``) and :mod:`t2i.lora` (their trainable and LoRA modules),
trained on the core loop :func:`t2i.training.train`.

Python API::

    from t2i_dreambooth import DreamBoothOptions, dreambooth
    folder = dreambooth(DreamBoothOptions(recipe="ldm-shapes", instance_dir="star/",
                                          instance_prompt="a sks star", class_prompt="a star",
                                          output_dir="runs/star", lora=True))
    pipe = Engine.build("ldm-shapes", lora=folder / "lora.safetensors")
"""

from t2i_dreambooth.options import DreamBoothOptions, DreamBoothOptionsError

__all__ = ["DreamBoothOptions", "DreamBoothOptionsError", "dreambooth"]


def __getattr__(name: str):
    # ``dreambooth`` (torch, the engine) is imported when first used, so that discovering the
    # plugin (every ``t2i`` command mounts ``t2i dreambooth``) imports no model library.
    if name == "dreambooth":
        from t2i_dreambooth.run import dreambooth

        return dreambooth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
