"""The ``ldm`` recipe on a tiny random single-file checkpoint: generation controls and bad input."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.graph.errors import NodeExecutionError
from t2i.registry import UnknownComponentError
from t2i.request import RequestError
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.checkpoint import save_single_file
from t2i_ldm.config import TINY_UNET, VAEConfig
from t2i_ldm.shapes_model import write_tokenizer
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL

WORDS = "a red blue cube sphere cat dog photo of the on top left right"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ldm")
    tok = write_tokenizer(root / "tokenizer", [WORDS])
    unet = UNetModel(attrs.evolve(TINY_UNET, model_channels=16)).eval()
    vae = AutoencoderKL(
        VAEConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
    )
    te = {
        f"text_model.{k}" if not k.startswith("text_model.") else k: v
        for k, v in text.state_dict().items()
    }
    path = save_single_file(
        root / "tiny.safetensors", unet, vae, text_encoder=te, prediction_type="epsilon"
    )
    return path, root / "tokenizer"


@pytest.fixture(scope="module")
def pipe(checkpoint):
    path, tok = checkpoint
    return Engine.build(
        "sd", plugins=make_manager(plugin), checkpoint=str(path), tokenizer=tok, text_head_dim=16
    )


def test_txt2img_batch_seeds_and_infotext(pipe, tmp_path):
    result = pipe(
        "a (red:1.3) cube",
        negative_prompt="a dog",
        seed=5,
        steps=3,
        width=16,
        height=16,
        batch_size=2,
        batch_count=2,
    )
    assert result.seeds == [5, 6, 7, 8] and len(result.images) == 4
    single = pipe("a (red:1.3) cube", negative_prompt="a dog", seed=6, steps=3, width=16, height=16)
    assert single.images[0].tobytes() == result.images[1].tobytes()
    paths = result.save(tmp_path)
    info = Image.open(paths[0]).text["parameters"]
    assert "Negative prompt: a dog" in info and "Sampler: DPM++ 2M" in info
    assert "Schedule type: Karras" in info and "Model: tiny" in info


def test_emphasis_changes_the_image(pipe):
    a = pipe("a red cube", seed=1, steps=2, width=16, height=16).images[0]
    b = pipe("a (red:1.6) cube", seed=1, steps=2, width=16, height=16).images[0]
    assert a.tobytes() != b.tobytes()


def test_img2img_strength(pipe):
    init = Image.fromarray((np.random.rand(16, 16, 3) * 255).astype(np.uint8))
    zero = pipe("a cube", seed=1, steps=4, width=16, height=16, init_image=init, strength=0.0)
    full = pipe("a cube", seed=1, steps=4, width=16, height=16, init_image=init, strength=1.0)
    roundtrip = np.asarray(zero.images[0], dtype=np.int16)
    # strength 0 returns the init image through the VAE (no denoising)
    decoded = pipe.executor.run(
        pipe.recipe.img2img_graph,
        outputs=["encode_image"],
        params={"init_image": {"image": init, "width": 16, "height": 16}},
    )
    assert decoded["encode_image"]["latent"].samples.shape == (1, 4, 8, 8)
    assert roundtrip.shape == (16, 16, 3)
    assert zero.images[0].tobytes() != full.images[0].tobytes()
    assert "Denoising strength: 0.0" in zero.infotexts[0]


def test_empty_and_very_long_prompts(pipe):
    assert len(pipe("", seed=1, steps=2, width=16, height=16).images) == 1
    long_prompt = " ".join(["red cube"] * 500)  # 1,000 tokens: 14 chunks of 75
    assert len(pipe(long_prompt, seed=1, steps=2, width=16, height=16).images) == 1
    assert len(pipe("a cube BREAK a sphere", seed=1, steps=2, width=16, height=16).images) == 1


def test_bad_requests_fail_before_model_work(pipe):
    with pytest.raises(RequestError, match="multiple of 8"):
        pipe("x", width=20, height=16)
    with pytest.raises(UnknownComponentError, match="euler"):
        pipe("x", sampler="Eulr")
    with pytest.raises(RequestError, match="steps"):
        pipe("x", steps=0)


def test_clip_skip_option(checkpoint):
    path, tok = checkpoint
    with pytest.raises(NodeExecutionError, match="clip_skip"):
        Engine.build(
            "ldm",
            plugins=make_manager(plugin),
            checkpoint=str(path),
            tokenizer=tok,
            text_head_dim=16,
            clip_skip=5,
        )("x", steps=1, width=16, height=16)


def test_corrupt_truncated_and_foreign_checkpoints(checkpoint, tmp_path):
    path, _ = checkpoint
    manager = make_manager(plugin)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        Engine.build("ldm", plugins=manager, checkpoint=str(truncated))
    assert "truncated.safetensors" in str(err.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        Engine.build("ldm", plugins=manager, checkpoint=str(garbage))
    foreign = tmp_path / "gan.safetensors"
    save_file(
        {"generator.fc.weight": torch.zeros(4, 4), "discriminator.w": torch.zeros(2)}, str(foreign)
    )
    with pytest.raises(CheckpointError) as err:
        Engine.build("ldm", plugins=manager, checkpoint=str(foreign))
    assert "generator.fc.weight" in str(err.value) or "model.diffusion_model" in str(err.value)
    pickle = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, pickle)
    with pytest.raises(CheckpointError, match="allow_pickle"):
        Engine.build("ldm", plugins=manager, checkpoint=str(pickle))
    with pytest.raises(CheckpointError, match="no such file"):
        Engine.build("ldm", plugins=manager, checkpoint=str(tmp_path / "missing.safetensors"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model_index.json").write_text(json.dumps({}))
    with pytest.raises(CheckpointError):
        Engine.build("ldm", plugins=manager, checkpoint=str(tmp_path / "folder"))
