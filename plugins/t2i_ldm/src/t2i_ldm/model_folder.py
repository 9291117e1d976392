"""The ldm-shapes model folder a training run exports (what :mod:`t2i_ldm.shapes_model` loads).

``model.json`` (configs, scaling factor, training record), ``unet.safetensors`` (fp16),
``vae.safetensors``, ``text_encoder.safetensors`` (or a MiniLM model's
``text_adapter.safetensors``) and ``tokenizer/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from t2i.checkpoints import save_safetensors
from t2i.files import write_text_atomically

_CLIP_KEYS = (
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


def text_spec(text_model: nn.Module) -> dict[str, Any]:
    """model.json's ``text`` entry for a CLIP text model or a MiniLM conditioner."""
    from t2i_ldm.minilm import MiniLmConditioner

    if isinstance(text_model, MiniLmConditioner):
        return {
            "kind": "minilm",
            "width": text_model.adapter.out_features,
            "hidden_size": text_model.bert.config.hidden_size,
            "source": "sentence-transformers/all-MiniLM-L6-v2",
        }
    return {k: v for k, v in text_model.config.to_dict().items() if k in _CLIP_KEYS}


def write_model_folder(
    folder: Path,
    *,
    unet: nn.Module,
    vae: nn.Module,
    text_model: nn.Module,
    tokenizer_dir: Path,
    scaling_factor: float,
    unet_config: Any,
    vae_config: Any,
    training: dict[str, Any],
) -> Path:
    """Write the model folder: safetensors (UNet in fp16), tokenizer files, model.json last."""
    from t2i_ldm.minilm import MiniLmConditioner
    from t2i_ldm.shapes_model import ADAPTER_FILE, config_dict

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
        "text": text_spec(text_model),
        "scaling_factor": scaling_factor,
        "prediction_type": "epsilon",
        "training": training,
    }
    write_text_atomically(folder / "model.json", json.dumps(spec, indent=2))
    return folder
