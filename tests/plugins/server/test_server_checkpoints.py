"""The models folder (``--ckpt-dir``): checkpoints in /sdapi/v1/sd-models, switching to them,
and files that cannot be used (skipped with a log line; a 422 when asked for)."""

from __future__ import annotations

import json
import struct

import pytest
import requests
from server_live import live_server
from server_models import diffusers_folder, sd_ckpt, tiny_dalle_folder, tiny_sd_file
from structlog.testing import capture_logs
from t2i_server.checkpoints import UnusableCheckpoint, file_keys, identify, scan

from t2i.files import short_hash

pytest.importorskip("t2i_ldm")
pytest.importorskip("t2i_dalle")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder of every layout, good and bad; its SD file's CLIP vocabulary is in
    ``$T2I_CLIP_TOKENIZER`` (single files carry none)."""
    base = tmp_path_factory.mktemp("models")
    root = base / "models"
    sd = tiny_sd_file(root / "sd" / "tiny-sd.safetensors", base / "clip")
    tiny_dalle_folder(root / "tiny-dalle")
    diffusers_folder(root / "sd-diffusers", "StableDiffusionPipeline")
    diffusers_folder(root / "sd3", "StableDiffusion3Pipeline")
    data = sd.read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (root / "unknown.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    (root / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    sd_ckpt(root / "old.ckpt")
    (root / "readme.txt").write_text("not scanned")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2I_CLIP_TOKENIZER", str(base / "clip"))
        yield root


def _manager():
    from t2i_dalle import plugin as dalle

    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    return make_manager(toy_plugin, ldm, dalle)


def test_scan_lists_each_layout_and_skips_bad_files_with_a_log_line(models):
    with capture_logs() as logs:
        found = scan(models, lambda name: name in ("ldm", "dalle-shapes"))
    by_name = {c.name: c for c in found.checkpoints}
    assert sorted(by_name) == ["old.ckpt", "sd-diffusers", "sd/tiny-sd.safetensors", "tiny-dalle"]
    sd = by_name["sd/tiny-sd.safetensors"]
    assert (sd.recipe, sd.family, sd.model_name) == ("ldm", "diffusion", "sd_tiny-sd")
    assert sd.hash == short_hash(sd.path) and len(sd.hash) == 10 and len(sd.sha256) == 64
    assert sd.title == f"sd/tiny-sd.safetensors [{sd.hash}]"
    assert sd.options() == {"checkpoint": str(sd.path)}
    dalle = by_name["tiny-dalle"]
    assert (dalle.recipe, dalle.family) == ("dalle-shapes", "tokens")
    assert dalle.hash == short_hash(models / "tiny-dalle" / "transformer.safetensors")
    assert by_name["sd-diffusers"].recipe == "ldm"
    assert by_name["old.ckpt"].layout.pickle and by_name["old.ckpt"].options()["allow_pickle"]
    skipped = {k.split("/models/")[-1]: v for k, v in found.skipped.items()}
    assert sorted(skipped) == ["broken/truncated.safetensors", "garbage.ckpt", "sd3",
                               "unknown.safetensors"]  # fmt: skip
    assert "truncated" in skipped["broken/truncated.safetensors"]
    assert "unknown layout" in skipped["unknown.safetensors"]
    assert "StableDiffusion3Pipeline" in skipped["sd3"]
    lines = [e for e in logs if e["event"] == "checkpoint_skipped"]
    assert len(lines) == 4 and all(e["reason"] for e in lines)


def test_recipes_not_installed_are_skipped(models):
    found = scan(models, lambda name: name == "dalle-shapes")
    assert [c.name for c in found.checkpoints] == ["tiny-dalle"]
    assert "no installed plugin" in found.why_skipped("sd/tiny-sd.safetensors")


def test_ckpt_keys_are_read_without_unpickling(models, tmp_path):
    keys, pickled = file_keys(models / "old.ckpt")
    assert pickled and "model.diffusion_model.input_blocks.0.0.weight" in keys
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(tmp_path / "ran").encode() + b"'\ntR.")
    with pytest.raises(UnusableCheckpoint):  # no SD keys; nothing ran
        identify(evil)
    assert not (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def server(models):
    with live_server(_manager(), recipe="toy-diffusion", models_dir=models) as live:
        yield live


def _post_options(server, name):
    return requests.post(
        f"{server.url}/sdapi/v1/options", json={"sd_model_checkpoint": name}, timeout=120
    )


def test_sd_models_lists_recipes_then_checkpoints(server, models):
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    titles = [e["title"] for e in entries]
    assert "toy-diffusion" in titles and "dalle-shapes" in titles
    sd = next(e for e in entries if e["filename"].endswith("tiny-sd.safetensors"))
    digest = short_hash(models / "sd" / "tiny-sd.safetensors", 64)
    assert sd == {
        "title": f"sd/tiny-sd.safetensors [{digest[:10]}]",
        "model_name": "sd_tiny-sd",
        "hash": digest[:10],
        "sha256": digest,
        "filename": str((models / "sd" / "tiny-sd.safetensors").resolve()),
        "config": None,
        "recipe": "ldm",
        "family": "diffusion",
        "format": "Stable Diffusion single file",
    }
    assert not any("truncated" in t or "unknown" in t for t in titles)


def test_switching_to_checkpoints_of_two_families(server):
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    sd = next(e for e in entries if e["filename"].endswith("tiny-sd.safetensors"))
    dalle = next(e for e in entries if e["filename"].endswith("tiny-dalle"))
    assert _post_options(server, sd["title"]).status_code == 200
    options = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    assert options["sd_model_checkpoint"] == sd["title"]
    assert options["sd_checkpoint_hash"] == sd["sha256"]
    body = {"prompt": "a red cube", "seed": 3, "steps": 2, "width": 16, "height": 16}
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sd_model_hash"] == sd["hash"] and info["sd_model_name"] == "tiny-sd"
    assert _post_options(server, dalle["model_name"]).status_code == 200  # a name works too
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "a red cube", "seed": 1},
                      timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["width"] == 64
    current = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    assert current["sd_model_checkpoint"] == dalle["title"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("broken/truncated.safetensors", "truncated"),
        ("unknown.safetensors", "unknown layout"),
        ("old.ckpt", "--allow-pickle"),
        ("no-such-model", "no recipe or checkpoint"),
    ],
)
def test_switching_to_an_unusable_checkpoint_is_a_422(server, name, says):
    before = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    r = _post_options(server, name)
    assert r.status_code == 422
    assert r.json()["field"] == "sd_model_checkpoint" and says in r.json()["detail"]
    after = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    assert after["sd_model_checkpoint"] == before["sd_model_checkpoint"]


def test_refresh_checkpoints_rescans(server, models):
    (models / "late.safetensors").write_bytes((models / "sd" / "tiny-sd.safetensors").read_bytes())
    try:
        assert requests.post(f"{server.url}/sdapi/v1/refresh-checkpoints", timeout=30).ok
        names = [e["model_name"] for e in requests.get(f"{server.url}/sdapi/v1/sd-models").json()]
        assert "late" in names
        native = requests.get(f"{server.url}/t2i/v1/recipes", timeout=30).json()
        assert "late" in [c["model_name"] for c in native["checkpoints"]]
    finally:
        (models / "late.safetensors").unlink()
        requests.post(f"{server.url}/sdapi/v1/refresh-checkpoints", timeout=30)


def test_serve_help_documents_the_models_folder():
    import click
    from click.testing import CliRunner
    from t2i_server import plugin

    group = click.Group()
    plugin.t2i_register_commands(group)
    out = CliRunner().invoke(group, ["serve", "--help"]).output
    assert "--ckpt-dir" in out and "T2I_MODELS_DIR" in out and "--allow-pickle" in out


def test_model_info_builds_the_recipe_with_the_checkpoint(server):
    """``/t2i/v1/model-info`` (what the page asks when a checkpoint is picked): the recipe is
    built with ``checkpoint=`` (dalle-shapes without one has no shipped weights here)."""
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    dalle = next(e for e in entries if e["filename"].endswith("tiny-dalle"))
    r = requests.get(f"{server.url}/t2i/v1/model-info", params={"name": dalle["title"]})
    assert r.status_code == 200, r.text
    info = r.json()
    assert "error" not in info and info["family"] == "tokens"
    assert (info["name"], info["recipe"]) == (dalle["title"], "dalle-shapes")
    assert info["checkpoint"] == dalle and "top_k" in info["fields"]
    assert (
        requests.get(f"{server.url}/t2i/v1/model-info", params={"name": "toy-gan"}).json()["family"]
        == "generator"
    )
    state = server.state
    keys = [k for k in state._info if k[0] == "dalle-shapes" and len(k) == 3]
    assert keys == [("dalle-shapes", dalle["filename"], dalle["sha256"])]
    bad = requests.get(f"{server.url}/t2i/v1/model-info", params={"name": "old.ckpt"})
    assert bad.status_code == 422 and "--allow-pickle" in bad.json()["detail"]
    assert bad.json()["field"] == "name"


@pytest.mark.parametrize(
    "class_name",
    [
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
    ],
)
def test_sdxl_and_inpainting_folders_go_to_the_ldm_recipe(tmp_path, class_name):
    layout = identify(diffusers_folder(tmp_path / class_name, class_name))
    assert layout.recipe == "ldm" and class_name in layout.kind


def test_sdxl_single_file_is_named_as_such(tmp_path):
    import torch

    from t2i.checkpoints import save_safetensors

    keys = [
        "model.diffusion_model.label_emb.0.0.weight",
        "conditioner.embedders.1.model.ln_final.weight",
    ]
    save_safetensors({k: torch.zeros(2) for k in keys}, tmp_path / "xl.safetensors")
    layout = identify(tmp_path / "xl.safetensors")
    assert layout.recipe == "ldm" and layout.kind == "Stable Diffusion XL single file"
