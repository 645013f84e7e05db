"""ZFNet: the net of Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks"
(ECCV 2014; arXiv 1311.2901), the deconvnet paper's own model.

Figure 3: 224x224x3 input; conv1 96@7x7 stride 2 -> 110x110; ReLU, 3x3 max pooling stride 2
-> 55x55, contrast normalisation across feature maps; conv2 256@5x5 stride 2 -> 26x26, ReLU,
pooling -> 13x13, normalisation; conv3 384, conv4 384, conv5 256, all 3x3 -> 13x13; pooling
-> 6x6; two fully-connected layers of 4096 and the classifier. Dropout 0.5 in layers 6 and 7.

It is AlexNet with what their visualisations showed was wrong fixed (section 4.1): conv1's
11x11 stride-4 filters (a mix of extremely high and low frequency filters, aliasing in
conv2) became 7x7 with stride 2, and conv2 got stride 2. Every layer is dense (one GPU), and
filters whose RMS exceeds 0.1 are renormalised to 0.1 after each update ("crucial, especially
in the first layer of the model, where the input images are roughly in the [-128,128] range").

Where the figure leaves a detail open we choose, and the shapes of figure 3 decide: conv1 pads
1 (224 + 2 - 7) / 2 + 1 = 110; the first two poolings round up, as Caffe's and cuda-convnet's
do (110 -> 55, 26 -> 13); the contrast normalisation is AlexNet's local response
normalisation (size 5, alpha 1e-4, beta 0.75, k 2), applied after pooling as the figure orders
it (AlexNet normalises before pooling).
"""

from typing import ClassVar, Literal

import torch
from torch import nn

from cnn_internals.core.config import NonNegative
from cnn_internals.models.alexnet import LocalResponseNorm, alexnet_inputs
from cnn_internals.models.imagenet import IMAGENETTE
from cnn_internals.models.registry import Net, NetConfig, register
from cnn_internals.models.transforms import NORMALIZE

WEIGHT_INITS = ("paper", "kaiming")
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


class ZFNet(nn.Module):
    """Shape comments are for 224x224 input. ``filter_rms``: the radius each conv filter is
    renormalised to (section 4.1) before every forward in training mode; 0 turns it off."""

    def __init__(self, num_classes: int = 10, filter_rms: float = 0.1):
        super().__init__()
        self.filter_rms = filter_rms
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.lrn1 = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
        self.conv2 = nn.Conv2d(96, 256, 5, stride=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.lrn2 = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool3 = nn.MaxPool2d(3, 2)
        self.lin1 = nn.Linear(256 * 6 * 6, 4096)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop1 = nn.Dropout(0.5)
        self.lin2 = nn.Linear(4096, 4096)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop2 = nn.Dropout(0.5)
        self.lin3 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 3, 224, 224)
        if self.training and self.filter_rms > 0:
            renormalize_filters(self, self.filter_rms)
        x = self.relu1(self.conv1(x))              # (B, 96, 110, 110)
        x = self.lrn1(self.pool1(x))               # (B, 96, 55, 55)
        x = self.relu2(self.conv2(x))              # (B, 256, 26, 26)
        x = self.lrn2(self.pool2(x))               # (B, 256, 13, 13)
        x = self.relu3(self.conv3(x))              # (B, 384, 13, 13)
        x = self.relu4(self.conv4(x))              # (B, 384, 13, 13)
        x = self.relu5(self.conv5(x))              # (B, 256, 13, 13)
        x = self.pool3(x).flatten(1)               # (B, 256, 6, 6) -> (B, 9216)
        x = self.drop1(self.relu6(self.lin1(x)))   # (B, 4096)
        x = self.drop2(self.relu7(self.lin2(x)))   # (B, 4096)
        return self.lin3(x)                        # (B, num_classes)


@torch.no_grad()
def renormalize_filters(model: ZFNet, radius: float) -> None:
    """Section 4.1: every conv filter (one output map's weights) whose RMS exceeds ``radius``
    is scaled back to RMS ``radius``; the others are left as they are.

    Run at the start of each training forward, so it acts on the weights the last update left
    (the paper's "after each update") inside the model, whatever loop or distributed wrapper
    drives it. The weights a run ends with are its last update's, not yet renormalised: a
    filter may sit one step past the radius."""
    for name in CONV_LAYERS:
        weight = getattr(model, name).weight                  # (out, in, k, k)
        rms = weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        weight.mul_(torch.where(rms > radius, radius / rms, torch.ones_like(rms)))


@torch.no_grad()
def init_weights(model: ZFNet, scheme: str) -> None:
    """"paper" (section 3): "All weights are initialized to 10^-2 and biases are set to 0",
    read as N(0, 0.01) as in AlexNet's paper; "kaiming": N(0, 2 / fan_in), biases 0."""
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {scheme!r}; choose one of {', '.join(WEIGHT_INITS)}")
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if scheme == "paper":
                layer.weight.normal_(0.0, 0.01)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            layer.bias.zero_()


def build_zfnet(num_classes: int = 10, weight_init: str = "paper", filter_rms: float = 0.1) -> ZFNet:
    model = ZFNet(num_classes, filter_rms)
    init_weights(model, weight_init)
    return model


class ZFNetConfig(NetConfig):
    """``train.zfnet``'s own keys; the defaults are the paper's."""

    no_imagenet: ClassVar[str] = "torchvision publishes no ZFNet weights (and its AlexNet is not the paper's AlexNet either)"
    weight_init: Literal[WEIGHT_INITS] = "paper"       # paper: N(0, 0.01), biases 0 | kaiming
    normalize: Literal[NORMALIZE] = "paper"            # paper: raw 0-255 minus the mean image
    augment: bool = True                               # random 224 crops + flips (the paper's sub-crops)
    lighting_std: NonNegative = 0.0                    # no PCA lighting in the paper
    filter_rms: NonNegative = 0.1                      # filters renormalised to this RMS when above it (4.1); 0: off


register(Net(
    name="zfnet", title="ZFNet", dataset="imagenette",
    layers=(*CONV_LAYERS, "fc6", "fc7"),
    module_paths={"fc6": "lin1", "fc7": "lin2"},     # the paper's layers 6 and 7, by Caffe's names
    input_size=(3, 224, 224),
    config=ZFNetConfig,
    make_model=lambda c, classes: build_zfnet(len(classes), c.weight_init, c.filter_rms),
    default_classes=IMAGENETTE,
    make_inputs=alexnet_inputs,          # the same mean-image crops, flips and 10 test views
))
