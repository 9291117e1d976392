"""The DALL-E model folder: ``dvae.safetensors``, ``transformer.safetensors``, ``dalle.json``.

- ``dvae.safetensors``: the dVAE's encoder and decoder under ``encoder.`` / ``decoder.`` with
  OpenAI's parameter names (``encoder.blocks.input.w`` ...).
- ``transformer.safetensors``: :class:`~t2i_dalle.transformer.DalleTransformer`'s state.
- ``dalle.json``: ``{"family": "dalle", "dvae": DVAEConfig, "transformer": TransformerConfig
  or null, "words": [...], "training": {...}}``; a ``t2i train dalle --stage vae`` folder has
  no transformer yet.

Everything is read with safetensors (no pickle). A file that is not this family's (a VQGAN
``.ckpt``, min-dalle's ``detoker.pt``, a diffusers folder) is a :class:`CheckpointError` naming
what it is and what to pass instead, before any model is built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import torch

from t2i.checkpoints import CheckpointError

FAMILY = "dalle"
SPEC_FILE = "dalle.json"
DVAE_FILE = "dvae.safetensors"
TRANSFORMER_FILE = "transformer.safetensors"


@attrs.frozen(eq=False)
class DalleModel:
    """A loaded folder: the dVAE halves, the transformer (or None) and the word list."""

    encoder: Any
    decoder: Any
    transformer: Any
    words: tuple[str, ...]
    spec: dict


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"not a readable safetensors file ({e})", path=path) from e


def _not_a_dvae(path: Path) -> CheckpointError:
    name = path.name.lower()
    if path.is_file() and (name.endswith(".ckpt") or "vqgan" in name or name == "detoker.pt"):
        what = "a VQGAN (taming-transformers / min-dalle detokenizer) file"
        fix = (
            "DALL-E's decoder is a dVAE: pass a dalle folder (dvae.safetensors), or use the "
            "dalle-mini recipe for min-dalle's folder (detoker.pt)"
        )
    elif path.is_dir() and (path / "detoker.pt").is_file():
        what = "a min-dalle folder (DALL-E Mini/Mega, VQGAN detokenizer)"
        fix = "load it with the dalle-mini recipe (--recipe dalle-mini --checkpoint FOLDER)"
    else:
        what = "not a DALL-E model folder"
        fix = f"pass a folder with {SPEC_FILE} and {DVAE_FILE} (t2i train dalle writes one)"
    return CheckpointError(what, path=path, fix=fix)


def check_folder(path: str | os.PathLike) -> Path:
    """The folder if it holds this family's spec and dVAE; else a clear error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such file or folder", path=path, fix="check the path")
    if not (path.is_dir() and (path / SPEC_FILE).is_file() and (path / DVAE_FILE).is_file()):
        raise _not_a_dvae(path)
    spec = json.loads((path / SPEC_FILE).read_text())
    if spec.get("family") != FAMILY:
        raise _not_a_dvae(path)
    return path


def split_dvae(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    dec = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    return enc, dec


def load_dalle(path: str | os.PathLike, *, need_transformer: bool = True) -> DalleModel:
    """Read a model folder (float32, eval mode)."""
    from t2i_dalle.dvae import Decoder, DVAEConfig, Encoder, config_from_state
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    path = check_folder(path)
    spec = json.loads((path / SPEC_FILE).read_text())
    enc_state, dec_state = split_dvae(_read_safetensors(path / DVAE_FILE))
    if not enc_state or not dec_state:
        raise _not_a_dvae(path / DVAE_FILE)
    config = DVAEConfig(**spec["dvae"])
    for which, state in (("encoder", enc_state), ("decoder", dec_state)):
        found = config_from_state(state, which)
        if (found.group_count, found.n_hid, found.vocab_size) != (
            config.group_count,
            config.n_hid,
            config.vocab_size,
        ):
            raise CheckpointError(
                f"the dVAE {which} ({found}) does not match {SPEC_FILE} ({config})", path=path
            )
    encoder, decoder = Encoder(config), Decoder(config)
    encoder.load_state_dict({k: v.float() for k, v in enc_state.items()})
    decoder.load_state_dict({k: v.float() for k, v in dec_state.items()})
    transformer = None
    if spec.get("transformer") is not None:
        tconfig = TransformerConfig(**spec["transformer"])
        if tconfig.image_vocab != config.vocab_size:
            raise CheckpointError(
                f"the transformer draws {tconfig.image_vocab} image tokens but the dVAE has a "
                f"codebook of {config.vocab_size}",
                path=path,
                fix="pair the transformer with the dVAE it was trained on",
            )
        transformer = DalleTransformer(tconfig)
        state = _read_safetensors(path / TRANSFORMER_FILE)
        transformer.load_state_dict({k: v.float() for k, v in state.items()})
        transformer.eval()
    elif need_transformer:
        raise CheckpointError(
            "this folder holds a dVAE only (a --stage vae run)",
            path=path,
            fix="train the prior on it: t2i train dalle --stage prior --dvae FOLDER",
        )
    return DalleModel(encoder.eval(), decoder.eval(), transformer, tuple(spec["words"]), spec)


def write_spec(folder: Path, **spec: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"family": FAMILY, **spec}
    (folder / SPEC_FILE).write_text(json.dumps(body, indent=2) + "\n")
