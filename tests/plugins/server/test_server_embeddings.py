"""The embeddings folder (``--embeddings-dir``): a prompt's embedding over the API, as the
engine uses it, and /sdapi/v1/embeddings as A1111 lists the folder."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import save_file
from server_live import live_server
from server_models import tiny_sd_file

pytest.importorskip("t2i_ldm")

BODY = {"seed": 5, "steps": 3, "width": 16, "height": 16}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("embeddings_server")
    sd = tiny_sd_file(base / "models" / "tiny-sd.safetensors", base / "clip")
    emb = base / "embeddings"
    emb.mkdir()
    g = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn(2, 64, generator=g) * 3}, emb / "my-style.safetensors")
    pair = {"clip_l": torch.zeros(3, 768), "clip_g": torch.zeros(3, 1280)}
    (emb / "sdxl").mkdir()
    save_file(pair, emb / "sdxl" / "xl-style.safetensors")
    save_file({"<cat>": torch.zeros(64)}, emb / "diffusers-cat.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2I_CLIP_TOKENIZER", str(base / "clip"))
        yield sd, emb


@pytest.fixture(scope="module")
def server(folders):
    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    sd, emb = folders
    with live_server(
        make_manager(toy_plugin, ldm), recipe="toy-diffusion", models_dir=sd.parent,
        embeddings_dir=emb,
    ) as live:  # fmt: skip
        yield live


def _sd_title(server) -> str:
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    return next(e["title"] for e in entries if e["filename"].endswith("tiny-sd.safetensors"))


def _pixels(server, prompt: str) -> np.ndarray:
    override = {"sd_model_checkpoint": _sd_title(server)}
    body = {**BODY, "prompt": prompt, "override_settings": override}
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    data = base64.b64decode(r.json()["images"][0])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_embeddings_lists_the_folder_as_a1111(server):
    listed = requests.get(f"{server.url}/sdapi/v1/embeddings", timeout=30).json()
    empty = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}
    assert listed["loaded"] == {
        "diffusers-cat": {**empty, "shape": 64, "vectors": 1},
        "my-style": {**empty, "shape": 64, "vectors": 2},
        "xl-style": {**empty, "shape": 2048, "vectors": 3},
    }
    assert listed["skipped"] == {}
    assert requests.post(f"{server.url}/sdapi/v1/refresh-embeddings", timeout=30).ok


def test_a_prompt_uses_an_embedding_by_its_file_name_as_the_engine(server, folders):
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    sd, emb = folders
    plain = _pixels(server, "a red cube in style")
    styled = _pixels(server, "a red cube in my-style")
    assert np.abs(plain - styled).max() > 0  # the embedding's vectors reached the UNet
    pipe = Engine.build(
        "ldm", plugins=make_manager(ldm), checkpoint=str(sd), embeddings_dir=str(emb)
    )
    direct = np.asarray(pipe("a red cube in my-style", **BODY).images[0]).astype(np.int16)
    assert np.array_equal(direct, styled)


def test_toy_models_get_no_embeddings_folder(server):
    state = server.app.state.t2i
    assert state.embedding_options(state.select("toy-diffusion")) == {}
    assert "embeddings_dir" in state.embedding_options(state.select(_sd_title(server)))


def test_pickles_and_foreign_files_are_listed_as_skipped_with_the_reason(tmp_path):
    """(The ldm recipe skips them too: tests/plugins/ldm/test_embeddings.py.)"""
    from t2i_server.embeddings import embedding_entries, holds_pickles

    (tmp_path / "old.pt").write_bytes(b"not unpickled here")
    save_file({"a": torch.zeros(2), "b": torch.zeros(3)}, tmp_path / "not-one.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    shut = embedding_entries(tmp_path, allow_pickle=False)
    assert shut["loaded"] == {} and sorted(shut["skipped"]) == ["cut", "not-one", "old"]
    assert "--allow-pickle" in shut["skipped"]["old"]["reason"]
    assert "not an embedding" in shut["skipped"]["not-one"]["reason"]
    assert "old" in embedding_entries(tmp_path, allow_pickle=True)["loaded"]
    assert holds_pickles(tmp_path) and not holds_pickles(tmp_path / "none")


def test_serve_help_documents_the_folders():
    import click
    from click.testing import CliRunner
    from t2i_server import plugin

    group = click.Group()
    plugin.t2i_register_commands(group)
    out = CliRunner().invoke(group, ["serve", "--help"]).output
    for flag in ("--embeddings-dir", "T2I_EMBEDDINGS_DIR", "--lora-dir", "T2I_LORA_DIR"):
        assert flag in out
