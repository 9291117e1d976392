"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

import base64
import io
import os
import shutil

import numpy as np
import pytest
import requests
from PIL import Image
from server_live import live_server, toy_manager
from server_models import perturbed_vae, random_controlnet, tiny_dalle_folder, tiny_sd_file

from t2i import Engine
from t2i.infotext import parse_infotext

CHROMIUM = os.environ.get("T2I_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("T2I_REQUIRE_CHROMIUM") == "1":  # CI: a missing browser is a failure
        raise RuntimeError(f"T2I_REQUIRE_CHROMIUM=1 but there is no chromium at {CHROMIUM}")
    pytest.skip(
        "headless Chromium is not installed (apt-get install -y chromium, or set "
        "T2I_CHROMIUM=/path/to/chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server():
    with live_server(toy_manager(), recipe="toy-diffusion") as live:
        yield live


def open_page(browser, server):
    """The page of ``server``, loaded; yields it, then checks it raised no script error."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#sampler option').length > 0")
    yield page
    page.close()
    assert errors == []


@pytest.fixture
def page(browser, server):
    yield from open_page(browser, server)


def newest_image(page, count=1):
    page.wait_for_function(
        f"document.querySelectorAll('#gallery img').length >= {count} && "
        "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)"
    )
    return page.locator("#gallery img").first.get_attribute("src")


def test_generate_matches_the_api_and_the_engine(page, server, tmp_path):
    page.fill("#prompt", "a red cube")
    page.select_option("#sampler", label="Heun")
    page.fill("#seed", "1234")
    page.fill("#width", "16")
    page.fill("#height", "16")
    page.fill("#steps", "4")
    page.click("#generate")
    src = newest_image(page)
    shown = requests.get(server.url + src).content
    api = requests.post(
        f"{server.url}/sdapi/v1/txt2img",
        json={
            "prompt": "a red cube",
            "sampler_name": "Heun",
            "seed": 1234,
            "steps": 4,
            "width": 16,
            "height": 16,
        },
    ).json()
    assert base64.b64decode(api["images"][0]) == shown  # the same PNG, infotext included
    alone = Engine.build("toy-diffusion", plugins=server.state.manager)(
        "a red cube", sampler="Heun", seed=1234, steps=4, width=16, height=16
    )
    assert Image.open(io.BytesIO(shown)).convert("RGB").tobytes() == alone.images[0].tobytes()
    caption = page.locator("#gallery figcaption").first.inner_text()
    assert "Seed: 1234" in caption and "Sampler: Heun" in caption
    page.fill("#seed", "1")
    page.fill("#prompt", "something else")
    page.locator("#gallery .reuse").first.click()  # "reuse settings"
    page.wait_for_function("document.querySelector('#seed').value === '1234'")
    assert page.input_value("#prompt") == "a red cube"
    assert page.input_value("#sampler") == "Heun"
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 1000


def test_fields_follow_the_family(page):
    assert page.is_visible("#steps") and page.is_visible("#schedule")
    page.select_option("#recipe", "toy-gan")
    assert not page.is_visible("#steps") and not page.is_visible("#schedule")
    assert page.inner_text("#cfg-label") == "Truncation ψ"
    assert page.inner_text("#family") == "GAN"
    page.select_option("#recipe", "toy-autoregressive")
    assert page.is_visible("#top_k") and not page.is_visible("#steps")
    assert not page.is_visible("#img2img-box")
    page.select_option("#recipe", "toy-diffusion")
    assert not page.is_visible("#top_k") and page.is_visible("#img2img-box")


def test_png_info_drop_zone_and_img2img(page, server, tmp_path):
    png = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (10, 200, 40)).save(png)
    page.fill("#prompt", "a green square")
    page.fill("#seed", "77")
    page.fill("#steps", "3")
    page.click("#img2img-box summary")
    page.set_input_files("#init_image", str(png))
    page.fill("#strength", "0.5")
    page.click("#generate")
    src = newest_image(page)
    made = requests.get(server.url + src).content
    info = parse_infotext(Image.open(io.BytesIO(made)).info["parameters"])
    assert info["Denoising strength"] == "0.5" and info["Seed"] == "77"
    page.click("#clear-init")
    out = tmp_path / "made.png"
    out.write_bytes(made)
    page.set_input_files("#pnginfo-file", str(out))
    page.wait_for_selector("#pnginfo-text:not([hidden])")
    assert "Seed: 77" in page.inner_text("#pnginfo-text")
    page.fill("#seed", "5")
    page.click("#pnginfo-reuse")
    assert page.input_value("#seed") == "77"


def test_xyz_plot_live_preview_and_interrupt(page, server):
    page.fill("#prompt", "a cube")
    page.fill("#seed", "3")
    page.fill("#steps", "2")
    page.click("#xyz-box summary")
    page.select_option("#axis-x-field", "cfg_scale")
    page.fill("#axis-x-values", "1,3")
    page.select_option("#axis-y-field", "steps")
    page.fill("#axis-y-values", "2-3")
    page.click("#generate")
    newest_image(page, 5)
    assert page.locator("#gallery img").nth(0).get_attribute("alt") == "grid"
    page.fill("#axis-y-values", "")
    page.fill("#axis-x-values", "")
    page.fill("#prompt", "a cube|red")
    page.check("#prompt-matrix")
    page.click("#generate")
    newest_image(page, 8)  # 5 before, now a grid and 2 images
    captions = page.locator("#gallery figcaption").all_inner_texts()[:3]
    assert [c.split("\n")[0] for c in captions] == ["a cube", "a cube", "a cube, red"]
    page.uncheck("#prompt-matrix")
    page.fill("#axis-x-values", "")
    page.fill("#axis-y-values", "")
    page.fill("#steps", "1000")
    page.fill("#width", "32")
    page.fill("#height", "32")
    page.fill("#batch_count", "8")  # long enough to be running when Interrupt lands
    page.select_option("#sampler", label="Euler")
    page.click("#generate")
    try:
        page.wait_for_selector("#preview:not([hidden])", timeout=60_000)
    except sync_api.TimeoutError as exc:
        status = page.inner_text("#status") + " | " + page.inner_text("#error")
        raise AssertionError(status) from exc
    width = page.evaluate("document.querySelector('#progress').style.width")
    assert width.endswith("%")
    with page.expect_response("**/sdapi/v1/interrupt") as answer:
        page.click("#interrupt")
    assert answer.value.ok
    try:
        page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('cancelled')"
        )
    except sync_api.TimeoutError as exc:
        jobs = requests.get(server.url + "/t2i/v1/jobs").json()
        status = page.inner_text("#status") + " | " + str([(j["status"], j["step"]) for j in jobs])
        raise AssertionError(status) from exc
    assert not page.is_disabled("#generate")
    assert int(page.inner_text("#status").split(": ")[1].split()[0]) < 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder (``--ckpt-dir``) of a tiny DALL-E folder and a tiny SD single file, its
    CLIP vocabulary in ``$T2I_CLIP_TOKENIZER``; beside it a VAE and a ControlNet folder."""
    pytest.importorskip("t2i_ldm")
    pytest.importorskip("t2i_dalle")
    base = tmp_path_factory.mktemp("page-models")
    root = base / "models"
    sd = tiny_sd_file(root / "sd" / "tiny-sd.safetensors", base / "clip")
    tiny_dalle_folder(root / "tiny-dalle")
    perturbed_vae(sd, base / "VAE" / "my-vae.safetensors")  # the page's VAE select
    random_controlnet(sd, base / "ControlNet" / "control_tiny.safetensors")  # its ControlNet box
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2I_CLIP_TOKENIZER", str(base / "clip"))
        yield root


@pytest.fixture(scope="module")
def folder_server(models):
    from t2i_dalle import plugin as dalle

    from t2i.testing import make_manager, toy_plugin
    from t2i_ldm import plugin as ldm

    manager = make_manager(toy_plugin, ldm, dalle)
    vaes, cns = models.parent / "VAE", models.parent / "ControlNet"
    with live_server(
        manager, recipe="toy-diffusion", models_dir=models, vae_dir=vaes, controlnet_dir=cns
    ) as live:
        yield live


@pytest.fixture
def folder_page(browser, folder_server):
    yield from open_page(browser, folder_server)


@pytest.mark.parametrize(
    ("name", "family", "settings"),
    [
        ("tiny-dalle", "autoregressive", {}),
        ("sd/tiny-sd.safetensors", "diffusion",
         {"steps": 2, "width": 16, "height": 16, "sampler_name": "Euler"}),
    ],
)  # fmt: skip
def test_a_models_folder_checkpoint_generates_as_the_api(
    folder_page, folder_server, name, family, settings
):
    page, url = folder_page, folder_server.url
    entries = requests.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()
    ckpt = next(e for e in entries if e["title"].startswith(f"{name} ["))
    title = ckpt["title"]
    listed = page.eval_on_selector_all("#recipe option", "os => os.map(o => o.value)")
    assert title in listed and "toy-diffusion" in listed  # recipes, then the folder
    page.select_option("#recipe", value=title)
    page.wait_for_function(
        "(t) => document.querySelector('#recipe').dataset.applied === t", arg=title
    )
    described = page.evaluate("(t) => state.recipes[t]", title)
    assert "error" not in described, described.get("error")  # built WITH the checkpoint
    assert described["recipe"] == ckpt["recipe"] and described["checkpoint"]["hash"] == ckpt["hash"]
    assert page.inner_text("#family") == family
    assert page.is_visible("#steps") == (family == "diffusion")
    page.fill("#prompt", "a red cube")
    page.fill("#seed", "21")
    for field in ("steps", "width", "height"):
        if field in settings:
            page.fill(f"#{field}", str(settings[field]))
    if "sampler_name" in settings:
        page.select_option("#sampler", label=settings["sampler_name"])
    page.click("#generate")
    shown = requests.get(url + newest_image(page), timeout=30).content
    api = requests.post(
        f"{url}/sdapi/v1/txt2img",
        json={"prompt": "a red cube", "seed": 21, **settings,
              "override_settings": {"sd_model_checkpoint": title}},
        timeout=120,
    ).json()  # fmt: skip
    assert base64.b64decode(api["images"][0]) == shown  # the same PNG, infotext included
    info = parse_infotext(Image.open(io.BytesIO(shown)).info["parameters"])
    assert info["Model hash"] == ckpt["hash"] and info["Seed"] == "21"
    page.select_option("#recipe", value="toy-diffusion")
    page.wait_for_function("document.querySelector('#recipe').dataset.applied === 'toy-diffusion'")
    page.locator("#gallery .reuse").first.click()  # "reuse settings" picks the checkpoint again
    page.wait_for_function(
        "(t) => document.querySelector('#recipe').dataset.applied === t", arg=title
    )
    assert page.input_value("#seed") == "21"


def test_the_vae_select_decodes_an_sd_checkpoint_as_the_api(folder_page, folder_server):
    page, url = folder_page, folder_server.url
    assert page.is_visible("#vae")
    listed = page.eval_on_selector_all("#vae option", "os => os.map(o => o.value)")
    assert listed == ["Automatic", "my-vae.safetensors"]
    entries = requests.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()
    title = next(e["title"] for e in entries if e["title"].startswith("sd/tiny-sd.safetensors ["))
    page.select_option("#recipe", value=title)
    page.wait_for_function(
        "(t) => document.querySelector('#recipe').dataset.applied === t", arg=title
    )
    page.select_option("#vae", value="my-vae.safetensors")
    settings = {"steps": 2, "width": 16, "height": 16, "seed": 5}
    page.fill("#prompt", "a red cube")
    for field, value in settings.items():
        page.fill(f"#{field}", str(value))
    page.click("#generate")
    shown = requests.get(url + newest_image(page), timeout=30).content
    info = parse_infotext(Image.open(io.BytesIO(shown)).info["parameters"])
    assert info["VAE"] == "my-vae.safetensors"
    override = {"sd_model_checkpoint": title, "sd_vae": "my-vae.safetensors"}
    api = requests.post(
        f"{url}/sdapi/v1/txt2img",
        json={"prompt": "a red cube", **settings, "override_settings": override},
        timeout=120,
    ).json()
    assert base64.b64decode(api["images"][0]) == shown


def pick_model(page, url, prefix):
    """Select the models-folder checkpoint whose title starts with ``prefix [`` (or a recipe:
    ``prefix`` itself) and wait for the page to apply it; its title."""
    entries = requests.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()
    title = next((e["title"] for e in entries if e["title"].startswith(f"{prefix} [")), prefix)
    page.select_option("#recipe", value=title)
    page.wait_for_function(
        "(t) => document.querySelector('#recipe').dataset.applied === t", arg=title
    )
    return title


CN_SETTINGS = {"steps": 3, "width": 16, "height": 16, "seed": 8}
CN_UNIT = {"module": "none", "weight": 1.5, "guidance_start": 0, "guidance_end": 1,
           "control_mode": "Balanced", "resize_mode": "Crop and Resize"}  # fmt: skip
"""The unit the page sends (every key, the defaults included) for weight 1.5, module none."""


def controlnet_on_page(page, url, hint=None):
    """Pick the tiny SD checkpoint, enable a ControlNet unit of weight 1.5, module none (with
    ``hint`` as its control image), fill :data:`CN_SETTINGS`; the API body of the same job
    (its unit without an image)."""
    title = pick_model(page, url, "sd/tiny-sd.safetensors")
    page.click("#controlnet-box summary")
    page.check("#controlnet-enabled")
    if hint is not None:
        page.set_input_files("#controlnet-image", str(hint))
        page.wait_for_selector("#controlnet-preview:not([hidden])")
    page.fill("#controlnet-weight", "1.5")
    page.select_option("#controlnet-module", "none")
    page.fill("#prompt", "a red cube")
    for field, value in CN_SETTINGS.items():
        page.fill(f"#{field}", str(value))
    unit = {**CN_UNIT, "model": page.input_value("#controlnet-model")}
    return {"prompt": "a red cube", **CN_SETTINGS,
            "override_settings": {"sd_model_checkpoint": title},
            "alwayson_scripts": {"controlnet": {"args": [unit]}}}  # fmt: skip


def random_png(path):
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path, base64.b64encode(path.read_bytes()).decode()


def test_the_controlnet_box_shows_for_sd_checkpoints_only(folder_page, folder_server):
    page, url = folder_page, folder_server.url
    assert not page.is_visible("#controlnet-box")  # toy-diffusion takes no ControlNet
    pick_model(page, url, "tiny-dalle")
    assert not page.is_visible("#controlnet-box")  # nor does a DALL-E checkpoint
    pick_model(page, url, "sd/tiny-sd.safetensors")
    assert page.is_visible("#controlnet-box")
    page.click("#controlnet-box summary")
    listed = page.eval_on_selector_all("#controlnet-model option", "os => os.map(o => o.value)")
    assert listed == requests.get(f"{url}/controlnet/model_list", timeout=30).json()["model_list"]
    assert len(listed) == 1 and listed[0].startswith("control_tiny [")
    assert page.eval_on_selector_all("#controlnet-module option", "os => os[0].value") == "none"
    defaults = {"weight": "1", "start": "0", "end": "1", "control-mode": "Balanced",
                "resize-mode": "Crop and Resize"}  # fmt: skip
    assert {k: page.input_value(f"#controlnet-{k}") for k in defaults} == defaults
    assert not page.is_checked("#controlnet-enabled")


def test_a_controlnet_unit_steers_an_sd_checkpoint_as_the_api(folder_page, folder_server, tmp_path):
    page, url = folder_page, folder_server.url
    hint, hint_b64 = random_png(tmp_path / "hint.png")
    body = controlnet_on_page(page, url, hint)
    page.click("#generate")
    shown = requests.get(url + newest_image(page), timeout=30).content
    body["alwayson_scripts"]["controlnet"]["args"][0]["image"] = hint_b64
    api = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120).json()
    assert base64.b64decode(api["images"][0]) == shown  # the same PNG, infotext included
    caption = page.locator("#gallery figcaption").first.inner_text()
    assert "ControlNet: control_tiny [" in caption and "ControlNet weight: 1.5" in caption
    del body["alwayson_scripts"]
    plain = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120).json()
    assert base64.b64decode(plain["images"][0]) != shown  # the unit steered


def test_a_controlnet_unit_without_an_image_is_the_init_image(folder_page, folder_server, tmp_path):
    page, url = folder_page, folder_server.url
    init, init_b64 = random_png(tmp_path / "init.png")
    body = controlnet_on_page(page, url)
    page.click("#generate")  # txt2img: no init image to stand in, a 422
    page.wait_for_selector("#error:not([hidden])")
    error = page.inner_text("#error")
    assert error.startswith("422: alwayson_scripts.controlnet.args[0].image: give the control")
    assert "txt2img has no init image" in error
    page.click("#img2img-box summary")
    page.set_input_files("#init_image", str(init))
    page.fill("#strength", "0.8")
    page.click("#generate")
    shown = requests.get(url + newest_image(page), timeout=30).content
    assert page.is_hidden("#error")
    body.update(init_images=[init_b64], denoising_strength=0.8)
    api = requests.post(f"{url}/sdapi/v1/img2img", json=body, timeout=120).json()
    assert base64.b64decode(api["images"][0]) == shown
