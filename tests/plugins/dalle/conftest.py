"""Fixtures of the DALL-E plugin's tests (tiny configs; skip without the plugin)."""

import pytest

pytest.importorskip("t2i_dalle", reason="the DALL-E plugin is not installed (-e plugins/t2i_dalle)")


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Each test leaves torch's grad mode and thread count as it found them (min-dalle's
    import changes both; test_dalle_mini restores them right after its import)."""
    import torch

    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    yield
    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)


@pytest.fixture
def rel_err():
    """max |a - b| / max |b|, in float64."""
    return lambda a, b: float(
        (a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)
    )


@pytest.fixture(scope="session")
def dalle_folder(tmp_path_factory):
    """A random-weight dalle-shapes-layout folder: 64 px dVAE (16x16 grid), a tiny transformer."""
    import attrs
    import torch
    from t2i_dalle.checkpoint import TRANSFORMER_FILE, write_spec
    from t2i_dalle.text import caption_words
    from t2i_dalle.trainables import DVAESchedule, DVAETrainable
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    from t2i.checkpoints import save_safetensors

    torch.manual_seed(0)
    words = caption_words()
    vae = DVAETrainable(TINY_DVAE, DVAESchedule(), training={"words": words})
    folder = tmp_path_factory.mktemp("dalle") / "model"
    vae.save(folder)
    config = TransformerConfig(
        text_vocab=4 + len(words), text_len=24, image_vocab=16, grid=16, width=32, depth=2, heads=2
    )
    net = DalleTransformer(config)
    save_safetensors(net.state_dict(), folder / TRANSFORMER_FILE)
    write_spec(folder, dvae=attrs.asdict(TINY_DVAE), transformer=attrs.asdict(config),
               words=words, training={})  # fmt: skip
    return folder


def _tiny_dvae():
    from t2i_dalle.dvae import DVAEConfig

    return DVAEConfig(group_count=3, n_hid=8, n_blk_per_group=1, n_init=8, vocab_size=16)


TINY_DVAE = _tiny_dvae()
