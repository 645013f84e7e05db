"""The registry: one entry per net, saying everything the stages need to know about it.

A net registers where it is defined (torchvision's ``@register_model`` idea): its module ends
with ``register(Net(...))``. Its own ``train.<net>`` keys (what shapes the net, its inputs and
its loss) are its config class, a ``NetConfig`` declared in the same file, each key with the
paper's value as its default; pipeline/config.py adds the training recipe's keys to make the
schema of ``train.<net>``. Adding a net on a dataset we already have: that model file, its
import in ``models/__init__.py``, its ``train/mine/visualize/render/report.<net>`` params blocks, its
``weights.<net>`` entry (null where torchvision publishes no ImageNet weights for it), and its
name in ``pipeline.nets``.

A shown depth has two names. People read the paper's (``conv5_3``: the mined JSON's keys, the
pictures' file names and titles, the report's tabs); the code reaches the module by its path in
the model (``features.28``: mining hooks, projection, Grad-CAM, receptive fields, the report's
architecture table). ``Net.module_paths`` maps the first to the second where they differ.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Protocol

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn

from cnn_internals.core.config import Section
from cnn_internals.core.errors import UserError
from cnn_internals.data import WEIGHTS, Weights  # noqa: F401 -- WEIGHTS: the registry's public name
from cnn_internals.data.wnids import imagenet_logits
from cnn_internals.engine import CLASSES


class NetConfig(Section):
    """A net's own ``train.<net>`` keys. ``weights`` is every net's; a net torchvision publishes
    no weights for leaves ``no_imagenet`` saying why, and imagenet is refused with that reason."""

    no_imagenet: ClassVar[str | None] = None
    weights: Weights = "scratch"

    @field_validator("weights")
    @classmethod
    def _has_imagenet_weights(cls, weights: str) -> str:
        if weights == "imagenet" and cls.no_imagenet:
            raise ValueError(f"= imagenet, but {cls.no_imagenet}: use scratch")
        return weights


@dataclass(frozen=True)
class Classes:
    """What a net's head scores: the dataset's classes in label order (``names``), and where
    every one is an ImageNet class (classes.json's {"wnid", "name"}), each one's ImageNet logit
    (``imagenet``): a net on ``weights: imagenet`` reads its 1,000 scores there, no new head.
    Elsewhere a net on ImageNet weights gets a fresh head of ``len(names)`` outputs."""

    names: tuple
    imagenet: tuple | None = None

    @classmethod
    def of(cls, entries: list) -> "Classes":
        """From a prepared dataset's classes.json entries."""
        return cls(tuple(str(entry["name"]) for entry in entries), imagenet_logits(entries))

    def __len__(self) -> int:
        return len(self.names)


# What ``Net.settings`` takes: a net's config, the composed ``train.<net>`` section, or a mapping of keys.
ConfigLike = NetConfig | Mapping[str, Any]


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

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (B, C, h, w) at the input size -> eval inputs, differentiably: the
        inverse of ``display`` (before any clamp); feature visualization optimizes pixels."""


@dataclass(frozen=True)
class Net:
    name: str                # params key and stage suffix: train@<name>
    title: str               # as the papers write it
    dataset: str             # its dataset (a key of data in params.yaml): the registry's default, or the
                             # one pipeline.nets maps it to (``on``)
    # The depths mined and rendered, in forward order, by the papers' names: conv and pooling
    # layers (maps), then the hidden fully connected ones (units). The scores the forward
    # returns are shown too, as ``classes``, which is therefore no layer's name.
    layers: tuple
    input_size: tuple        # (C, H, W) the model sees
    config: type             # its NetConfig: the train.<name> keys of its own, with their defaults
    make_model: Callable     # (config, Classes) -> nn.Module, initialised (seed torch's RNG first)
    make_inputs: Callable    # (dataset stats, config, device) -> Inputs
    make_loss: Callable = lambda c: F.cross_entropy   # (config) -> loss(scores, targets)
    # The side of the stored images its inputs take as they are (LeNet-5: MNIST's 28, padded to
    # 32); None: any side of at least the input size, which its inputs crop.
    stored_size: int | None = None
    # The classes of the registry's dataset (MNIST's digits, Imagenette's ten at their ImageNet
    # logits): what ``build`` makes a head for when given none.
    default_classes: Classes | None = field(default=None, hash=False)
    # The module path of each shown layer whose module is named otherwise (VGG-16's conv5_3 is
    # ``features.28``); a layer not listed here is its module's own name (AlexNet's conv1).
    module_paths: dict = field(default_factory=dict, hash=False)
    # (model built with weights: imagenet, torchvision's state_dict) -> None: loads torchvision's
    # published ImageNet weights into the model, strictly. None: there are none for this net,
    # and ``no_imagenet`` says why when a params file asks for them.
    load_imagenet: Callable | None = None

    def __post_init__(self):
        if CLASSES in self.layers:
            raise ValueError(f"{self.name}: no shown layer may be named {CLASSES!r}: that name is the net's scores")
        unknown = set(self.module_paths) - set(self.layers)
        if unknown:
            raise ValueError(f"{self.name}: module_paths names layers it does not show: {sorted(unknown)}")
        if not isinstance(self.default_classes, Classes):
            raise ValueError(f"{self.name}: default_classes must say the classes of its dataset, {self.dataset}")
        if not issubclass(self.config, NetConfig) or (self.load_imagenet is None) != bool(self.config.no_imagenet):
            raise ValueError(f"{self.name}: its config must be a NetConfig whose no_imagenet says why exactly "
                             "when the net has no load_imagenet")

    def settings(self, config: ConfigLike) -> NetConfig:
        """``config`` as this net's config class: an instance of it as it is; of the composed
        ``train.<net>`` schema, its net keys; a mapping (a ``train.<net>`` section, or a checkpoint's
        config) by the keys the class declares, the others ignored, the missing ones defaulted."""
        if type(config) is self.config:
            return config
        if isinstance(config, self.config):          # the composed train.<net>: its net keys only
            config = config.model_dump()
        if not isinstance(config, Mapping):
            raise TypeError(f"{self.name}: a config is a {self.config.__name__} or a mapping, not {type(config)}")
        return self.config.model_validate({k: v for k, v in config.items() if k in self.config.model_fields})

    def on(self, dataset: str) -> "Net":
        """This net on ``dataset`` (pipeline.nets maps each net to its dataset)."""
        return self if dataset == self.dataset else replace(self, dataset=dataset)

    def build(self, config: ConfigLike, classes: Classes | None = None) -> nn.Module:
        """The net as ``config`` shapes it for ``classes`` (its dataset's; default: the ten of
        the registry's dataset, ``default_classes``), initialised from torch's global RNG."""
        return self.make_model(self.settings(config), classes or self.default_classes)

    def inputs(self, stats: dict | None, config: ConfigLike, device: torch.device | str) -> Inputs:
        """Its batch transform for ``config``, from its dataset's statistics."""
        return self.make_inputs(stats, self.settings(config), device)

    def loss(self, config: ConfigLike) -> Callable:
        """loss(scores, targets) as ``config`` sets it."""
        return self.make_loss(self.settings(config))

    @property
    def shown(self) -> tuple:
        """What the net shows, in order: its layers, then its scores as CLASSES."""
        return (*self.layers, CLASSES)

    def module_path(self, layer: str) -> str | None:
        """The path in the model (``model.get_submodule``) of the shown layer ``layer``; None
        for CLASSES, the model's output (what ``forward_to(model, None, x)`` runs to)."""
        if layer == CLASSES:
            return None
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


def get_net(name: str) -> Net:
    if name not in NETS:
        raise UserError(f"unknown net {name!r}: choose one of {', '.join(NETS)}")
    return NETS[name]
