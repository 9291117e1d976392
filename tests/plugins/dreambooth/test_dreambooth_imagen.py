"""DreamBooth on the imagen-shapes cascade through the contracts: its base stage (the first
denoiser) is fine-tuned with LoRA at 32 px, and the ``dreambooth`` recipe puts the LoRA into
that stage only (the SR stage keeps its weights)."""

from __future__ import annotations

import pytest

from t2i import Engine
from t2i.testing import make_manager

pytest.importorskip("t2i_imagen")


@pytest.mark.slow
def test_imagen_shapes_base_stage(tmp_path):
    from t2i_dreambooth import DreamBoothOptions, dreambooth
    from t2i_dreambooth import plugin as dreambooth_plugin
    from t2i_dreambooth.example import subject_images
    from t2i_imagen import plugin

    from t2i.plugins import set_plugin_manager

    previous = set_plugin_manager(make_manager(plugin, dreambooth_plugin))
    try:
        model = dreambooth(
            DreamBoothOptions(
                recipe="imagen-shapes",
                instance_dir=subject_images(tmp_path / "star"),
                instance_prompt="a sks star",
                output_dir=tmp_path / "run",
                lora=True,
                learning_rate=5e-2,
                steps=2,
                batch_size=1,
                resolution=32,
            )
        )
        pipe = Engine.build("dreambooth", checkpoint=str(model))
        loaders = {n.id: n.params for n in pipe.graph if n.type == "LoadDenoiser"}
        assert loaders["base_model"]["loras"] and not loaders["sr_model"].get("loras")
        outs = pipe.executor.run(pipe.graph, outputs=["base_model"])
        base = Engine.build("imagen-shapes")
        before = base.executor.run(base.graph, outputs=["base_model"])
        tuned, frozen = outs["base_model"]["model"], before["base_model"]["model"]
        moved = [
            (a - b).abs().max().item()
            for a, b in zip(
                tuned.export_spec().modules[0].module.parameters(),
                frozen.export_spec().modules[0].module.parameters(),
                strict=True,
            )
        ]
        assert max(moved) > 0
        assert pipe("a sks star", seed=1, steps=2, sr_steps=2).images[0].size == (64, 64)
    finally:
        set_plugin_manager(previous)
