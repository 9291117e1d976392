"""ControlNet (``controlnet=`` option): the residuals and the image match diffusers'
``ControlNetModel`` / ``StableDiffusionControlNetPipeline`` on random weights; the files users
hold (lllyasviel / A1111 ``control_model.`` keys, bare keys, a diffusers folder or its weights
file alone) load to the same model; bad files and requests get clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.engine import EngineError
from t2i.graph.errors import NodeExecutionError
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.controlnet_apply import ControlSteering, fit_control_image
from t2i_ldm.controlnet_checkpoint import load_controlnet, save_controlnet
from t2i_ldm.diffusers_format import unet_config_from_diffusers

diffusers = pytest.importorskip("diffusers")

PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


def _random(model, std=0.05):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def _control_image(size=32, seed=None):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def sd_with_controlnet(tmp_path_factory, make_tiny_sd):
    """A tiny SD pipeline (VAE factor 2, so the ControlNet's hint stack has one stride) and a
    random diffusers ControlNet for it, saved as a folder and as an A1111 file."""
    root = tmp_path_factory.mktemp("controlnet")
    pipe, folder = make_tiny_sd(root, vae_std=0.1)
    torch.manual_seed(1)
    _random(pipe.unet, 0.2)  # a UNet whose skips show in the image
    pipe.save_pretrained(folder, safe_serialization=True)
    widths = (16, 32)  # one stride: the VAE halves
    cn = diffusers.ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=widths)
    _random(cn, 0.3)
    cn.save_pretrained(root / "cn", safe_serialization=True)
    ours = load_controlnet(root / "cn", unet_config_from_diffusers(dict(pipe.unet.config)))
    single = save_controlnet(root / "control_tiny.safetensors", ours)
    return pipe, folder, cn, root / "cn", single


def _reference(pipe, cn, control, seed, **kw):
    ref = diffusers.StableDiffusionControlNetPipeline(
        **{k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=cn,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    out = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=6, guidance_scale=6.0,
              height=32, width=32, image=control, output_type="np",
              generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip
    return np.round(out.images[0] * 255).astype(np.int16)


def _ours(folder, seed, controlnet=None, **fields):
    paths = [str(p) for p in controlnet] if isinstance(controlnet, list) else str(controlnet)
    build = {"controlnet": paths} if controlnet is not None else {}
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder), **build)
    result = pipe(PROMPT, negative_prompt=NEGATIVE, steps=6, cfg_scale=6.0, seed=seed,
                  width=32, height=32, sampler="euler", schedule="linspace", **fields)  # fmt: skip
    return np.asarray(result.images[0]).astype(np.int16), result


@pytest.mark.parametrize("source", ["diffusers_folder", "a1111_file"])
def test_same_image_as_diffusers_controlnet_pipeline(sd_with_controlnet, source):
    pipe, folder, cn, cn_folder, single = sd_with_controlnet
    seed = int(torch.randint(0, 2**31, (1,)))
    control = _control_image()
    window = {"weight": 1.5, "start": 0.1, "end": 0.9}  # steps 1 to 4 of 0 to 5
    expected = _reference(pipe, cn, control, seed, controlnet_conditioning_scale=1.5,
                          control_guidance_start=0.1, control_guidance_end=0.9)  # fmt: skip
    path = cn_folder if source == "diffusers_folder" else single
    got, result = _ours(folder, seed, path, control_image=control,
                        **{f"control_{k}": v for k, v in window.items()})  # fmt: skip
    assert np.abs(got - expected).max() <= 1
    plain, _ = _ours(folder, seed)
    changed = np.abs(plain - expected)
    assert changed.max() > 3 and (changed > 0).mean() > 0.3  # the ControlNet changed it
    info = result.infotexts[0]
    assert f"ControlNet: {path.stem if path.is_file() else path.name} [" in info
    assert "ControlNet weight: 1.5, ControlNet start: 0.1, ControlNet end: 0.9" in info


def test_residuals_match_diffusers_at_sd_widths_and_eightfold_hint(tmp_path):
    """Three levels, SD's hint stack (16, 32, 96, 256: 8x), SD2-style linear projections and
    head width: every residual as diffusers' ControlNetModel, read from its weights file alone
    (no config.json: the shapes come from the keys, the heads from the UNet)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=48,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, attention_head_dim=(2, 4, 4), use_linear_projection=True,
    )  # fmt: skip
    cn = _random(diffusers.ControlNetModel.from_unet(unet))
    save_file(cn.state_dict(), str(tmp_path / "diffusers_layout.safetensors"))
    ours = load_controlnet(tmp_path / "diffusers_layout.safetensors",
                           unet_config_from_diffusers(dict(unet.config)))  # fmt: skip
    x, hint = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 64, 64)
    t, context = torch.tensor([981.0, 20.0]), torch.randn(2, 7, 48)
    with torch.no_grad():
        down, mid = cn(x, t, context, hint, return_dict=False)
        got = ours(x, hint, t, context)
    assert len(got) == len(down) + 1 == 10
    for ref, mine in zip([*down, mid], got):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)


def test_layouts_round_trip(sd_with_controlnet, tmp_path):
    pipe, _, _, cn_folder, single = sd_with_controlnet
    config = unet_config_from_diffusers(dict(pipe.unet.config))
    state = load_file(str(single))
    assert all(k.startswith("control_model.") for k in state)
    bare = tmp_path / "bare.safetensors"
    save_file({k.removeprefix("control_model."): v for k, v in state.items()}, str(bare))
    torch.save(state, tmp_path / "control.pth")
    models = [load_controlnet(p, config) for p in (cn_folder, single, bare)]
    models.append(load_controlnet(tmp_path / "control.pth", config, allow_pickle=True))
    first = models[0].state_dict()
    for other in models[1:]:
        assert other.state_dict().keys() == first.keys()
        for key, value in other.state_dict().items():
            assert torch.equal(value, first[key]), key
    with pytest.raises(CheckpointError, match="pickle"):
        load_controlnet(tmp_path / "control.pth", config)


def test_weight_zero_or_an_empty_window_is_the_plain_image(sd_with_controlnet):
    _, folder, _, _, single = sd_with_controlnet
    seed = int(torch.randint(0, 2**31, (1,)))
    plain, _ = _ours(folder, seed)
    off, result = _ours(folder, seed, single, control_image=_control_image(), control_weight=0.0)
    assert np.array_equal(off, plain)
    _, explicit = _ours(folder, seed, single, control_image=_control_image(), control_weight=0.0,
                        control_start=0.0)  # fmt: skip
    assert result.infotexts == explicit.infotexts  # a start of 0 sent or not: one PNG
    assert "ControlNet start: 0.0" in result.infotexts[0]
    late, _ = _ours(folder, seed, single, control_image=_control_image(), control_start=0.99)
    assert np.array_equal(late, plain)  # step 5 of 6 starts at 5/6 < 0.99: never steered


def test_steps_in_the_window(sd_with_controlnet):
    step_t = torch.tensor([999.0, 800.0, 600.0, 400.0, 200.0])
    steering = ControlSteering(None, None, weight=0.5, start=0.2, end=0.8, resize="Just Resize",
                               step_t=step_t)  # fmt: skip
    scales = [steering.scale_at(torch.tensor([t])) for t in step_t.tolist()]
    assert scales == [0.0, 0.5, 0.5, 0.5, 0.0]  # i/5 < 0.2 off; (i+1)/5 > 0.8 off
    assert steering.scale_at(torch.tensor([700.0])) == 0.5  # a midpoint (Heun) in step 1


def test_controlnet_is_more_important_is_diffusers_guess_mode(sd_with_controlnet, tmp_path):
    """A1111's "ControlNet is more important" on a UNet of SD's 13 residuals (four levels of
    two blocks): the prompt's rows alone steered, with the soft scales 0.825 ** (12 - i),
    as diffusers' guess_mode (its 0.8254 ** (12 - i)) within 2/255."""
    pipe, _, _, _, _ = sd_with_controlnet
    torch.manual_seed(4)
    unet = _random(diffusers.UNet2DConditionModel(
        block_out_channels=(16, 16, 16, 16), layers_per_block=2, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3 + ("CrossAttnUpBlock2D",), norm_num_groups=8,
        attention_head_dim=2, sample_size=8), 0.2)  # fmt: skip
    sd = diffusers.StableDiffusionPipeline(
        **{k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "scheduler")},
        unet=unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    sd.save_pretrained(tmp_path / "sd13", safe_serialization=True)
    cn = _random(diffusers.ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(16, 32)), 0.3)  # fmt: skip
    cn.save_pretrained(tmp_path / "cn13", safe_serialization=True)
    seed, control = int(torch.randint(0, 2**31, (1,))), _control_image()
    expected = _reference(sd, cn, control, seed, guess_mode=True)
    got, result = _ours(tmp_path / "sd13", seed, tmp_path / "cn13", control_image=control,
                        control_mode="ControlNet is more important")  # fmt: skip
    assert np.abs(got - expected).max() <= 2
    balanced, _ = _ours(tmp_path / "sd13", seed, tmp_path / "cn13", control_image=control)
    assert np.abs(balanced - expected).max() > 3  # the mode changed the image
    assert "ControlNet control mode: ControlNet is more important" in result.infotexts[0]


def test_soft_injection_scales_the_shallow_residuals_least():
    """A1111's "My prompt is more important": residual i of n times 0.825 ** (n - 1 - i)."""

    class Ones:
        downscale, dtype = 2, torch.float32

        def __call__(self, x, hint, t, context, y=None):
            return [torch.ones(1) for _ in range(13)]

    args = {"weight": 0.5, "start": 0.0, "end": 1.0, "resize": "Just Resize"}
    steps = torch.tensor([999.0, 500.0])
    prompt_first = "My prompt is more important"
    soft = ControlSteering(Ones(), _control_image(8), step_t=steps, mode=prompt_first, **args)
    got = [float(r) for r in soft(torch.zeros(1, 4, 4, 4), torch.tensor([999.0]), None)]
    assert got == pytest.approx([0.5 * 0.825 ** (12 - i) for i in range(13)])
    plain = ControlSteering(Ones(), _control_image(8), step_t=steps, **args)
    assert [float(r) for r in plain(torch.zeros(1, 4, 4, 4), torch.tensor([999.0]), None)] == [
        0.5
    ] * 13


def test_resize_modes():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # a blue left quarter
    crop = fit_control_image(image, 16, 16, "Crop and Resize")
    assert crop.shape == (1, 3, 16, 16)
    assert float(crop[0, 2, :, 0].mean()) < 0.1  # the left quarter was cropped away
    fill = fit_control_image(image, 16, 16, "Resize and Fill")
    assert float(fill[0, :, 0].abs().max()) == 0 and float(fill[0, :, 8].max()) > 0.9
    stretch = fit_control_image(image, 16, 16, "Just Resize")
    assert float(stretch[0, 2, :, 0].mean()) > 0.9


def test_bad_controlnets_and_requests_get_clear_errors(sd_with_controlnet, tmp_path):
    _, folder, _, cn_folder, single = sd_with_controlnet

    def build(controlnet, **options):
        return Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                            controlnet=str(controlnet), **options)  # fmt: skip

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(single.read_bytes()[: single.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated|not a readable"):
        build(cut)
    save_file({"lora_up.weight": torch.ones(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(CheckpointError, match="not a ControlNet"):
        build(tmp_path / "lora.safetensors")
    with pytest.raises(CheckpointError, match="no such ControlNet"):
        build(tmp_path / "missing.safetensors")
    state = load_file(str(single))
    wide = {k: v for k, v in state.items()}
    for key in [k for k in state if "attn2.to_k" in k or "attn2.to_v" in k]:
        wide[key] = torch.zeros(state[key].shape[0], 64)  # an SD2-width context
    save_file(wide, str(tmp_path / "sd2.safetensors"))
    with pytest.raises(CheckpointError, match=r"made for another model.*context_dim 64 vs 32"):
        build(tmp_path / "sd2.safetensors")
    save_file({**state, "control_model.label_emb.0.0.weight": torch.zeros(4, 4)},
              str(tmp_path / "xl.safetensors"))  # fmt: skip
    with pytest.raises(CheckpointError, match=r"another model.*adm_in_channels 4 vs 0"):
        build(tmp_path / "xl.safetensors")  # an SDXL ControlNet for an SD 1.x model
    save_file({**state, "difference": torch.zeros(1)}, str(tmp_path / "diff.safetensors"))
    with pytest.raises(CheckpointError, match="a difference ControlNet"):
        build(tmp_path / "diff.safetensors")
    with pytest.raises(EngineError, match="DeepCache"):
        build(single, deepcache=2)

    steered = build(cn_folder)
    run = {"steps": 2, "width": 32, "height": 32}
    with pytest.raises(NodeExecutionError, match="give the control image"):
        steered(PROMPT, **run)
    with pytest.raises(NodeExecutionError, match="must be below control_end"):
        steered(PROMPT, control_image=_control_image(), control_start=0.6, control_end=0.5, **run)
    with pytest.raises(Exception, match=r"control_resize|resize"):
        steered(PROMPT, control_image=_control_image(), control_resize="Stretch", **run)
    assert steered(PROMPT, control_image=_control_image(48), **run).images  # another size fits


def test_two_units_add_up_as_diffusers_multi_controlnet(sd_with_controlnet, tmp_path):
    pipe, folder, cn, cn_folder, _ = sd_with_controlnet
    torch.manual_seed(2)
    other = _random(diffusers.ControlNetModel.from_unet(
        pipe.unet, conditioning_embedding_out_channels=(16, 32)), 0.3)  # fmt: skip
    other.save_pretrained(tmp_path / "other", safe_serialization=True)
    seed = int(torch.randint(0, 2**31, (1,)))
    images = [_control_image(), _control_image(40)]
    expected = _reference(
        pipe,
        diffusers.MultiControlNetModel([cn, other]),
        images,
        seed,
        controlnet_conditioning_scale=[0.7, 1.2],
        control_guidance_start=[0.0, 0.3],
        control_guidance_end=[1.0, 0.8],
    )
    units = [cn_folder, tmp_path / "other"]
    got, result = _ours(folder, seed, units, control_resize_1="Just Resize",
                        control_image=images[0], control_weight=0.7,
                        control_image_1=images[1], control_weight_1=1.2,
                        control_start_1=0.3, control_end_1=0.8)  # fmt: skip
    assert np.abs(got - expected).max() <= 1
    info = result.infotexts[0]
    assert "ControlNet: cn [" in info and "ControlNet 1: other [" in info
    assert "ControlNet 1 weight: 1.2" in info


def test_xyz_axis_over_a_units_weight(sd_with_controlnet):
    """A recipe-bound numeric field as an X/Y/Z axis: its text values become the numbers
    the node takes (ranges expanded), each cell the image of a direct call."""
    from t2i.xyz import xyz_plot

    _, folder, _, _, single = sd_with_controlnet
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        controlnet=str(single))  # fmt: skip
    run = {"steps": 3, "width": 32, "height": 32, "seed": 11, "control_image": _control_image()}
    plot = xyz_plot(pipe, PROMPT, ["control_weight=0-1.5 (+1.5)"], **run)
    assert plot.axes[0].values == (0.0, 1.5)
    for value, image in zip((0.0, 1.5), plot.result.images):
        direct = pipe(PROMPT, control_weight=value, **run).images[0]
        assert np.array_equal(np.asarray(image), np.asarray(direct))


def test_preprocessors_make_the_map_a_ready_map_would_be(sd_with_controlnet):
    """``control_module``: canny (OpenCV's, A1111's thresholds) and invert give the image the
    same map given ready with module none gives; a bad module or threshold is refused."""
    cv2 = pytest.importorskip("cv2")
    from PIL import ImageOps

    _, folder, _, _, single = sd_with_controlnet
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        controlnet=str(single))  # fmt: skip
    photo = Image.new("RGB", (32, 32), (30, 60, 90))
    photo.paste((240, 200, 10), (8, 6, 24, 26))
    run = {"steps": 3, "width": 32, "height": 32, "seed": 4}
    edges = cv2.Canny(np.asarray(photo), 50.0, 120.0)
    ready = Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))
    assert 0 < (edges > 0).mean() < 0.5  # the square's outline
    by_module = pipe(PROMPT, control_image=photo, control_module="canny",
                     control_threshold_a=50.0, control_threshold_b=120.0, **run)  # fmt: skip
    by_hand = pipe(PROMPT, control_image=ready, **run)
    assert np.array_equal(np.asarray(by_module.images[0]), np.asarray(by_hand.images[0]))
    assert "ControlNet module: canny" in by_module.infotexts[0]
    inverted = pipe(PROMPT, control_image=photo, control_module="invert", **run)
    direct = pipe(PROMPT, control_image=ImageOps.invert(photo), **run)
    assert np.array_equal(np.asarray(inverted.images[0]), np.asarray(direct.images[0]))
    shrunk = pipe(PROMPT, control_image=photo, control_module="tile_resample",
                  control_threshold_a=4.0, **run)  # fmt: skip
    small = pipe(PROMPT, control_image=photo.resize((8, 8), Image.BOX), **run)
    assert np.array_equal(np.asarray(shrunk.images[0]), np.asarray(small.images[0]))
    with pytest.raises(Exception, match=r"depth|control_module|module"):
        pipe(PROMPT, control_image=photo, control_module="depth", **run)
    with pytest.raises(NodeExecutionError, match="canny thresholds"):
        pipe(PROMPT, control_image=photo, control_module="canny", control_threshold_a=300.0, **run)


@pytest.mark.parametrize("source", ["diffusers_folder", "a1111_file"])
def test_sdxl_controlnet_same_image_as_diffusers(tiny_sdxl, tmp_path, source):
    """An SDXL ControlNet (its own label_emb reading the pooled text + micro-conditioning)
    on the tiny SDXL: the image of diffusers' StableDiffusionXLControlNetPipeline."""
    pipe, folder, _ = tiny_sdxl
    torch.manual_seed(3)
    cn = _random(diffusers.ControlNetModel.from_unet(
        pipe.unet, conditioning_embedding_out_channels=(16, 32)), 0.3)  # fmt: skip
    cn.save_pretrained(tmp_path / "cn_xl", safe_serialization=True)
    path = tmp_path / "cn_xl"
    if source == "a1111_file":
        config = unet_config_from_diffusers(dict(pipe.unet.config))
        path = save_controlnet(tmp_path / "cn_xl.safetensors", load_controlnet(path, config))
    ref = diffusers.StableDiffusionXLControlNetPipeline(
        **{k: getattr(pipe, k) for k in ("vae", "text_encoder", "text_encoder_2", "tokenizer",
                                         "tokenizer_2", "unet", "scheduler")},
        controlnet=cn,
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    seed, control = int(torch.randint(0, 2**31, (1,))), _control_image()
    out = ref(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=5,
        guidance_scale=5.0,
        height=32,
        width=32,
        image=control,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
        controlnet_conditioning_scale=1.3,
    )
    expected = np.round(out.images[0] * 255).astype(np.int16)
    ours = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                        controlnet=str(path))  # fmt: skip
    run = {"negative_prompt": NEGATIVE, "steps": 5, "cfg_scale": 5.0, "seed": seed,
           "width": 32, "height": 32, "sampler": "euler", "schedule": "linspace"}  # fmt: skip
    got = np.asarray(ours(PROMPT, control_image=control, control_weight=1.3, **run).images[0])
    assert np.abs(got.astype(np.int16) - expected).max() <= 2
    plain = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder))
    changed = np.abs(np.asarray(plain(PROMPT, **run).images[0]).astype(np.int16) - expected)
    assert changed.max() > 3
