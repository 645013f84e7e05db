"""AlexNet as Krizhevsky, Sutskever & Hinton (2012) describe it, on one device.

Section 3.5 and figure 2: 224x224x3 input, conv1 96@11x11 stride 4, conv2 256@5x5,
conv3 384@3x3, conv4 384@3x3, conv5 256@3x3, two fully-connected layers of 4096 and the
classifier. ReLU after every hidden layer (section 3.1), local response normalisation after
the ReLUs of conv1 and conv2 (section 3.3), overlapping 3x3 max pooling with stride 2 after
LRN1, LRN2 and conv5 (section 3.4), dropout 0.5 before lin2 and lin3 (section 4.2).

The paper split conv2, conv4 and conv5 across two GPUs (each map reading only the maps on its
own GPU); we run the same layer sizes as one tower, every map reading all the maps of the
layer below: 58,322,314 parameters with 10 classes. conv1 uses
padding 2 so that 224 input gives the 55x55 maps of figure 2 ((224 + 4 - 11) / 4 + 1 = 55).

Every nonlinearity is a module (never F.relu inside forward), because the projection engine
(cnn_internals.projection) swaps ReLU module forwards to install its backward rules.
"""

from typing import ClassVar, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_unary

from cnn_internals.core.config import NonNegative
from cnn_internals.models.imagenet import IMAGENETTE
from cnn_internals.models.registry import Net, NetConfig, register
from cnn_internals.models.transforms import NORMALIZE, AlexNetInputs

WEIGHT_INITS = ("kaiming", "paper")

# Section 5: "We initialized the neuron biases in the second, fourth, and fifth convolutional
# layers, as well as in the fully-connected hidden layers, with the constant 1."
PAPER_UNIT_BIAS = ("conv2", "conv4", "conv5", "lin1", "lin2")


class LocalResponseNorm(nn.LocalResponseNorm):
    """torch.nn.LocalResponseNorm's math and repr, faster, with a deterministic CUDA backward.

    b_c = a_c / (k + alpha/n * sum_{c'} a_{c'}^2)^beta, the sum over the n = ``size`` channels
    c - n//2 .. c + (n-1)//2, zero outside [0, C) (section 3.3 of the paper; torch divides
    alpha by n, so alpha=5e-4 with n=5 is the paper's 1e-4).

    torch computes the window sum with avg_pool3d over a padded copy, whose CUDA backward
    accumulates with atomicAdd (AlexNet training on CUDA was then not bit-reproducible), and
    on the CPU it is ten passes over AlexNet's largest maps, slower still in channels-last.
    Here the window sum is one 1x1 convolution of the squares with a fixed 0/1 band matrix
    (``channel_band``): a matrix product over the channels at every pixel, deterministic on
    every device, and autograd gives the true gradient (the projection engine relies on that:
    LRN runs backwards as itself). On the CPU it is also faster than the slice-and-add sum
    (docs/benchmarks.md, 'Local response normalisation'; benchmarks/training.py has the whole step).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, *) -> (B, C, *)
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)


def channel_band(channels: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(C, C, 1, 1) 1x1 kernel: output channel c sums input channels c - size//2 .. c +
    (size-1)//2. Ones and zeros, exact in any precision; in ``like``'s dtype, device and
    memory format (so a channels-last map stays channels-last)."""
    before, after = size // 2, (size - 1) // 2
    c = torch.arange(channels, device=like.device)
    offset = c.view(1, -1) - c.view(-1, 1)              # [out, in]: in - out
    band = ((offset >= -before) & (offset <= after)).to(like.dtype).view(channels, channels, 1, 1)
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        band = band.contiguous(memory_format=torch.channels_last)
    return band


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """F.local_response_norm's result, the channel window summed by a 1x1 convolution (see
    LocalResponseNorm); any (B, C, *) input. Seen as one op by a TorchFunctionMode (the
    receptive-field trace has a rule for it), like torch's own."""
    if has_torch_function_unary(x):      # one op to a TorchFunctionMode, as F.local_response_norm
        return handle_torch_function(local_response_norm, (x,), x, size, alpha=alpha, beta=beta, k=k)
    if x.dim() < 3:
        raise ValueError(f"local_response_norm expects (B, C, *) input, got shape {tuple(x.shape)}")
    squares = x * x
    if x.dim() != 4:                                    # (B, C, L) or (B, C, D, H, W): one spatial axis
        squares = squares.reshape(x.shape[0], x.shape[1], -1, 1)
    window = F.conv2d(squares, channel_band(x.shape[1], size, squares)).reshape(x.shape)
    return x * (window * (alpha / size) + k).pow(-beta)


class AlexNet(nn.Module):
    """Shape comments are for 224x224 input."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=2)
        self.relu1 = nn.ReLU(inplace=True)
        self.lrn1 = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.lrn2 = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
        self.pool2 = nn.MaxPool2d(3, 2)
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
        x = self.relu1(self.conv1(x))              # (B, 96, 55, 55)
        x = self.pool1(self.lrn1(x))               # (B, 96, 27, 27)
        x = self.relu2(self.conv2(x))              # (B, 256, 27, 27)
        x = self.pool2(self.lrn2(x))               # (B, 256, 13, 13)
        x = self.relu3(self.conv3(x))              # (B, 384, 13, 13)
        x = self.relu4(self.conv4(x))              # (B, 384, 13, 13)
        x = self.relu5(self.conv5(x))              # (B, 256, 13, 13)
        x = self.pool3(x).flatten(1)               # (B, 256, 6, 6) -> (B, 9216)
        x = self.drop1(self.relu6(self.lin1(x)))   # (B, 4096)
        x = self.drop2(self.relu7(self.lin2(x)))   # (B, 4096)
        return self.lin3(x)                        # (B, num_classes)


def _weighted_layers(model: AlexNet):
    return [(name, m) for name, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def init_weights(model: AlexNet, scheme: str) -> None:
    """Initialise every conv and linear layer in place, from torch's global RNG (seed it first).

    "paper" (section 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, lin1 and lin2
    ("accelerates the early stages of learning by providing the ReLUs with positive inputs"),
    0 elsewhere. The paper fed raw 0-255 pixels minus the mean image (normalize "paper" in
    cnn_internals.models.transforms); with unit-variance inputs these small weights shrink
    the signal layer after layer.
    "kaiming" (He et al. 2015): weights N(0, 2 / fan_in), biases 0, which keeps the variance
    of unit-variance inputs constant through the ReLU layers.
    """
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {scheme!r}; choose one of {', '.join(WEIGHT_INITS)}")
    for name, layer in _weighted_layers(model):
        if scheme == "paper":
            layer.weight.normal_(0.0, 0.01)
            layer.bias.fill_(1.0 if name in PAPER_UNIT_BIAS else 0.0)
        else:
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            layer.bias.zero_()


def build_alexnet(num_classes: int = 10, weight_init: str = "kaiming") -> AlexNet:
    """An AlexNet with ``weight_init`` applied (see init_weights)."""
    model = AlexNet(num_classes)
    init_weights(model, weight_init)
    return model


class AlexNetConfig(NetConfig):
    """``train.alexnet``'s own keys."""

    no_imagenet: ClassVar[str] = (
        "torchvision's AlexNet is not the paper's (64 filters in conv1, not 96; 192 in conv2, not 256; "
        "no local response normalisation), so its ImageNet weights do not fit this net")
    weight_init: Literal[WEIGHT_INITS] = "kaiming"     # see init_weights
    normalize: Literal[NORMALIZE] = "standardize"      # standardize: (pixels - mean image) / pixel std; paper: raw
    augment: bool = True                               # random 224 crops + flips + PCA lighting; false: centre crops
    lighting_std: NonNegative = 0.1                    # the paper's alpha ~ N(0, 0.1) per eigenvector


class CropConfig(Protocol):
    """The keys ``alexnet_inputs`` reads of a net's config: AlexNetConfig's, and ZFNetConfig's
    (zfnet.py, which imports this module) for the same crops."""

    @property
    def normalize(self) -> str: ...

    @property
    def augment(self) -> bool: ...

    @property
    def lighting_std(self) -> float: ...


def alexnet_inputs(stats: dict, p: CropConfig, device: torch.device | str) -> AlexNetInputs:
    """Mean-image crops, flips and PCA lighting from the dataset's statistics; ``pixel_std``
    pools the three channel variances. Training reuses one output buffer (the batch before
    has been through backward by then), which spares a 77 MB allocation per step on the CPU."""
    pixel_std = float(np.sqrt(np.mean(np.square(stats["channel_std"]))))
    return AlexNetInputs(stats["mean_image"], stats["pca_eigvals"], stats["pca_eigvecs"], pixel_std, device,
                         normalize=p.normalize, augment=p.augment, lighting_std=p.lighting_std,
                         reuse_train_output=True)


register(Net(
    name="alexnet", title="AlexNet", dataset="imagenette",
    layers=("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"),
    module_paths={"fc6": "lin1", "fc7": "lin2"},     # Caffe's names for the paper's layers 6 and 7
    input_size=(3, 224, 224),
    config=AlexNetConfig,
    make_model=lambda c, classes: build_alexnet(len(classes), c.weight_init),
    default_classes=IMAGENETTE,
    make_inputs=alexnet_inputs,
))
