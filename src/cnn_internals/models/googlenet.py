"""GoogLeNet: Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015; arXiv 1409.4842),
as torchvision defines it, the reference net of feature visualization (Olah et al. 2017 and
OpenAI Microscope show its units as InceptionV1).

Table 1: 224x224x3 input; conv1 64@7x7 stride 2 (112x112), 3x3 max pooling stride 2 (56);
conv2 (the 1x1 reduction, 64 maps) and conv3 192@3x3 (56), max pooling (28); inception (3a),
(3b) (28), max pooling (14); (4a)-(4e) (14), max pooling (7); (5a), (5b) (7), 7x7 average
pooling, 40 % dropout, a linear layer to the classes. An inception module runs four branches
on the same input and concatenates their maps: a 1x1 convolution; a 1x1 reduction then 3x3;
a 1x1 reduction then 5x5; 3x3 max pooling (stride 1) then a 1x1 projection. Every convolution
is followed by a ReLU. Two auxiliary classifiers on (4a) and (4d) add 0.3 x their losses in
training (section 5) and are discarded at inference.

torchvision's ``googlenet`` is that layout with these differences, all of them in its
published weights, which are a port of TensorFlow's batch-normalised Inception v1
(torchvision's docs: "ported from the original paper"), not the paper's own Caffe-era net:
- batch normalisation (eps 0.001) after every convolution, no bias in the convolutions, and
  no local response normalisation (the paper has LRN after conv1's pool and after conv3);
- the "5x5" branch is a 3x3 convolution (pytorch/vision#906, kept for the weights' sake);
- the pools use ceil mode (the output sizes above come out of 224 only that way), and the last
  one is 2x2 where the paper's table has 3x3;
- its dropout is 0.2 (the paper: 0.4); irrelevant in evaluation, and set to the paper's 0.4
  here for a run from scratch.
- the weights expect pixels scaled to [-1, 1], (p - 0.5) / 0.5, TensorFlow's preprocessing.
  torchvision's net takes ImageNet-normalised input and, with ``transform_input=True`` (which
  its weights builder sets), maps it there as its first op. Here that map is folded into the
  net's inputs instead (``imagenet_inputs`` with mean 0.5 and std 0.5 per channel, the same
  numbers up to float rounding) and the model's ``transform_input`` is off, so the model's
  input is the tensor the first convolution sees: projections, receptive fields and feature
  visualization all start from it (the trace follows no per-channel indexing before conv1).

Loading: the published file holds the two auxiliary heads too (untrained, torchvision warns),
so torchvision builds the net with ``aux_logits=True`` to load it strictly, skips its slow
initialisation (``init_weights=False``) and then drops the heads. Here the net is built without
them and ``load_imagenet`` checks that the file's ``aux1.*``/``aux2.*`` keys are exactly those
heads' before it leaves them out and loads the rest strictly. A run from scratch trains no
auxiliary classifiers (a departure from section 5, said in docs/nets.md): the loop trains on
the main scores.

torchvision's ``BasicConv2d`` ends in ``F.relu``, a function the projection rules cannot
replace; the blocks here are the same convolution and batch norm (the same state dict keys)
followed by an ``nn.ReLU`` module, so deconvnet and guided backprop see every ReLU.

Shown layers: the paper's names, which are torchvision's module names: conv1, conv2, conv3 and
each inception module's concatenated output. The receptive field trace keeps each branch's
channels' own field (the 1x1 branch of (3a) sees 27 px, its other branches 43); the pictures cut
patches at the union and say which sizes its maps see (docs/nets.md).
"""

from functools import partial
from typing import Any

import torch
from torch import nn

from cnn_internals.models.imagenet import IMAGENETTE, ImagenetConfig, imagenet_head, imagenet_inputs, load_torchvision_state
from cnn_internals.models.registry import WEIGHTS, Classes, Net, register

HEAD = "fc"
SHOWN = ("conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
         "inception4d", "inception4e", "inception5a", "inception5b")
AUX_HEADS = (("aux1", 512), ("aux2", 528))     # torchvision's auxiliary classifiers and their input maps
# TensorFlow's Inception preprocessing, what the ported weights were trained on: [0, 1] -> [-1, 1].
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
PAPER_DROPOUT = 0.4


class ConvBNReLU(nn.Module):
    """torchvision's BasicConv2d (conv without bias, batch norm with eps 0.001, ReLU) with the
    ReLU as a module the projection rules can replace; the same state dict keys."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _googlenet(num_classes: int, init_weights: bool) -> nn.Module:
    from torchvision.models.googlenet import GoogLeNet, Inception, InceptionAux  # late: see torchvision_net

    return GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=init_weights,
                     blocks=[ConvBNReLU, partial(Inception, conv_block=ConvBNReLU),
                             partial(InceptionAux, conv_block=ConvBNReLU)],
                     dropout=PAPER_DROPOUT)


def build_googlenet(weights: str = "scratch", classes: Classes = IMAGENETTE) -> nn.Module:
    """GoogLeNet without auxiliary heads and without the input transform (see the module
    docstring): 10 classes initialised as torchvision does (truncated normal, std 0.01; seed
    torch's RNG first) for ``weights`` scratch; 1000 read at Imagenette's ten, uninitialised
    (the weights are loaded next), for imagenet."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if weights == "scratch":
        return _googlenet(len(classes), init_weights=True)
    if not classes.imagenet:         # a fresh head, initialised (the rest is loaded next)
        return imagenet_head(_googlenet(len(classes), init_weights=True), HEAD, classes)
    return imagenet_head(_googlenet(1000, init_weights=False), HEAD, classes)


def aux_keys() -> set:
    """The state dict keys of torchvision's two auxiliary heads (1000 classes)."""
    from torchvision.models.googlenet import InceptionAux

    with torch.device("meta"):
        return {f"{name}.{key}" for name, maps in AUX_HEADS
                for key in InceptionAux(maps, 1000, conv_block=ConvBNReLU).state_dict()}


def load_imagenet(model: nn.Module, state_dict: dict) -> None:
    """torchvision's published GoogLeNet state dict (``googlenet-1378be20.pth``) into a model
    built with ``build_googlenet("imagenet")``: the auxiliary heads' keys must be exactly
    theirs (they are left out), every other key is loaded strictly."""
    aux = {key for key in state_dict if key.split(".", 1)[0] in dict(AUX_HEADS)}
    expected = aux_keys()
    if aux != expected:
        missing, unexpected = sorted(expected - aux), sorted(aux - expected)
        raise RuntimeError(f"Error(s) in loading state_dict for GoogLeNet's auxiliary heads: missing {missing}, "
                           f"unexpected {unexpected}")
    load_torchvision_state(model, {k: v for k, v in state_dict.items() if k not in aux}, HEAD)


class GoogLeNetConfig(ImagenetConfig):
    """``train.googlenet``'s own keys: those of every net with torchvision's ImageNet weights."""


register(Net(
    name="googlenet", title="GoogLeNet", dataset="imagenette",
    layers=SHOWN,
    input_size=(3, 224, 224),
    config=GoogLeNetConfig,
    make_model=lambda c, classes: build_googlenet(c.weights, classes),
    default_classes=IMAGENETTE,
    # 224 crops as the ported weights expect them, (p - 0.5) / 0.5: torchvision's ImageNet
    # normalisation followed by its transform_input; the crops, flips, lighting and views of VGG-16's
    make_inputs=partial(imagenet_inputs, mean=INPUT_MEAN, std=INPUT_STD),
    load_imagenet=load_imagenet,
))
