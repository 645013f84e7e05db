"""``train.<net>``'s common keys as one typed recipe: optimizer, schedule, epochs, seed, processes,
device. A net's own keys are its config class (models/); pipeline/config.py puts the two together
as the schema of ``train.<net>``."""

from typing import Literal, get_args

from pydantic import model_validator

from cnn_internals.core.config import Count, Natural, NonNegative, Positive, Section
from cnn_internals.runtime.device import Device

Schedule = Literal["cosine", "constant", "plateau"]
SCHEDULES = get_args(Schedule)


class Recipe(Section):
    epochs: Natural                                 # 0: no training step, the model is evaluated as it starts
    batch_size: Count                               # the global batch: batch_size / nproc per process
    lr: Positive
    seed: Natural
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: NonNegative = 0.0
    momentum: NonNegative = 0.9                     # sgd only
    schedule: Schedule = "cosine"                   # plateau: lr / 10 when test error stalls
    patience: Natural = 2                           # plateau: epochs without a better test error before lr / 10
    amp: bool = True                                # mixed precision on CUDA (never on the CPU)
    nproc: Count = 1                                # processes (torchrun); each trains batch_size / nproc
    device: Device = "auto"                         # where every stage of the net runs (runtime/device.py)
    untrained: bool = False                         # epochs 0 from scratch on purpose (pipeline/config.py)

    @model_validator(mode="after")
    def _batch_splits_evenly(self):
        if self.batch_size % self.nproc:
            raise ValueError(f"{{key}}.batch_size ({self.batch_size}) must be divisible by {{key}}.nproc "
                             f"({self.nproc}): it is the global batch, split evenly over the processes")
        return self
