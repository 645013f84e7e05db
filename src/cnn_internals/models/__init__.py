"""The nets, each registered where it is defined (see registry.py)."""

from cnn_internals.models import alexnet, googlenet, lenet5, resnet18, vgg16, zfnet  # noqa: F401  (importing a model module registers it)
from cnn_internals.models.registry import NETS, WEIGHTS, Classes, Inputs, Net, NetConfig, get_net, register

__all__ = ["NETS", "WEIGHTS", "Classes", "Inputs", "Net", "NetConfig", "get_net", "register"]
