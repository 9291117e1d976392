"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

import base64
import io
import os
import shutil

import pytest
import requests
from PIL import Image
from server_live import live_server, toy_manager

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


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#sampler option').length > 0")
    yield page
    page.close()
    assert errors == []


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
