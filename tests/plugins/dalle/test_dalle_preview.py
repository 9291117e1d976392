"""Live previews of DALL-E: the partly drawn token grid after every row, decoded with each
undrawn position as the codebook's mean (dVAE and VQGAN)."""

import random

import torch
from t2i_dalle import plugin

from t2i import Engine
from t2i.contracts import UNDRAWN, PreviewDecoder
from t2i.payloads import Latent
from t2i.testing import make_manager


def test_preview_images_during_a_run(dalle_folder):
    pipe = Engine.build("dalle-shapes", plugins=make_manager(plugin), checkpoint=str(dalle_folder))
    decoder = pipe.executor.run(pipe.recipe.graph, outputs=["decoder"])["decoder"]["decoder"]
    assert isinstance(decoder, PreviewDecoder)
    seen = []
    seed = random.randrange(2**31)
    result = pipe(
        "a red cube",
        seed=seed,
        batch_size=2,
        batch_count=2,
        preview=lambda node, step, total, grid: seen.append((step, total, grid.clone())),
    )
    assert [s for s, _, _ in seen] == [16 * (r + 1) for r in range(16)] * 2  # 16x16 grid
    assert all(t == 256 and g.shape == (2, 1, 16, 16) for _, t, g in seen)
    images = [decoder.decode_preview(Latent(g)).to_pil() for _, _, g in seen]
    assert all(len(batch) == 2 and im.size == (64, 64) for batch in images for im in batch)
    assert images[0][0].tobytes() != images[15][0].tobytes()  # the preview fills in
    for b in (0, 1):  # each batch's last preview is its image
        last = images[16 * b + 15]
        assert [im.tobytes() for im in last] == [im.tobytes() for im in result.images[2 * b :][:2]]
    assert (seen[0][2] == UNDRAWN).sum() == 2 * (256 - 16)


def test_undrawn_positions_read_the_mean_code(dalle_folder):
    pipe = Engine.build("dalle-shapes", plugins=make_manager(plugin), checkpoint=str(dalle_folder))
    decoder = pipe.executor.run(pipe.recipe.graph, outputs=["decoder"])["decoder"]["decoder"]
    grid = torch.randint(0, decoder.vocab_size, (1, 1, 16, 16))
    assert torch.equal(decoder.decode_preview(Latent(grid)).pixels,
                       decoder.decode(Latent(grid)).pixels)  # fmt: skip
    blank = decoder.decode_preview(Latent(torch.full_like(grid, UNDRAWN))).pixels
    v = decoder.vocab_size
    mixed = decoder.decoder.pixels(torch.full((1, v, 16, 16), 1.0 / v))
    assert torch.allclose(blank, mixed.float())


def test_vqgan_preview_of_a_partial_grid():
    from t2i_dalle.mini.components import MiniDetokenizer
    from t2i_dalle.mini.vqgan import VQGANConfig, VQGANDetokenizer

    torch.manual_seed(0)
    config = VQGANConfig(codebook=32, embed=8, widths=(8, 8, 8, 8, 8), groups=4)
    detok = MiniDetokenizer(VQGANDetokenizer(config).eval())
    grid = torch.randint(0, 32, (2, 1, 16, 16))
    with torch.inference_mode():
        full = detok.decode(Latent(grid)).pixels
        assert torch.equal(detok.decode_preview(Latent(grid)).pixels, full)
        partial = grid.clone().flatten(1)
        partial[:, 100:] = UNDRAWN
        preview = detok.decode_preview(Latent(partial.view_as(grid))).pixels
    assert preview.shape == (2, 3, 256, 256) and not torch.equal(preview, full)
