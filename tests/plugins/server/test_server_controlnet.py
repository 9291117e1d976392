"""A1111's ControlNet extension API (``--controlnet-dir``): /controlnet/model_list,
module_list and version; txt2img / img2img units in ``alwayson_scripts.controlnet`` (with
the ldm family's preprocessors and control modes) steer a Stable Diffusion checkpoint
exactly as the engine's ``controlnet=`` option does; units that cannot be used are 422s
naming the problem."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps
from server_live import live_server
from server_models import random_controlnet, random_ip_adapter, tiny_sd_file

from t2i.files import short_hash

pytest.importorskip("t2i_ldm")

BODY = {"prompt": "a red cube", "negative_prompt": "a dog", "seed": 11, "steps": 3,
        "width": 16, "height": 16}  # fmt: skip
CN = "alwayson_scripts.controlnet.args[0]"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("controlnet_server")
    sd = tiny_sd_file(base / "models" / "tiny-sd.safetensors", base / "clip")
    cns = base / "ControlNet"
    control = random_controlnet(sd, cns / "control_tiny.safetensors")
    folder = cns / "sub" / "diffusers_cn"  # listed only: a diffusers folder's two files
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(control.read_bytes()[:64])
    (cns / "old.pth").write_bytes(b"a pickle, not listed without --allow-pickle")
    random_ip_adapter(sd, cns / "ipadapter" / "ip-adapter_tiny.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2I_CLIP_TOKENIZER", str(base / "clip"))
        yield sd, control, cns


@pytest.fixture(scope="module")
def server(folders):
    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    sd, _, cns = folders
    manager = make_manager(toy_plugin, ldm)
    with live_server(
        manager, recipe="toy-diffusion", models_dir=sd.parent, controlnet_dir=cns
    ) as live:
        yield live


def _b64(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def _sd_title(server) -> str:
    entries = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=30).json()
    return next(e["title"] for e in entries if e["filename"].endswith("tiny-sd.safetensors"))


def _post(server, units=None, route="txt2img", model=None, **extra):
    body = {**BODY, "override_settings": {"sd_model_checkpoint": model or _sd_title(server)}}
    if units is not None:
        body["alwayson_scripts"] = {"controlnet": {"args": units}}
    return requests.post(f"{server.url}/sdapi/v1/{route}", json={**body, **extra}, timeout=300)


def _pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["images"][0])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_model_module_lists_and_version_as_the_extension(server, folders):
    from t2i_server.controlnets import scan_controlnets

    from t2i_ldm.controlnet_apply import model_title

    _, control, cns = folders
    listed = requests.get(f"{server.url}/controlnet/model_list", timeout=30).json()
    title = f"control_tiny [{short_hash(control, 8)}]"
    assert title == model_title(control)
    ip = model_title(cns / "ipadapter" / "ip-adapter_tiny.safetensors")
    assert listed == {"model_list": [title, ip, model_title(cns / "sub" / "diffusers_cn")]}
    pickles = [c for c in scan_controlnets(cns, allow_pickle=True) if c.pickle]
    assert [c.name for c in pickles] == ["old.pth"]  # listed with --allow-pickle only
    modules = requests.get(f"{server.url}/controlnet/module_list", timeout=30).json()
    assert modules["module_list"][:2] == ["none", "invert"]
    assert set(modules["module_detail"]) == set(modules["module_list"])
    assert requests.get(f"{server.url}/controlnet/version", timeout=30).json() == {"version": 2}
    late = cns / "late.safetensors"
    late.write_bytes(control.read_bytes())
    try:
        stale = requests.get(f"{server.url}/controlnet/model_list", timeout=30).json()
        assert len(stale["model_list"]) == 3  # scanned at start; update=true rescans
        fresh = requests.get(f"{server.url}/controlnet/model_list?update=true", timeout=30).json()
        assert f"late [{short_hash(control, 8)}]" in fresh["model_list"]
    finally:
        late.unlink()
        requests.get(f"{server.url}/controlnet/model_list?update=true", timeout=30)


def test_a_txt2img_unit_steers_as_the_engine_does(server, folders):
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    sd, control, _ = folders
    hint = _image(24, 16, seed=1)  # not square: the resize mode matters
    unit = {"image": _b64(hint), "module": "none", "model": "control_tiny", "weight": 1.3,
            "resize_mode": 2, "guidance_start": 0.3, "pixel_perfect": True}  # fmt: skip
    steered, plain = _post(server, [unit]), _post(server)
    assert np.abs(_pixels(steered) - _pixels(plain)).mean() > 1  # the ControlNet shows
    pipe = Engine.build("ldm", plugins=make_manager(ldm), checkpoint=str(sd),
                        controlnet=str(control))  # fmt: skip
    fields = {k: v for k, v in BODY.items() if k != "prompt"}
    direct = pipe(BODY["prompt"], **fields, control_image=hint, control_weight=1.3,
                  control_start=0.3, control_resize="Resize and Fill")  # fmt: skip
    assert np.array_equal(np.asarray(direct.images[0]).astype(np.int16), _pixels(steered))
    info = json.loads(steered.json()["info"])
    assert info["infotexts"] == direct.infotexts
    assert f"ControlNet: control_tiny [{short_hash(control, 8)}]" in info["infotexts"][0]
    assert "ControlNet weight: 1.3, ControlNet start: 0.3" in info["infotexts"][0]
    assert "ControlNet resize mode: Resize and Fill" in info["infotexts"][0]
    assert info["extra_generation_params"]["ControlNet weight"] == "1.3"
    echoed = steered.json()["parameters"]["alwayson_scripts"]["controlnet"]["args"][0]
    assert echoed["image"] is None and echoed["model"] == "control_tiny"  # not echoed


def test_a_units_preprocessor_and_control_mode_reach_the_engine(server, folders):
    pytest.importorskip("cv2")
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    sd, control, _ = folders
    photo = Image.new("RGB", (16, 16), (30, 60, 90))
    photo.paste((240, 200, 10), (4, 3, 12, 13))
    unit = {"image": _b64(photo), "model": "control_tiny", "module": "canny",
            "threshold_a": 50, "threshold_b": 120, "control_mode": 1}  # fmt: skip
    pipe = Engine.build("ldm", plugins=make_manager(ldm), checkpoint=str(sd),
                        controlnet=str(control))  # fmt: skip
    fields = {k: v for k, v in BODY.items() if k != "prompt"}
    direct = pipe(BODY["prompt"], **fields, control_image=photo, control_module="canny",
                  control_threshold_a=50.0, control_threshold_b=120.0,
                  control_mode="My prompt is more important")  # fmt: skip
    got = _post(server, [unit])
    assert np.array_equal(np.asarray(direct.images[0]).astype(np.int16), _pixels(got))
    assert json.loads(got.json()["info"])["infotexts"] == direct.infotexts
    inverted = {"image": _b64(photo), "model": "control_tiny",
                "module": "invert (from white bg & black line)", "threshold_a": -1}  # fmt: skip
    by_hand = {"image": _b64(ImageOps.invert(photo)), "model": "control_tiny"}
    assert np.array_equal(_pixels(_post(server, [inverted])), _pixels(_post(server, [by_hand])))


def test_a_unit_names_its_model_by_title_name_or_file_name(server, folders):
    _, control, _ = folders
    hint = _b64(_image(16, 16, seed=2))
    names = [f"control_tiny [{short_hash(control, 8)}]", "control_tiny", control.name]
    images = [_pixels(_post(server, [{"image": hint, "model": n}])) for n in names]
    assert all(np.array_equal(images[0], other) for other in images[1:])


def test_an_xyz_checkpoint_axis_keeps_the_units(server):
    """A "Checkpoint name" axis builds each cell's model with the request's ControlNet (and
    its other options), not the bare checkpoint: each cell is the unit's txt2img."""
    unit = {"image": _b64(_image(16, 16, 2)), "model": "control_tiny"}
    title = _sd_title(server)
    plot = _post(server, [unit], script_name="x/y/z plot",
                 script_args=["Checkpoint name", title, "CFG Scale", "3,6"])  # fmt: skip
    assert plot.status_code == 200, plot.text
    cells = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d))).convert("RGB"))
             for d in plot.json()["images"][1:]]  # fmt: skip
    for cfg, cell in zip((3, 6), cells):
        assert np.array_equal(cell.astype(np.int16), _pixels(_post(server, [unit], cfg_scale=cfg)))


def test_a_disabled_unit_is_no_unit(server):
    plain = _pixels(_post(server))
    off = {"enabled": False, "image": _b64(_image(16, 16, 3)), "model": "control_tiny"}
    assert np.array_equal(_pixels(_post(server, [off])), plain)
    assert np.array_equal(_pixels(_post(server, [])), plain)
    odd = {"enabled": False, "model": "no-such-controlnet", "module": "canny"}  # never read
    assert np.array_equal(_pixels(_post(server, [odd])), plain)


def test_an_img2img_unit_without_an_image_steers_with_the_init_image(server):
    init = _b64(_image(16, 16, seed=4))
    extra = {"init_images": [init], "denoising_strength": 0.8}
    without = _post(server, [{"image": "", "model": "control_tiny"}], "img2img", **extra)
    given = _post(server, [{"image": init, "model": "control_tiny"}], "img2img", **extra)
    plain = _post(server, None, "img2img", **extra)
    assert np.array_equal(_pixels(without), _pixels(given))
    assert not np.array_equal(_pixels(without), _pixels(plain))


def test_a_webuiapi_controlnet_unit(server, folders):
    webuiapi = pytest.importorskip("webuiapi")
    _, control, _ = folders
    api = webuiapi.WebUIApi(port=server.port, sampler="Euler", steps=3)
    title = f"control_tiny [{short_hash(control, 8)}]"
    assert title in api.controlnet_model_list()
    assert "none" in api.controlnet_module_list() and api.controlnet_version() == 2
    api.util_set_model(_sd_title(server))
    try:
        run = {"prompt": "a red cube", "seed": 5, "width": 16, "height": 16}
        unit = webuiapi.ControlNetUnit(image=_image(16, 24, 6), model=title)
        # a dict of our own each call: webuiapi adds the units to its default dict (which
        # every later call of the process would then send)
        steered = api.txt2img(**run, controlnet_units=[unit], alwayson_scripts={})
        plain = api.txt2img(**run, alwayson_scripts={})
    finally:
        api.util_set_model("toy-diffusion")
    assert f"ControlNet: {title}" in steered.info["infotexts"][0]
    assert "ControlNet resize mode: Resize and Fill" in steered.info["infotexts"][0]
    assert "ControlNet" not in plain.info["infotexts"][0]
    assert steered.image.tobytes() != plain.image.tobytes()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"model": "nope"}, f"{CN}.model", "no ControlNet 'nope'; ControlNets: control_tiny ["),
        ({"model": None}, f"{CN}.model", "name the ControlNet"),
        ({"module": "depth_midas"}, f"{CN}.module", "send it ready as the image with module"),
        ({"control_mode": "Louder"}, f"{CN}.control_mode", "'Balanced' (0)"),
        ({"image": None}, f"{CN}.image", "txt2img has no init image"),
        ({"image": "not base64!"}, f"{CN}.image", "not valid base64"),
        ({"image": {"image": "aGVsbG8=", "mask": None}}, f"{CN}.image.image", "not an image"),
        ({"weight": 3}, f"{CN}.weight", "[0, 2.0]"),
        ({"resize_mode": "Stretch"}, f"{CN}.resize_mode", "'Just Resize' (0)"),
        ({"guidance_start": 0.6, "guidance_end": 0.5}, f"{CN}.guidance_start", "below"),
        ({"enabled": "yes"}, f"{CN}.enabled", "true or false"),
    ],
)
def test_a_unit_that_cannot_be_used_is_a_422_naming_it(server, change, field, says):
    unit = {"image": _b64(_image(16, 16, 7)), "model": "control_tiny", **change}
    r = _post(server, [unit])
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and says in r.json()["detail"]


def test_units_for_a_model_without_a_controlnet_option_are_refused(server):
    unit = {"image": _b64(_image(16, 16, 8)), "model": "control_tiny"}
    r = _post(server, [unit], model="toy-diffusion")
    assert r.status_code == 422
    assert r.json()["field"] == "alwayson_scripts.controlnet.args"
    assert "'toy-diffusion' takes no ControlNet" in r.json()["detail"]
    scripts = {"ControlNet": {"args": "not a list"}}  # the key in any case, as A1111's
    bad = _post(server, None, model="toy-diffusion", alwayson_scripts=scripts)
    assert bad.status_code == 422 and "must be a list of ControlNet units" in bad.json()["detail"]


def test_without_a_controlnet_folder_a_unit_is_refused_saying_so(folders):
    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    sd, _, _ = folders
    with live_server(make_manager(toy_plugin, ldm), recipe="toy-diffusion",
                     models_dir=sd.parent) as bare:  # fmt: skip
        listed = requests.get(f"{bare.url}/controlnet/model_list", timeout=30).json()
        assert listed == {"model_list": []}
        r = _post(bare, [{"image": _b64(_image(16, 16, 9)), "model": "control_tiny"}])
    assert r.status_code == 422 and "no --controlnet-dir given" in r.json()["detail"]


def test_serve_help_documents_the_controlnet_folder():
    import click
    from click.testing import CliRunner
    from t2i_server import plugin

    group = click.Group()
    plugin.t2i_register_commands(group)
    out = CliRunner().invoke(group, ["serve", "--help"]).output
    assert "--controlnet-dir" in out and "T2I_CONTROLNET_DIR" in out


def test_an_ip_adapter_unit_is_the_engines_image_prompt(server, folders):
    """The extension runs IP-Adapters as ControlNet units (module ip-adapter_clip_sd15, the
    weight its scale): the engine's ip_adapter with ip_image / ip_scale, beside a ControlNet
    unit too; its encoder folder beside it is no model of the list."""
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm

    sd, control, cns = folders
    adapter = cns / "ipadapter" / "ip-adapter_tiny.safetensors"
    picture, edges = _image(40, 40, 4), _image(16, 16, 5)
    ip_unit = {"image": _b64(picture), "model": "ip-adapter_tiny",
               "module": "ip-adapter_clip_sd15", "weight": 0.8}  # fmt: skip
    cn_unit = {"image": _b64(edges), "model": "control_tiny"}
    both = _pixels(_post(server, [ip_unit, cn_unit]))
    alone = _pixels(_post(server, [ip_unit]))
    pipe = Engine.build("ldm", plugins=make_manager(ldm), checkpoint=str(sd),
                        ip_adapter=str(adapter), controlnet=[str(control)])  # fmt: skip
    fields = {k: v for k, v in BODY.items() if k != "prompt"}
    direct = pipe(BODY["prompt"], ip_image=picture, ip_scale=0.8, control_image=edges, **fields)
    assert np.array_equal(both, np.asarray(direct.images[0]).astype(np.int16))
    assert np.abs(alone - both).max() > 0 and np.abs(alone - _pixels(_post(server))).max() > 0
    wrong = _post(server, [{**cn_unit, "module": "ip-adapter_clip_sd15"}])
    assert wrong.status_code == 422 and "is for IP-Adapter models" in wrong.json()["detail"]
    two = _post(server, [ip_unit, ip_unit])
    assert two.status_code == 422 and "one IP-Adapter unit" in two.json()["detail"]
