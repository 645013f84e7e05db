"""The registry: one entry per net, saying everything the stages need to know about it.

A net registers where it is defined (torchvision's ``@register_model`` idea): its module ends
with ``register(Net(...))``. Adding a net on a dataset we already have: that model file, its
import in ``models/__init__.py``, its ``train/mine/render/report.<net>`` params blocks, its
``weights.<net>`` entry (null where torchvision publishes no ImageNet weights for it), and its
name in ``pipeline.nets``.

A shown depth has two names. People read the paper's (``conv5_3``: the mined JSON's keys, the
pictures' file names and titles, the report's tabs); the code reaches the module by its path in
the model (``features.28``: mining hooks, projection, Grad-CAM, receptive fields, the report's
architecture table). ``Net.module_paths`` maps the first to the second where they differ.
"""

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import get, params_name

# train.<net>.weights: what a net starts from. scratch: its own initialisation, a 10-class head;
# imagenet: torchvision's published ImageNet weights, the 1000-class net read at Imagenette's
# ten classes (see models/imagenet.py).
WEIGHTS = ("scratch", "imagenet")


class Inputs(Protocol):
    """A net's batch transform: uint8 images (B, H, W[, C]) already on the device -> model
    inputs (B, C, h, w) float, as batched tensor ops on that device."""

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training inputs, augmented as the paper did (randomness from ``generator``)."""

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """The one deterministic view used for evaluation, mining and pictures."""

    def views(self, images: torch.Tensor) -> list:
        """The paper's test-time views (AlexNet: 10 crops); scores are averaged over them."""

    def display(self, inputs: torch.Tensor) -> torch.Tensor:
        """Eval inputs back to [0, 1] pixels, for the patches in the pictures."""


@dataclass(frozen=True)
class Net:
    name: str                # params key and stage suffix: train@<name>
    title: str               # as the papers write it
    dataset: str             # a key of data.datasets.DATASETS
    layers: tuple            # the depths mined and rendered, in forward order, by the papers' names
    input_size: tuple        # (C, H, W) the model sees
    build: Callable          # (train params) -> nn.Module, initialised
    inputs: Callable         # (dataset stats, train params, device) -> Inputs
    # The train.<name> keys that build and inputs read: saved with the weights, so mine and
    # render rebuild the trained net from models/<name>.pt and declare no training params.
    model_keys: tuple
    validate: Callable       # (params) -> None; UserError on a bad net-specific key
    loss: Callable = lambda p: F.cross_entropy   # (train params) -> loss(scores, targets)
    # The module path of each shown layer whose module is named otherwise (VGG-16's conv5_3 is
    # ``features.28``); a layer not listed here is its module's own name (AlexNet's conv1).
    module_paths: dict = field(default_factory=dict, hash=False)
    # (model built with weights: imagenet, torchvision's state_dict) -> None: loads torchvision's
    # published ImageNet weights into the model, strictly. None: there are none for this net,
    # and ``no_imagenet`` says why when a params file asks for them.
    load_imagenet: Callable | None = None
    no_imagenet: str = "torchvision publishes no ImageNet weights for it"

    def __post_init__(self):
        unknown = set(self.module_paths) - set(self.layers)
        if unknown:
            raise ValueError(f"{self.name}: module_paths names layers it does not show: {sorted(unknown)}")

    def module_path(self, layer: str) -> str:
        """The path in the model (``model.get_submodule``) of the shown layer ``layer``."""
        if layer not in self.layers:
            raise ValueError(f"{self.title} shows no layer {layer!r}; it shows {', '.join(self.layers)}")
        return self.module_paths.get(layer, layer)

    @property
    def layer_paths(self) -> dict:
        """{paper name: module path} of every shown layer, in forward order."""
        return {layer: self.module_path(layer) for layer in self.layers}

    def shown_name(self, path: str) -> str | None:
        """The paper name under which module ``path`` is shown, or None if it is not shown."""
        return next((layer for layer, p in self.layer_paths.items() if p == path), None)


NETS: dict = {}


def register(net: Net) -> Net:
    if net.name in NETS:
        raise ValueError(f"net {net.name!r} registered twice")
    NETS[net.name] = net
    return net


def weights_choice(params: dict, net: Net) -> str:
    """``train.<net>.weights``, checked: scratch or imagenet for a net with published weights;
    for one without, the key may be left out (scratch) and imagenet is refused saying why."""
    key = f"train.{net.name}.weights"
    if net.load_imagenet is None:
        weights = get(params, key, kind=str, choices=WEIGHTS, default="scratch")
        if weights == "imagenet":
            raise UserError(f"{params_name(params)}: {key} = imagenet, but {net.no_imagenet}: use scratch")
        return weights
    return get(params, key, kind=str, choices=WEIGHTS)


def get_net(name: str) -> Net:
    if name not in NETS:
        raise UserError(f"unknown net {name!r}: choose one of {', '.join(NETS)}")
    return NETS[name]
