"""The LoRA folder (``--lora-dir``): ``<lora:NAME:w>`` in a prompt over the API, and
/sdapi/v1/loras as A1111's Lora extension lists it."""

from __future__ import annotations

import base64
import json

import pytest
import requests
import torch
from safetensors.torch import save_file
from server_live import live_server

pytest.importorskip("t2i_ldm")

PROMPT = "a large red circle in the center"


def _manager():
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    return make_manager(ldm)


def _random_lora(path, *, seed: int, metadata: dict[str, str] | None = None):
    """A random diffusers-layout LoRA over ldm-shapes' UNet linears (rank 4)."""
    from t2i import Engine
    from t2i.lora import lora_modules

    pipe = Engine.build("ldm-shapes", plugins=_manager())
    denoiser = pipe.executor.run(pipe.graph, outputs=["denoiser"])["denoiser"]["model"]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, layer in lora_modules(denoiser).items():
        if isinstance(layer, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v")):
            n_out, n_in = layer.weight.shape
            state[f"unet.{name}.lora_A.weight"] = torch.randn(4, n_in, generator=g) * 0.3
            state[f"unet.{name}.lora_B.weight"] = torch.randn(n_out, 4, generator=g) * 0.3
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras") / "Lora"
    meta = {"ss_output_name": "Shapes Style", "ss_tag_frequency": json.dumps({"a": {"b": 2}})}
    _random_lora(folder / "style.safetensors", seed=1, metadata=meta)
    _random_lora(folder / "people" / "deep.safetensors", seed=2)
    (folder / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    return folder


@pytest.fixture(scope="module")
def server(loras):
    with live_server(_manager(), recipe="ldm-shapes", lora_dir=loras) as live:
        yield live


def _png(server, prompt: str, seed: int = 3) -> bytes:
    body = {"prompt": prompt, "seed": seed, "steps": 4, "width": 64, "height": 64}
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["images"][0])


def test_loras_lists_the_folder_as_a1111(server, loras):
    listed = requests.get(f"{server.url}/sdapi/v1/loras", timeout=30).json()
    assert [e["name"] for e in listed] == ["deep", "style"]  # the broken file left out
    style = listed[1]
    assert style["alias"] == "Shapes Style" and listed[0]["alias"] == "deep"
    assert style["path"] == str((loras / "style.safetensors").resolve())
    assert style["metadata"]["ss_tag_frequency"] == {"a": {"b": 2}}  # JSON values parsed
    assert requests.post(f"{server.url}/sdapi/v1/refresh-loras", timeout=30).ok


def test_a_prompt_tag_merges_the_lora_as_the_engine_does(server, loras):
    import io

    import numpy as np
    from PIL import Image

    from t2i import Engine

    plain = _png(server, PROMPT)
    tagged = _png(server, PROMPT + " <lora:style:0.8>")
    deep = _png(server, PROMPT + " <lora:deep:1>")  # found in its subfolder by name
    assert len({plain, tagged, deep}) == 3
    pipe = Engine.build("ldm-shapes", plugins=_manager(), lora_dir=str(loras))
    fields = {"seed": 3, "steps": 4, "width": 64, "height": 64}
    direct = pipe(PROMPT + " <lora:style:0.8>", **fields).images[0]
    got = Image.open(io.BytesIO(tagged)).convert("RGB")
    assert np.array_equal(np.asarray(got), np.asarray(direct))


def test_a_tag_naming_no_file_is_a_422_listing_the_folder(server):
    body = {"prompt": "a cube <lora:nope:1>", "seed": 1, "steps": 2}
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert "nope" in r.json()["detail"] and "deep, style" in r.json()["detail"]
