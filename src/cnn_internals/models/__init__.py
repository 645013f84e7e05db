"""The nets, each registered where it is defined (see registry.py)."""

from . import alexnet, lenet5, resnet18, vgg16, zfnet  # noqa: F401  (importing a model module registers it)
from .registry import NETS, WEIGHTS, Inputs, Net, get_net, register, weights_choice

__all__ = ["NETS", "WEIGHTS", "Inputs", "Net", "get_net", "register", "weights_choice"]
