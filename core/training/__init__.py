"""Training in the core: the trainable-model contract, one resumable loop, data parallelism.

- :class:`TrainableModel` / :class:`DataSource` (:mod:`~t2i.training.contract`): what a
  family gives the loop;
- :func:`train` (:mod:`~t2i.training.loop`) with :class:`TrainConfig`: the loop;
- :class:`EMA`, :func:`lr_factor`, :class:`RandomBatches`: its parts;
- :class:`Trainer` / :class:`TrainerOption` (:mod:`~t2i.training.trainer`): what a plugin
  registers through ``t2i_register_trainers`` to become ``t2i train NAME``;
- :func:`setup_distributed` (:mod:`~t2i.training.distributed`): the ``torchrun`` context.
"""

import importlib

_HOMES = {
    "PRECISIONS": "config",
    "TrainConfig": "config",
    "TrainOptionsError": "config",
    "check_split": "config",
    "DataSource": "contract",
    "Split": "contract",
    "TrainableModel": "contract",
    "RandomBatches": "data",
    "DistributedContext": "distributed",
    "DistributedSetupError": "distributed",
    "setup_distributed": "distributed",
    "EMA": "ema",
    "ema_decay_at": "ema",
    "TrainResult": "loop",
    "train": "loop",
    "lr_factor": "schedule",
    "Trainer": "trainer",
    "TrainerOption": "trainer",
}
"""Public name -> its module; imported on first use, so ``t2i --help`` imports no torch."""


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"t2i.training.{_HOMES[name]}"), name)
    raise AttributeError(f"module 't2i.training' has no attribute {name!r}")


__all__ = [
    "EMA",
    "PRECISIONS",
    "DataSource",
    "DistributedContext",
    "DistributedSetupError",
    "RandomBatches",
    "Split",
    "TrainConfig",
    "TrainOptionsError",
    "TrainResult",
    "TrainableModel",
    "Trainer",
    "TrainerOption",
    "check_split",
    "ema_decay_at",
    "lr_factor",
    "setup_distributed",
    "train",
]
