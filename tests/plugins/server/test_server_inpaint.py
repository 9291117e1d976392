"""``POST /sdapi/v1/img2img`` with A1111's inpainting fields (``mask`` base64, ``mask_blur``,
``inpainting_fill``, ``inpaint_full_res``, ``inpaint_full_res_padding``,
``inpainting_mask_invert``), with A1111's API defaults when a field is left out."""

import base64
import io
import json

import numpy as np
import requests
from PIL import Image

from t2i.infotext import parse_infotext


def b64(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def unb64(text):
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def _init_and_mask():
    rng = np.random.default_rng(1)
    init = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    return init, mask


def _post(server, **body):
    base = {"prompt": "a cube", "seed": 4, "steps": 4, "sampler_name": "Euler"}
    base |= {"width": 16, "height": 16, "denoising_strength": 0.9}
    return requests.post(f"{server.url}/sdapi/v1/img2img", json=base | body, timeout=60)


def test_mask_fields_inpaint_and_reach_the_infotext(toy_server):
    init, mask = _init_and_mask()
    r = _post(
        toy_server,
        init_images=[b64(init)],
        mask=b64(mask),
        mask_blur=0,
        inpainting_fill=2,
        inpaint_full_res=False,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    out = np.asarray(unb64(body["images"][0])).astype(int)
    diff = np.abs(out - np.asarray(init).astype(int))
    assert diff[:4].max() == 0 and diff[4:12, 4:12].mean() > 10
    info = parse_infotext(json.loads(body["info"])["infotexts"][0])
    assert info["Masked content"] == "latent noise" and "Mask blur" not in info
    assert body["parameters"]["mask"] is None  # not echoed back


def test_a1111_api_defaults_only_masked_fill_blur_4(toy_server):
    init, mask = _init_and_mask()
    r = _post(toy_server, init_images=[b64(init)], mask=b64(mask))
    assert r.status_code == 200, r.text
    info = parse_infotext(json.loads(r.json()["info"])["infotexts"][0])
    assert info["Mask blur"] == "4" and info["Masked content"] == "fill"
    assert info["Inpaint area"] == "Only masked" and info["Masked area padding"] == "0"


def test_a_painted_rgba_mask_reads_its_alpha(toy_server):
    init, mask = _init_and_mask()
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.putalpha(mask)
    r = _post(
        toy_server,
        init_images=[b64(init)],
        mask=b64(rgba),
        mask_blur=0,
        inpainting_mask_invert=1,
        inpaint_full_res=False,
    )
    assert r.status_code == 200, r.text
    out = np.asarray(unb64(r.json()["images"][0])).astype(int)
    diff = np.abs(out - np.asarray(init).astype(int))
    assert diff[4:12, 4:12].max() == 0 and diff[:4].mean() > 10  # inverted: the rest repainted


def test_a_mask_of_another_size_is_a_422_naming_the_field(toy_server):
    init, _ = _init_and_mask()
    r = _post(toy_server, init_images=[b64(init)], mask=b64(Image.new("L", (8, 8))))
    assert r.status_code == 422 and r.json()["field"] == "mask"
    assert "8x8 but the init image is 16x16" in r.text
    r = _post(toy_server, init_images=[b64(init)], mask="bm90IGFuIGltYWdl")
    assert r.status_code == 422 and r.json()["field"] == "mask"
