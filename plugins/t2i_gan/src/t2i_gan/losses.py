"""DF-GAN's losses (Tao et al., CVPR 2022, section 3.3): hinge with the matching-aware term
and the matching-aware gradient penalty (MA-GP).

- discriminator: ``relu(1 - D(x, s)) + (relu(1 + D(G(z, s), s)) + relu(1 + D(x, s'))) / 2``
  with ``s'`` a mismatched sentence (the batch's sentences shifted by one row);
- MA-GP on real images with their own text: ``2 * mean(||(dD/dx, dD/ds)||^6)``, the
  gradients w.r.t. the image and the sentence embedding concatenated per row;
- generator: ``-mean(D(G(z, s), s))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GP_WEIGHT, GP_POWER = 2.0, 6.0
"""DF-GAN's MA-GP weight and power."""


def hinge_real(scores: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - scores))``: scores of pairs that should read as real and matching."""
    return F.relu(1.0 - scores).mean()


def hinge_fake(scores: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 + scores))``: fakes, and real images with mismatched text."""
    return F.relu(1.0 + scores).mean()


def mismatched(sentence: torch.Tensor) -> torch.Tensor:
    """DF-GAN's mismatched text: row ``i`` gets row ``i + 1``'s sentence (cyclically)."""
    return torch.roll(sentence, shifts=-1, dims=0)


def ma_gp(
    image: torch.Tensor,
    sentence: torch.Tensor | tuple[torch.Tensor, ...],
    scores: torch.Tensor,
    *,
    weight: float = GP_WEIGHT,
    power: float = GP_POWER,
    scale: float = 1.0,
    sentence_weight: float = 1.0,
) -> torch.Tensor:
    """MA-GP: ``weight * mean(||cat(grad_image, sentence_weight * grad_sentence)||^power)``.

    ``image`` and ``sentence`` must require grad and ``scores`` depend on both; ``sentence``
    may be a tuple of text inputs (a word pooling C's sentence vector and token states), whose
    gradients all join the text part of the norm.
    ``scale``: the loss scaler's factor when ``scores`` is scaled (fp16); the gradients are
    divided by it before the norm. ``sentence_weight``: the sentence gradient's share of the
    norm (1: DF-GAN; 0: the penalty on the image gradient alone). Returns a graph-connected
    scalar (create_graph=True).
    """
    texts = (sentence,) if torch.is_tensor(sentence) else tuple(sentence)
    inputs = (image, *texts) if sentence_weight else (image,)
    grads = torch.autograd.grad(
        outputs=scores.sum() * scale, inputs=inputs, create_graph=True, retain_graph=True
    )
    wide = [g.to(torch.promote_types(g.dtype, torch.float32)) for g in grads]  # bf16 -> fp32
    factors = (1.0, *(sentence_weight,) * len(texts))
    flat = torch.cat([g.reshape(g.shape[0], -1) * (f / scale) for g, f in zip(wide, factors)], 1)
    norm = flat.pow(2).sum(dim=1).sqrt()
    return weight * norm.pow(power).mean()
