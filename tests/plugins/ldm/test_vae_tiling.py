"""Tiled VAE decoding against diffusers' ``enable_tiling`` on random tiny weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from t2i import Engine
from t2i.payloads import Latent
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")

MANAGER = make_manager(plugin)


def test_tiles_match_diffusers_tiled_decode(tmp_path, make_tiny_vae):
    from t2i_ldm.checkpoint import load_vae_file
    from t2i_ldm.config import VAEConfig
    from t2i_ldm.vae import LdmDecoder

    ref = make_tiny_vae(int(torch.randint(0, 2**31, (1,))))
    file = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, file)
    ours = load_vae_file(file, vae_config=VAEConfig(norm_groups=8))
    z = torch.randn(2, 4, 40, 28)  # latent tiles of 16 every 12: a 4 x 3 grid, cut edges
    ref.enable_tiling()
    with torch.no_grad():
        expected = ref.decode(z).sample
    got = LdmDecoder(ours, scaling_factor=1.0, tile_size=32).decode(Latent(z)).pixels
    torch.testing.assert_close(got, ((expected + 1) / 2).clamp(0, 1), rtol=1e-4, atol=1e-5)
    whole = LdmDecoder(ours, scaling_factor=1.0).decode(Latent(z)).pixels
    assert (whole - got).abs().max() > 1e-3  # tiles see their own GroupNorm statistics
    small = torch.randn(1, 4, 16, 16)  # one tile: decoded whole, as diffusers does
    torch.testing.assert_close(
        LdmDecoder(ours, 1.0, tile_size=32).decode(Latent(small)).pixels,
        LdmDecoder(ours, 1.0).decode(Latent(small)).pixels,
    )


def test_the_recipe_option_gives_diffusers_tiled_pipeline_image(tmp_path, make_tiny_sd):
    pipe, folder = make_tiny_sd(tmp_path, vae_std=0.1)
    pipe.vae.enable_tiling()  # its sample_size, 32 px tiles
    seed, fields = 5, {"steps": 4, "width": 64, "height": 64}
    out = pipe(
        "a red cube", num_inference_steps=4, guidance_scale=6.0, height=64, width=64,
        generator=torch.Generator().manual_seed(seed), output_type="np",
    )  # fmt: skip
    expected = np.round(out.images[0] * 255).astype(np.int16)
    ours = Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae_tiling=32)
    got = ours("a red cube", seed=seed, cfg_scale=6.0, sampler="euler", schedule="linspace",
               **fields).images[0]  # fmt: skip
    assert np.abs(np.asarray(got).astype(np.int16) - expected).max() <= 2
    assert expected.std() > 1


def test_bad_tile_sizes_are_refused(tmp_path, make_tiny_sd):
    from t2i.engine import EngineError

    _, folder = make_tiny_sd(tmp_path)
    for bad in (100, 0, -64, "yes"):
        with pytest.raises(EngineError, match="vae_tiling"):
            Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae_tiling=bad)


def test_a_decode_too_large_for_memory_suggests_tiles(tmp_path, monkeypatch, make_tiny_vae):
    from t2i import memory
    from t2i.graph.node import ExecutionContext
    from t2i.graph.nodes import Decode
    from t2i_ldm.checkpoint import load_vae_file
    from t2i_ldm.config import VAEConfig
    from t2i_ldm.vae import LdmDecoder

    ref = make_tiny_vae(1)
    file = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, file)
    vae = load_vae_file(file, vae_config=VAEConfig(norm_groups=8))
    monkeypatch.setenv(memory.ENV, "always")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    samples = Latent(torch.randn(1, 4, 40, 40))
    with pytest.raises(memory.InsufficientMemoryError, match="vae_tiling=true"):
        Decode().execute(ExecutionContext(None), decoder=LdmDecoder(vae), samples=samples)
    # tiled, the decode runs: its peak is one tile's activations plus the kept tiles (the
    # dry run cannot follow one module called per tile, so it does not pre-check it)
    tiled = LdmDecoder(vae, tile_size=32)
    image = Decode().execute(ExecutionContext(None), decoder=tiled, samples=samples)["image"]
    assert image.pixels.shape == (1, 3, 80, 80)


def test_tiled_encode_matches_diffusers(tmp_path, make_tiny_vae):
    from t2i.payloads import Image
    from t2i_ldm.checkpoint import load_vae_file
    from t2i_ldm.config import VAEConfig
    from t2i_ldm.vae import LdmDecoder

    ref = make_tiny_vae(int(torch.randint(0, 2**31, (1,))))
    file = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, file)
    ours = load_vae_file(file, vae_config=VAEConfig(norm_groups=8))
    pixels = torch.rand(2, 3, 80, 56)  # 32 px tiles every 24: a 4 x 3 grid, cut edges
    ref.enable_tiling()
    with torch.no_grad():
        expected = ref.encode(pixels * 2 - 1).latent_dist.mode()
    tiled = LdmDecoder(ours, scaling_factor=1.0, tile_size=32)
    got = tiled.encode(Image(pixels)).samples
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    whole = LdmDecoder(ours, scaling_factor=1.0).encode(Image(pixels)).samples
    assert (whole - got).abs().max() > 1e-3
