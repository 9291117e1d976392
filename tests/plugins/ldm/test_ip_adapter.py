"""IP-Adapter (``ip_adapter=`` option): the image equals diffusers' ``load_ip_adapter`` +
``ip_adapter_image`` on random weights in h94/IP-Adapter's file layout (tiny SD and a tiny
CLIP vision tower), at several scales; bad files and requests get clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.graph.errors import NodeExecutionError
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


def _adapter_state(unet, embed_dim: int, std: float = 0.3) -> dict[str, torch.Tensor]:
    """A random plain IP-Adapter for ``unet`` (diffusers' UNet) in h94's key layout: one
    to_k_ip / to_v_ip pair per cross-attention, ids 1, 3, 5 ... in processor order."""
    g = torch.Generator().manual_seed(5)
    width = unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(4 * width, embed_dim, generator=g) * std,
        "image_proj.proj.bias": torch.randn(4 * width, generator=g) * std,
        "image_proj.norm.weight": 1 + torch.randn(width, generator=g) * 0.1,
        "image_proj.norm.bias": torch.randn(width, generator=g) * 0.1,
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            module = unet.get_submodule(name.removesuffix(".processor"))
            for leaf in ("to_k_ip", "to_v_ip"):
                w = torch.randn(module.to_k.out_features, width, generator=g) * std
                state[f"ip_adapter.{key_id}.{leaf}.weight"] = w
            key_id += 2
    return state


def _tiny_encoder():
    """A tiny CLIP vision tower (224 px input, as CLIP's image processor crops)."""
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
        image_size=224, patch_size=32, projection_dim=24,
    )  # fmt: skip
    return transformers.CLIPVisionModelWithProjection(config).eval()


@pytest.fixture(scope="module")
def sd_with_ip_adapter(tmp_path_factory, make_tiny_sd):
    root = tmp_path_factory.mktemp("ip_adapter")
    pipe, folder = make_tiny_sd(root, vae_std=0.1)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.normal_(0.0, 0.2)
    pipe.save_pretrained(folder, safe_serialization=True)
    encoder = _tiny_encoder()
    models = root / "models"
    encoder.save_pretrained(models / "image_encoder", safe_serialization=True)
    save_file(_adapter_state(pipe.unet, 24), str(models / "ip-adapter_tiny.safetensors"))
    return pipe, folder, models


def _image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def _ours(folder, models, seed, **fields):
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        ip_adapter=str(models / "ip-adapter_tiny.safetensors"))  # fmt: skip
    result = pipe(PROMPT, negative_prompt=NEGATIVE, steps=5, cfg_scale=6.0, seed=seed,
                  width=32, height=32, sampler="euler", schedule="linspace", **fields)  # fmt: skip
    return np.asarray(result.images[0]).astype(np.int16), result


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_same_image_as_diffusers_ip_adapter(sd_with_ip_adapter, scale):
    _, folder, models = sd_with_ip_adapter
    ref = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    ref.set_progress_bar_config(disable=True)
    ref.load_ip_adapter(str(models.parent), subfolder="models",
                        weight_name="ip-adapter_tiny.safetensors")  # fmt: skip
    ref.set_ip_adapter_scale(scale)
    seed, image = int(torch.randint(0, 2**31, (1,))), _image(3)
    out = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=6.0,
              height=32, width=32, ip_adapter_image=image, output_type="np",
              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    expected = np.round(out.images[0] * 255).astype(np.int16)
    got, result = _ours(folder, models, seed, ip_image=image, ip_scale=scale)
    assert np.abs(got - expected).max() <= 2
    plain, _ = _ours(folder, models, seed, ip_image=image, ip_scale=0.0)
    assert np.abs(plain - got).max() > 3  # the image prompt steers the result
    white, _ = _ours(folder, models, seed, ip_image=Image.new("RGB", (40, 40), "white"),
                     ip_scale=scale)  # fmt: skip
    assert np.abs(white - got).max() > 0  # and another image steers it elsewhere
    assert "IP-Adapter: ip-adapter_tiny [" in result.infotexts[0]
    assert f"IP-Adapter scale: {scale}" in result.infotexts[0]


def test_scale_zero_is_the_plain_model(sd_with_ip_adapter):
    _, folder, models = sd_with_ip_adapter
    seed = int(torch.randint(0, 2**31, (1,)))
    off, _ = _ours(folder, models, seed, ip_image=_image(3), ip_scale=0.0)
    plain = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder))
    base = plain(PROMPT, negative_prompt=NEGATIVE, steps=5, cfg_scale=6.0, seed=seed, width=32,
                 height=32, sampler="euler", schedule="linspace")  # fmt: skip
    assert np.array_equal(off, np.asarray(base.images[0]).astype(np.int16))


def test_bad_adapters_and_requests_get_clear_errors(sd_with_ip_adapter, tmp_path):
    _, folder, models = sd_with_ip_adapter

    def build(adapter, **options):
        return Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                            ip_adapter=str(adapter), **options)  # fmt: skip

    with pytest.raises(CheckpointError, match="no such IP-Adapter"):
        build(tmp_path / "missing.safetensors")
    save_file({"image_proj.latents": torch.zeros(1, 16, 8)}, str(tmp_path / "plus.safetensors"))
    with pytest.raises(CheckpointError, match="IP-Adapter Plus"):
        build(tmp_path / "plus.safetensors", image_encoder=str(models / "image_encoder"))
    save_file({"lora_up.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(CheckpointError, match="not an IP-Adapter"):
        build(tmp_path / "lora.safetensors", image_encoder=str(models / "image_encoder"))
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((models / "ip-adapter_tiny.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="no image_encoder folder"):
        build(alone)
    pipe = build(models / "ip-adapter_tiny.safetensors")
    with pytest.raises(NodeExecutionError, match="give the image prompt"):
        pipe(PROMPT, steps=2, width=32, height=32)
    state = dict(_adapter_state(diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8,
        attention_head_dim=2), 24))  # fmt: skip
    save_file(state, str(models / "other.safetensors"))  # another UNet's layer count
    with pytest.raises(NodeExecutionError, match="cross-attention layers"):
        build(models / "other.safetensors")(PROMPT, ip_image=_image(1), steps=2, width=32,
                                            height=32)  # fmt: skip


def test_sdxl_ip_adapter_same_image_as_diffusers(tiny_sdxl, tmp_path):
    """An SDXL IP-Adapter (per-level transformer depth, no attention at the first level):
    each cross-attention found in diffusers' processor order; the image of diffusers'
    StableDiffusionXLPipeline with the adapter loaded."""
    pipe, folder, _ = tiny_sdxl
    encoder = _tiny_encoder()
    models = tmp_path / "sdxl_models"
    encoder.save_pretrained(models / "image_encoder", safe_serialization=True)
    save_file(_adapter_state(pipe.unet, 24, std=0.5), str(models / "ip-adapter_xl.safetensors"))
    ref = diffusers.StableDiffusionXLPipeline.from_pretrained(str(folder))
    ref.set_progress_bar_config(disable=True)
    ref.load_ip_adapter(str(tmp_path), subfolder="sdxl_models",
                        weight_name="ip-adapter_xl.safetensors")  # fmt: skip
    seed, image = int(torch.randint(0, 2**31, (1,))), _image(4)
    out = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
              height=32, width=32, ip_adapter_image=image, output_type="np",
              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    expected = np.round(out.images[0] * 255).astype(np.int16)
    ours = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        ip_adapter=str(models / "ip-adapter_xl.safetensors"))  # fmt: skip
    run = {"negative_prompt": NEGATIVE, "steps": 4, "cfg_scale": 5.0, "seed": seed,
           "width": 32, "height": 32, "sampler": "euler", "schedule": "linspace"}  # fmt: skip
    got = np.asarray(ours(PROMPT, ip_image=image, **run).images[0]).astype(np.int16)
    assert np.abs(got - expected).max() <= 2
    plain = np.asarray(ours(PROMPT, ip_image=image, ip_scale=0.0, **run).images[0])
    assert np.abs(plain.astype(np.int16) - got).max() > 3


def test_with_a_controlnet_as_diffusers(sd_with_ip_adapter, tmp_path):
    """IP-Adapter and a ControlNet unit together: diffusers' StableDiffusionControlNetPipeline
    with the adapter loaded (the ControlNet reads the text context alone, as there)."""
    pipe, folder, models = sd_with_ip_adapter
    torch.manual_seed(6)
    cn = diffusers.ControlNetModel.from_unet(
        pipe.unet, conditioning_embedding_out_channels=(16, 32)
    )
    with torch.no_grad():
        for p in cn.parameters():
            p.normal_(0.0, 0.3)
    cn.save_pretrained(tmp_path / "cn", safe_serialization=True)
    ref = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
        str(folder), controlnet=cn.eval(), safety_checker=None
    )
    ref.set_progress_bar_config(disable=True)
    ref.load_ip_adapter(str(models.parent), subfolder="models",
                        weight_name="ip-adapter_tiny.safetensors")  # fmt: skip
    seed, image, control = int(torch.randint(0, 2**31, (1,))), _image(3), _image(8, 32)
    out = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=6.0,
              height=32, width=32, ip_adapter_image=image, image=control, output_type="np",
              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    expected = np.round(out.images[0] * 255).astype(np.int16)
    ours = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        ip_adapter=str(models / "ip-adapter_tiny.safetensors"),
                        controlnet=str(tmp_path / "cn"))  # fmt: skip
    got = ours(PROMPT, negative_prompt=NEGATIVE, steps=5, cfg_scale=6.0, seed=seed, width=32,
               height=32, sampler="euler", schedule="linspace", ip_image=image,
               control_image=control)  # fmt: skip
    assert np.abs(np.asarray(got.images[0]).astype(np.int16) - expected).max() <= 2
