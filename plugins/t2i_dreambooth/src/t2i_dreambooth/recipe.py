"""Recipe ``dreambooth``: a ``t2i dreambooth`` run's ``model/`` folder as a ready model.

``Engine.build("dreambooth", checkpoint="runs/star/model", lora_scale=0.8)`` reads the
folder's ``dreambooth.json`` (the base recipe and its options) and builds that recipe with
the run's LoRA (``lora.safetensors``) or full fine-tune (``denoiser.safetensors`` ...) in the
loader nodes the run trained (a cascade's base stage only), so
``t2i generate --recipe dreambooth --checkpoint runs/star/model "a sks star"`` works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from t2i.checkpoints import CheckpointError

_LOADERS = {"denoiser": "LoadDenoiser", "text_encoder": "LoadTextEncoder"}


def dreambooth_recipe(*, checkpoint: str | os.PathLike, lora_scale: float = 1.0):
    from t2i.engine import Engine

    folder = Path(checkpoint)
    record_path = folder / "dreambooth.json"
    if not record_path.is_file():
        raise CheckpointError(
            "no dreambooth.json", path=folder, fix="pass the model/ folder of a t2i dreambooth run"
        )
    try:
        record = json.loads(record_path.read_text())
        base, options = record["recipe"], dict(record.get("recipe_options") or {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"dreambooth.json is not a run record ({type(exc).__name__})", path=record_path
        ) from None
    recipe = Engine.build(base, **options).recipe
    nodes = record.get("nodes") or {}
    for kind in ("denoiser", "text_encoder"):
        node = nodes.get(kind, "" if kind == "denoiser" else None)
        for graph in (recipe.graph, recipe.img2img_graph):
            if graph is None or node is None:
                continue
            targets = [n.id for n in graph if n.type == _LOADERS[kind]] if not node else [node]
            for nid in targets:
                if (folder / "lora.safetensors").is_file():
                    graph.replace(nid, loras=[[str(folder / "lora.safetensors"), lora_scale]])
                elif (folder / f"{kind}.safetensors").is_file():
                    graph.replace(nid, weights=str(folder / f"{kind}.safetensors"))
    import attrs

    return attrs.evolve(
        recipe, description=f"DreamBooth run on {base}", model_name=folder.parent.name
    )
