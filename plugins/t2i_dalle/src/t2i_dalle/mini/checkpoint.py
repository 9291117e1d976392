"""A min-dalle folder: ``encoder.pt``, ``decoder.pt``, ``detoker.pt``, ``vocab.json``,
``merges.txt`` (kuprel/min-dalle's files; Mini's ``*_mini`` names are accepted too).

The ``.pt`` files are plain state dicts, read with ``torch.load(weights_only=True)`` (no code
runs); shapes give the config (layers, width, GLU width, vocabularies); the head count is
``width / 64`` (Mini 16, Mega 32) unless given.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import attrs
import torch

from t2i.checkpoints import CheckpointError

FILES = {
    "encoder": ("encoder.pt", "encoder_mini.pt"),
    "decoder": ("decoder.pt", "decoder_mini.pt"),
    "detoker": ("detoker.pt",),
    "vocab": ("vocab.json", "vocab_mini.json"),
    "merges": ("merges.txt", "merges_mini.txt"),
}


@attrs.frozen(eq=False)
class MiniModel:
    encoder: torch.nn.Module
    decoder: torch.nn.Module
    detokenizer: torch.nn.Module
    tokenizer: object


def find_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The folder's five files, or a :class:`CheckpointError` naming the missing ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            "DALL-E Mini needs a folder",
            path=folder,
            fix="pass the folder of encoder.pt, decoder.pt, detoker.pt, vocab.json, merges.txt",
        )
    found, missing = {}, []
    for key, names in FILES.items():
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is None:
            missing.append(names[0])
        else:
            found[key] = hit
    if missing:
        raise CheckpointError(
            f"not a min-dalle folder: missing {', '.join(missing)}", path=folder,
            fix="download min-dalle's files (huggingface.co/kuprel/min-dalle) into one folder",
        )  # fmt: skip
    return found


def _state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read as a weights-only state dict ({e})", path=path) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("not a state dict of tensors", path=path)
    return {k: v.float() for k, v in state.items()}


def _layers(state: dict) -> int:
    return 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))), default=-1
    )


def bart_config(enc: dict, dec: dict, heads: int | None):
    from t2i_dalle.mini.bart import BartConfig

    try:
        embed = int(enc["embed_tokens.weight"].shape[1])
        config = BartConfig(
            layers=_layers(enc), heads=heads or max(1, embed // 64), embed=embed,
            glu=int(enc["layers.0.glu.fc0.weight"].shape[0]),
            text_vocab=int(enc["embed_tokens.weight"].shape[0]),
            image_vocab=int(dec["embed_tokens.weight"].shape[0]) - 1,
            text_len=int(enc["embed_positions.weight"].shape[0]),
        )  # fmt: skip
    except KeyError as e:
        raise CheckpointError(f"not DALL-E Mini's encoder/decoder: no {e.args[0]!r}") from None
    if _layers(dec) != config.layers or embed % config.heads:
        raise CheckpointError(f"encoder/decoder shapes do not agree ({config})")
    return config


def _load(module: torch.nn.Module, state: dict, path: Path) -> torch.nn.Module:
    missing, _unexpected = module.load_state_dict(state, strict=False)  # min-dalle: strict=False
    if missing:
        raise CheckpointError(
            f"{len(missing)} weights missing, e.g. {missing[:3]}", path=path, missing=missing
        )
    return module.eval()


def load_mini(folder: str | os.PathLike, *, heads: int | None = None) -> MiniModel:
    from t2i_dalle.mini.bart import BartDecoder, BartEncoder
    from t2i_dalle.mini.tokenizer import BPETokenizer
    from t2i_dalle.mini.vqgan import VQGANConfig, VQGANDetokenizer

    files = find_files(folder)
    enc, dec, det = (_state(files[k]) for k in ("encoder", "decoder", "detoker"))
    config = bart_config(enc, dec, heads)
    codebook = det.get("embedding.weight")
    if codebook is None:
        raise CheckpointError("not a VQGAN detokenizer: no embedding.weight", path=files["detoker"])
    vq = VQGANConfig(codebook=int(codebook.shape[0]), embed=int(codebook.shape[1]))
    tokenizer = BPETokenizer.from_folder(Path(folder), config.text_len)
    return MiniModel(
        _load(BartEncoder(config), enc, files["encoder"]),
        _load(BartDecoder(config), dec, files["decoder"]),
        _load(VQGANDetokenizer(vq), det, files["detoker"]),
        tokenizer,
    )


@functools.lru_cache(maxsize=2)
def _cached(path: str, stamp: tuple, heads: int | None) -> MiniModel:
    return load_mini(path, heads=heads)


def load_cached(folder: str | os.PathLike, heads: int | None = None) -> MiniModel:
    files = find_files(folder)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files.values())
    return _cached(str(Path(folder).resolve()), stamp, heads)
