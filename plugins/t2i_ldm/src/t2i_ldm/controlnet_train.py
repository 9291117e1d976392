"""Training a ControlNet for a Stable Diffusion checkpoint (Zhang et al. 2023, section 3.2-3.3)
on the core loop: ``t2i train controlnet --checkpoint SD --data DIR OUT``.

The checkpoint's UNet, VAE and text encoder stay frozen. The ControlNet starts as a copy of
the UNet's way down (:func:`controlnet_from_unet`) whose zero convolutions and hint-stack
output start at zero, so before the first step the steered model is the checkpoint itself;
the loss is the UNet's own denoising loss (its prediction type, its timesteps drawn
uniformly) with the ControlNet's residuals added; the prompt is dropped for half of the rows
(the paper's 50%), so the ControlNet learns to read the map alone.

Data: a folder of images (``.png`` / ``.jpg`` / ``.webp``), each with its caption
``NAME.txt`` and its control map ``NAME.control.png``, or, with ``--preprocessor canny``
(or ``invert``), the map made from the image (:mod:`t2i_ldm.controlnet_preprocess`). Images
are resized to ``--size`` and encoded once; the export is ``OUT/model/controlnet.safetensors``
in lllyasviel's / A1111's layout, which ``controlnet=`` (and A1111, ComfyUI) load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from torch import nn

from t2i.training import RandomBatches, TrainConfig, Trainer, TrainerOption, train
from t2i.training.config import TrainOptionsError
from t2i_ldm.controlnet import EMBEDDING_CHANNELS, ControlNetModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_DROPOUT = 0.5
"""Rows trained with an empty prompt (the paper's 50%)."""


def controlnet_from_unet(unet: nn.Module, embedding_channels=EMBEDDING_CHANNELS) -> ControlNetModel:
    """A ControlNet for ``unet``: its way down copied (time embedding, ``label_emb``, input
    and middle blocks), the zero convolutions and the hint stack's last convolution zero, so
    its residuals are zero until it is trained (diffusers' ``ControlNetModel.from_unet``)."""
    config = unet.config
    if config.in_channels != config.out_channels:
        raise ValueError(
            f"the UNet reads {config.in_channels} channels (an inpainting model): train the "
            "ControlNet on the ordinary checkpoint"
        )
    net = ControlNetModel(config, embedding_channels=embedding_channels)
    own = net.state_dict()
    copied = {k: v for k, v in unet.state_dict().items() if k in own}
    net.load_state_dict(copied, strict=False)
    for layer in (*net.zero_convs, net.middle_block_out, net.input_hint_block[-1:]):
        for p in layer.parameters():
            nn.init.zeros_(p)
    return net


def _map_of(image_path: Path, preprocessor: str | None) -> Any:
    from PIL import Image

    from t2i_ldm.controlnet_preprocess import preprocess

    if preprocessor:
        return preprocess(image_path, preprocessor)
    control = image_path.with_name(f"{image_path.stem}.control.png")
    if not control.is_file():
        raise TrainOptionsError(
            f"{image_path.name} has no control map {control.name}: add one, or pass "
            "--preprocessor canny to make the maps from the images"
        )
    return Image.open(control).convert("RGB")


def read_pairs(folder: Path, size: int, preprocessor: str | None) -> list[tuple]:
    """``(image (3, S, S) in [-1, 1], map (3, S, S) in [0, 1], caption)`` of every image of
    ``folder``, resized to ``size``."""
    from PIL import Image

    def is_image(p: Path) -> bool:
        return p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(".control")

    images = sorted(p for p in folder.iterdir() if is_image(p))
    if not images:
        raise TrainOptionsError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for path in images:
        caption = path.with_suffix(".txt")
        if not caption.is_file():
            raise TrainOptionsError(f"{path.name} has no caption {caption.name}")
        picture = Image.open(path).convert("RGB").resize((size, size), Image.LANCZOS)
        control = _map_of(path, preprocessor).resize((size, size), Image.LANCZOS)
        pixels = torch.from_numpy(np.asarray(picture, np.float32) / 127.5 - 1).permute(2, 0, 1)
        hint = torch.from_numpy(np.asarray(control, np.float32) / 255).permute(2, 0, 1)
        out.append((pixels, hint, caption.read_text(encoding="utf-8").strip()))
    return out


@attrs.frozen
class Encoded:
    """The data set, encoded once: latents ``(N, C, h, w)``, maps ``(N, 3, H, W)``, the
    captions' contexts ``(N, T, D)`` and the empty prompt's ``(1, T, D)``."""

    latents: torch.Tensor
    hints: torch.Tensor
    contexts: torch.Tensor
    empty: torch.Tensor


class ControlNetTraining(nn.Module):
    """The :class:`~t2i.training.contract.TrainableModel`: the ControlNet trained, the
    checkpoint's denoiser frozen; batches are row indices of :class:`Encoded`."""

    def __init__(self, denoiser: Any, net: ControlNetModel, data: Encoded) -> None:
        super().__init__()
        self.net = net
        self.frozen = [denoiser]  # not a submodule: not in the state, never trained
        self.data = data
        for p in denoiser.unet.parameters():
            p.requires_grad_(False)

    def trainable_parameters(self):
        return list(self.net.parameters())

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        from t2i.payloads import Conditioning

        denoiser = self.frozen[0]
        d = self.data
        rows = rows.cpu()
        x0 = d.latents[rows].to(self.device)
        drop = torch.rand(len(rows)) < CAPTION_DROPOUT
        context = torch.where(drop[:, None, None], d.empty, d.contexts[rows]).to(self.device)
        unit = _TrainingUnit(self.net, d.hints[rows].to(self.device))
        steered = denoiser.with_control(unit)
        t = torch.randint(0, denoiser.num_train_timesteps, (len(rows),))
        sigma = denoiser.sigmas[t].to(self.device, x0.dtype)
        noise = torch.randn_like(x0)
        return steered.loss(x0, Conditioning(embeds=context), noise=noise, sigma=sigma).mean()

    @property
    def device(self) -> torch.device:
        return self.net.device

    def save(self, folder: Path) -> None:
        from t2i_ldm.controlnet_checkpoint import save_controlnet

        folder.mkdir(parents=True, exist_ok=True)
        save_controlnet(folder / "controlnet.safetensors", self.net)


class _TrainingUnit:
    """A control unit with a batch of maps and no step window (every step steered)."""

    def __init__(self, net: ControlNetModel, hints: torch.Tensor) -> None:
        self.net, self.hints = net, hints

    def __call__(self, x, t, context, y=None, negative=None):
        return self.net(x, self.hints, t, context, y)


def encode(checkpoint: str | None, pairs: list[tuple], device: torch.device, *,
           recipe: str = "ldm", **load: Any) -> tuple:  # fmt: skip
    """``(denoiser, Encoded)``: the checkpoint's frozen parts, the data set through them."""
    from t2i import Engine
    from t2i.payloads import Image as ImagePayload

    if checkpoint is not None:
        load["checkpoint"] = checkpoint
    pipe = Engine.build(recipe, device=device, **load)
    parts = pipe.executor.run(pipe.graph, outputs=["tokenizer", "text_encoder", "denoiser",
                                                   "decoder"])  # fmt: skip
    tokenizer, encoder = parts["tokenizer"]["tokenizer"], parts["text_encoder"]["text_encoder"]
    denoiser, decoder = parts["denoiser"]["model"], parts["decoder"]["decoder"]
    with torch.inference_mode():
        latents = torch.cat([decoder.encode(ImagePayload((p[None] + 1) / 2)).samples
                             for p, _, _ in pairs]).cpu()  # fmt: skip
        texts = [c for _, _, c in pairs] + [""]
        states = encoder(tokenizer(texts)).embeds.cpu()
    data = Encoded(latents.clone(), torch.stack([h for _, h, _ in pairs]),
                   states[:-1].clone(), states[-1:].clone())  # fmt: skip
    return denoiser, data


def train_controlnet(config: TrainConfig, out: str | Path, *, checkpoint: str | None, data: str,
                     size: int = 512, preprocessor: str | None = None,
                     allow_pickle: bool = False, recipe: str = "ldm") -> Path:  # fmt: skip
    """Train into ``out`` (resumable state ``controlnet.state.pt``); the export is
    ``out/model/controlnet.safetensors``."""
    out = Path(out)
    folder = Path(data)
    if not folder.is_dir():
        raise TrainOptionsError(f"--data {data!r} is not a folder of images and captions")
    if size % 16:
        raise TrainOptionsError(f"--size {size} must be a multiple of 16 (SD: 64)")
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pairs = read_pairs(folder, size, preprocessor)
    load = {"allow_pickle": True} if allow_pickle else {}
    denoiser, encoded = encode(checkpoint, pairs, device, recipe=recipe, **load)
    f = size // encoded.latents.shape[-1]
    widths = EMBEDDING_CHANNELS[: int(np.log2(f)) + 1] if f < 8 else EMBEDDING_CHANNELS
    net = controlnet_from_unet(denoiser.unet, widths).to(device)
    model = ControlNetTraining(denoiser, net, encoded)
    batches = RandomBatches(len(pairs), lambda rows: rows, seed=config.seed)
    result = train(model, batches, config, out)
    result.save(out / "model")
    return out / "model"


class ControlNetTrainer(Trainer):
    """Train a ControlNet for a Stable Diffusion checkpoint (the checkpoint frozen).

    --data is a folder of images with NAME.txt captions and NAME.control.png maps (or
    --preprocessor canny to make the maps). The export, OUT/model/controlnet.safetensors, is
    in A1111's layout: --option controlnet=... loads it.
    """

    options = (
        TrainerOption("--checkpoint", str, help="The SD checkpoint (file or diffusers folder)."),
        TrainerOption("--recipe", str, "ldm", help="ldm (a --checkpoint), or ldm-shapes."),
        TrainerOption("--data", str, help="Folder of images, NAME.txt captions and maps."),
        TrainerOption("--size", int, 512, help="Training size in pixels (a multiple of 64)."),
        TrainerOption("--preprocessor", str, help="Make the maps from the images: canny, invert."),
        TrainerOption("--allow-pickle", is_flag=True, help="Read a .ckpt checkpoint you trust."),
    )
    defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 8, "lr": 1e-5,
                                          "ema_decay": 0.0, "save_every": 500}  # fmt: skip
    loop_help: ClassVar[dict[str, str]] = {
        "out": "Run folder: controlnet.state.pt (resumable) and model/controlnet.safetensors.",
        "lr": "AdamW learning rate of the ControlNet (the paper: 1e-5).",
    }

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        if not options.get("data"):
            raise TrainOptionsError("give --data (the folder of images, captions and maps)")
        if options.get("recipe", "ldm") == "ldm" and not options.get("checkpoint"):
            raise TrainOptionsError("give --checkpoint (the SD model the ControlNet steers)")
        return train_controlnet(attrs.evolve(config, name="controlnet"), out, **options)
