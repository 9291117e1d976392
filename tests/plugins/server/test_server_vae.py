"""Settings of Stable Diffusion checkpoints over the A1111 API: the VAE folder (``--vae-dir``:
/sdapi/v1/sd-vae, the ``sd_vae`` setting and per-request override, VAEs that cannot be used:
a 422 saying why, the setting unchanged) and clip skip (``CLIP_stop_at_last_layers``)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image
from server_live import live_server
from server_models import perturbed_vae, tiny_sd_file

from t2i.files import short_hash

pytest.importorskip("t2i_ldm")

BODY = {"prompt": "a red cube", "seed": 7, "steps": 2, "width": 16, "height": 16}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("vae_server")
    sd = tiny_sd_file(base / "models" / "tiny-sd.safetensors", base / "clip", text_layers=2)
    vaes = base / "VAE"
    perturbed_vae(sd, vaes / "my-vae.safetensors")
    perturbed_vae(sd, vaes / "sub" / "wide-vae.safetensors", latent_channels=16)
    (vaes / "old.pt").write_bytes(b"a pickle, not listed without --allow-pickle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2I_CLIP_TOKENIZER", str(base / "clip"))
        yield base / "models", vaes


@pytest.fixture(scope="module")
def server(folders):
    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    models, vaes = folders
    with live_server(
        make_manager(toy_plugin, ldm), recipe="toy-diffusion", models_dir=models, vae_dir=vaes
    ) as live:
        yield live


def _sd_title(server) -> str:
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    return next(e["title"] for e in entries if e["filename"].endswith("tiny-sd.safetensors"))


def _txt2img(server, **override):
    body = {**BODY, "override_settings": override} if override else BODY
    return requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)


def _pixels(response) -> np.ndarray:
    data = base64.b64decode(response.json()["images"][0])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_sd_vae_lists_the_folder_as_a1111(server, folders):
    _, vaes = folders
    listed = requests.get(f"{server.url}/sdapi/v1/sd-vae", timeout=30).json()
    names = ["my-vae.safetensors", "sub/wide-vae.safetensors"]
    assert listed == [
        {"model_name": name, "filename": str((vaes / name).resolve())} for name in names
    ]  # old.pt: a pickle, left out without --allow-pickle


def test_a_request_override_decodes_with_the_vae_as_the_engine_does(server, folders):
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    models, vaes = folders
    title = _sd_title(server)
    own = _txt2img(server, sd_model_checkpoint=title)
    chosen = _txt2img(server, sd_model_checkpoint=title, sd_vae="my-vae.safetensors")
    assert own.status_code == 200 and chosen.status_code == 200, chosen.text
    info = json.loads(chosen.json()["info"])
    assert info["sd_vae_name"] == "my-vae.safetensors"
    assert info["sd_vae_hash"] == short_hash(vaes / "my-vae.safetensors")
    assert "VAE: my-vae.safetensors" in info["infotexts"][0]
    assert json.loads(own.json()["info"])["sd_vae_name"] is None
    assert np.abs(_pixels(own) - _pixels(chosen)).mean() > 1  # the VAE shows
    pipe = Engine.build(
        "ldm",
        plugins=make_manager(ldm),
        checkpoint=str(models / "tiny-sd.safetensors"),
        vae=str(vaes / "my-vae.safetensors"),
    )
    fields = {k: v for k, v in BODY.items() if k != "prompt"}
    direct = np.asarray(pipe(BODY["prompt"], **fields).images[0]).astype(np.int16)
    assert np.abs(direct - _pixels(chosen)).max() == 0


def test_the_setting_applies_to_sd_checkpoints_and_is_ignored_by_other_models(server):
    title = _sd_title(server)
    try:
        r = requests.post(f"{server.url}/sdapi/v1/options", json={"sd_vae": "my-vae"}, timeout=120)
        assert r.status_code == 200, r.text  # set while toy-diffusion is selected: accepted
        options = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
        assert options["sd_vae"] == "my-vae"
        toy = _txt2img(server)
        assert toy.status_code == 200 and json.loads(toy.json()["info"])["sd_vae_name"] is None
        sd = _txt2img(server, sd_model_checkpoint=title)
        assert json.loads(sd.json()["info"])["sd_vae_name"] == "my-vae.safetensors"
    finally:
        requests.post(f"{server.url}/sdapi/v1/options", json={"sd_vae": "Automatic"}, timeout=60)
    sd = _txt2img(server, sd_model_checkpoint=title)
    assert json.loads(sd.json()["info"])["sd_vae_name"] is None


@pytest.mark.parametrize(
    ("vae", "says"),
    [("no-such-vae", "no VAE 'no-such-vae'"), ("sub/wide-vae.safetensors", "16-channel latents")],
)
def test_an_unusable_vae_is_a_422_and_the_setting_stays(server, vae, says):
    title = _sd_title(server)
    before = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    body = {"sd_model_checkpoint": title, "sd_vae": vae}
    r = requests.post(f"{server.url}/sdapi/v1/options", json=body, timeout=120)
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]
    after = requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()
    assert (after["sd_vae"], after["sd_model_checkpoint"]) == (
        before["sd_vae"],
        before["sd_model_checkpoint"],
    )
    r = _txt2img(server, sd_model_checkpoint=title, sd_vae=vae)
    assert r.status_code == 422 and says in r.json()["detail"]


def test_naming_a_vae_for_a_model_without_one_is_refused(server):
    r = _txt2img(server, sd_vae="my-vae.safetensors")  # toy-diffusion is selected
    assert r.status_code == 422
    assert r.json()["field"] == "sd_vae" and "takes no VAE" in r.json()["detail"]


def test_refresh_vae_rescans(server, folders):
    _, vaes = folders
    late = vaes / "late.safetensors"
    late.write_bytes((vaes / "my-vae.safetensors").read_bytes())
    try:
        assert requests.post(f"{server.url}/sdapi/v1/refresh-vae", timeout=30).ok
        names = [v["model_name"] for v in requests.get(f"{server.url}/sdapi/v1/sd-vae").json()]
        assert "late.safetensors" in names
    finally:
        late.unlink()
        requests.post(f"{server.url}/sdapi/v1/refresh-vae", timeout=30)


def test_serve_help_documents_the_vae_folder():
    import click
    from click.testing import CliRunner
    from t2i_server import plugin

    group = click.Group()
    plugin.t2i_register_commands(group)
    out = CliRunner().invoke(group, ["serve", "--help"]).output
    assert "--vae-dir" in out and "T2I_VAE_DIR" in out


def test_an_xyz_plot_over_vaes_by_their_names(server):
    title = _sd_title(server)
    body = {
        **BODY,
        "override_settings": {"sd_model_checkpoint": title},
        "script_name": "x/y/z plot",
        "script_args": ["VAE", "Automatic,my-vae.safetensors"],
    }
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    infotexts = json.loads(r.json()["info"])["infotexts"]
    assert len(infotexts) == 3  # the grid's, then the two cells'
    assert "VAE:" not in infotexts[1] and "VAE: my-vae.safetensors" in infotexts[2]
    own = _txt2img(server, sd_model_checkpoint=title)
    chosen = _txt2img(server, sd_model_checkpoint=title, sd_vae="my-vae.safetensors")
    data = r.json()["images"]
    cells = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d))).convert("RGB")) for d in data]
    assert np.array_equal(cells[1], _pixels(own)) and np.array_equal(cells[2], _pixels(chosen))
    body["script_args"] = ["VAE", "Automatic,nope"]
    bad = requests.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert bad.status_code == 422 and "no VAE 'nope'" in bad.json()["detail"]


def test_none_and_automatic_reach_the_recipe_as_a1111_means_them(server):
    """``Automatic`` leaves the recipe its rule (a VAE named after the checkpoint file);
    ``None`` asks the ldm recipe for the checkpoint's own even then; a model without a VAE
    gets neither."""
    state = server.app.state.t2i
    sd, toy = state.select(_sd_title(server)), state.select("toy-diffusion")
    assert state.vae_options(sd, "Automatic") == {}
    assert state.vae_options(sd, "None") == {"vae": "None"}
    assert state.vae_options(toy, "None") == {} and state.vae_options(toy, "Automatic") == {}
    path = state.vae_options(sd, "my-vae")["vae"]
    assert path.endswith("my-vae.safetensors")


def test_clip_skip_as_a_request_override_and_a_setting(server, folders):
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    models, _ = folders
    title = _sd_title(server)
    skipped = _txt2img(server, sd_model_checkpoint=title, CLIP_stop_at_last_layers=2)
    assert skipped.status_code == 200, skipped.text
    info = json.loads(skipped.json()["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    pipe = Engine.build(
        "ldm", plugins=make_manager(ldm), checkpoint=str(models / "tiny-sd.safetensors"),
        clip_skip=2,
    )  # fmt: skip
    fields = {k: v for k, v in BODY.items() if k != "prompt"}
    direct = np.asarray(pipe(BODY["prompt"], **fields).images[0]).astype(np.int16)
    assert np.array_equal(direct, _pixels(skipped))
    own = _txt2img(server, sd_model_checkpoint=title)
    assert json.loads(own.json()["info"])["clip_skip"] == 1
    assert not np.array_equal(_pixels(own), _pixels(skipped))
    try:
        body = {"CLIP_stop_at_last_layers": 2}
        assert requests.post(f"{server.url}/sdapi/v1/options", json=body, timeout=120).ok
        assert _setting(server, "CLIP_stop_at_last_layers") == 2
        again = _txt2img(server, sd_model_checkpoint=title)
        assert np.array_equal(_pixels(again), _pixels(skipped))
        assert _txt2img(server).status_code == 200  # toy-diffusion: the setting does not apply
    finally:
        requests.post(f"{server.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    bad = requests.post(f"{server.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "CLIP_stop_at_last_layers"
    assert _setting(server, "CLIP_stop_at_last_layers") == 1


def _setting(server, key: str):
    return requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()[key]
