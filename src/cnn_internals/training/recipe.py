"""``train.<net>``'s common keys as one typed recipe: optimizer, schedule, epochs, seed, processes."""

from dataclasses import dataclass

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import get, params_name

SCHEDULES = ("cosine", "constant", "plateau")


@dataclass
class Recipe:
    epochs: int                  # 0: no training step, the model is evaluated as it starts
    batch_size: int
    lr: float
    seed: int
    optimizer: str = "adamw"     # adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9        # sgd only
    schedule: str = "cosine"     # cosine | constant | plateau (lr / 10 when test error stalls)
    patience: int = 2            # plateau: epochs without a better test error before lr / 10
    amp: bool = True             # mixed precision on CUDA (never on the CPU)
    nproc: int = 1               # processes (torchrun); each trains batch_size / nproc of a batch


def read_recipe(params: dict, net: str) -> Recipe:
    """The ``train.<net>`` block, validated; every bad value is a UserError naming its key."""
    key = f"train.{net}"
    get(params, key, kind=dict)
    nproc = get(params, f"{key}.nproc", kind=int, minimum=1)
    get(params, f"{key}.device", kind=str)
    schedule = get(params, f"{key}.schedule", kind=str, choices=SCHEDULES)
    batch_size = get(params, f"{key}.batch_size", kind=int, minimum=1)
    if batch_size % nproc:
        raise UserError(f"{params_name(params)}: {key}.batch_size ({batch_size}) must be divisible by {key}.nproc "
                        f"({nproc}): it is the global batch, split evenly over the processes")
    return Recipe(
        epochs=get(params, f"{key}.epochs", kind=int, minimum=0),     # 0: evaluate only
        batch_size=batch_size,
        lr=get(params, f"{key}.lr", kind=(int, float), above=0),
        seed=get(params, f"{key}.seed", kind=int, minimum=0),
        optimizer=get(params, f"{key}.optimizer", kind=str, choices=("adamw", "sgd")),
        weight_decay=get(params, f"{key}.weight_decay", kind=(int, float), minimum=0),
        momentum=get(params, f"{key}.momentum", kind=(int, float), minimum=0, default=0.9),
        schedule=schedule,
        patience=get(params, f"{key}.patience", kind=int, minimum=0, default=2),   # plateau only
        amp=get(params, f"{key}.amp", kind=bool, default=True),
        nproc=nproc,
    )
