"""The one-step sampler: ``z`` from each row's seed, one generator call.

``z`` row ``i`` is standard normal noise drawn from ``torch.Generator("cpu")`` seeded with
``seeds[i]`` (:func:`t2i.noise.seeded_noise`), so an image depends on its seed only.
"""

from __future__ import annotations

import attrs
import torch

from t2i.contracts import GENERATOR, GeneratorJob
from t2i.noise import seeded_noise
from t2i.payloads import Latent


@attrs.frozen
class SinglePass:
    """Draw ``z`` ``(B, z_dim)`` from the seeds and call the generator once."""

    model_contract = GENERATOR

    def sample(self, job: GeneratorJob) -> Latent:
        z = draw_z(job.seeds, int(job.model.z_dim), device=job.device, dtype=job.dtype)
        image = job.model(z, job.cond)
        if job.callback is not None:
            job.callback(1, 1)
        return Latent(image, seeds=job.seeds)


def draw_z(seeds: tuple[int, ...], z_dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``z`` batch :class:`SinglePass` draws for ``seeds`` (for tests and trainers)."""
    return seeded_noise((len(seeds), z_dim), seeds, device=device, dtype=dtype)
