"""The registry: one entry per net, saying everything the stages need to know about it.

Adding a net on a dataset we already have: a model file, one entry in NETS, its params
blocks, and its name in the foreach lists of dvc.yaml.
"""

from dataclasses import dataclass
from typing import Callable

from ..errors import UserError
from ..params import get
from .lenet5 import LeNet5, lenet5_loss, mnist_to_lenet_input


@dataclass(frozen=True)
class Net:
    name: str                # params key and stage suffix: train@<name>
    title: str               # as the papers write it
    image_prefix: str        # images/<image_prefix>_<layer>.png
    dataset: str
    layers: tuple            # the five depths mined and rendered, in forward order
    input_size: tuple        # (C, H, W) the model sees
    build: Callable          # (train params) -> nn.Module
    loss: Callable           # (train params) -> loss(scores, targets)
    inputs: Callable         # (uint8 images, dataset stats, train params) -> float tensor
    to_display: Callable     # (inputs, stats, train params) -> the same in [0, 1] for pictures


def _lenet5_build(p):
    return LeNet5(c3_table=p["c3_table"], learnable_prototypes=p["prototypes"] == "learned")


def _lenet5_levels(stats, p):
    """(background, foreground) input levels: the paper's -0.1 / 1.175, or the levels that
    standardise the training pixels with the dataset's mean and std."""
    if p["normalize"] == "paper":
        return -0.1, 1.175
    mean, std = float(stats["channel_mean"][0]), float(stats["channel_std"][0])
    return (0.0 - mean) / std, (1.0 - mean) / std


def _lenet5_inputs(images, stats, p):
    return mnist_to_lenet_input(images, *_lenet5_levels(stats, p))


def _lenet5_display(x, stats, p):
    background, foreground = _lenet5_levels(stats, p)
    return ((x - background) / (foreground - background)).clamp(0, 1)


def validate_lenet5(params):
    key = "train.lenet5"
    get(params, f"{key}.c3_table", kind=bool)
    get(params, f"{key}.prototypes", kind=str, choices=("fixed", "learned"))
    get(params, f"{key}.normalize", kind=str, choices=("paper", "standardize"))
    get(params, f"{key}.j", kind=(int, float), above=0)


NETS = {
    "lenet5": Net(
        name="lenet5", title="LeNet-5", image_prefix="lenet-5", dataset="mnist",
        layers=("conv1", "pool1", "conv2", "pool2", "conv3"), input_size=(1, 32, 32),
        build=_lenet5_build, loss=lambda p: (lambda s, t: lenet5_loss(s, t, p["j"])),
        inputs=_lenet5_inputs, to_display=_lenet5_display,
    ),
}
VALIDATORS = {"lenet5": validate_lenet5}


def get_net(name):
    if name not in NETS:
        raise UserError(f"unknown net {name!r}: choose one of {', '.join(NETS)}")
    return NETS[name]
