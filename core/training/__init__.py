"""Training in the core: the trainable-model contract, one resumable loop, data parallelism.

- :class:`TrainableModel` / :class:`DataSource` (:mod:`~t2i.training.contract`): what a
  family gives the loop;
- :func:`train` (:mod:`~t2i.training.loop`) with :class:`TrainConfig`: the loop;
- :class:`EMA`, :func:`lr_factor`, :class:`RandomBatches`: its parts;
- :class:`Trainer` / :class:`TrainerOption` (:mod:`~t2i.training.trainer`): what a plugin
  registers through ``t2i_register_trainers`` to become ``t2i train NAME``;
- :func:`setup_distributed` (:mod:`~t2i.training.distributed`): the ``torchrun`` context.
"""

from t2i.training.config import PRECISIONS, TrainConfig, TrainOptionsError, check_split
from t2i.training.contract import DataSource, Split, TrainableModel
from t2i.training.data import RandomBatches
from t2i.training.distributed import DistributedContext, DistributedSetupError, setup_distributed
from t2i.training.ema import EMA, ema_decay_at
from t2i.training.loop import TrainResult, train
from t2i.training.schedule import lr_factor
from t2i.training.trainer import Trainer, TrainerOption

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
