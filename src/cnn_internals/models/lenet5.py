"""LeNet-5 as LeCun, Bottou, Bengio & Haffner (1998) describe it.

Input 32x32 (MNIST's 28x28 padded by 2), C1 6@5x5, S2 2x2 subsampling with a trainable
coefficient and bias per map, C3 16@5x5 over the paper's partial connection table (Table I),
S4, C5 120@5x5, F6 84, and an output layer of Euclidean RBF units whose prototypes are 7x12
bitmaps of the digits with -1/+1 pixels. Every layer up to F6 is squashed by the scaled
tanh f(a) = A tanh(S a), A = 1.7159, S = 2/3. Weights start U(-2.4/F, 2.4/F), F the fan-in.
"""

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_variadic

from cnn_internals.core.config import Positive
from cnn_internals.core.errors import UserError
from cnn_internals.engine.activations import ScaledTanh
from cnn_internals.models.registry import Classes, Net, NetConfig, register

# Table I of the paper: which S2 maps (rows) each C3 map (columns) reads. The first six C3 maps
# take contiguous triples, the next six contiguous quadruples, three take discontinuous
# quadruples and the last takes all six: 60 connections instead of 96.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# Our own 7x12 drawings of the ten digits ('#' = +1, '.' = -1): the paper's RBF prototypes are
# "stylized images of the characters drawn on a 7x12 bitmap", fixed during training.
DIGIT_BITMAPS = (
    ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
     "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
     "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."),
    (".####..", "#....#.", "......#", "......#", ".....#.", "....#..",
     "...#...", "..#....", ".#.....", "#......", "#......", "#######"),
    (".#####.", "#.....#", "......#", "......#", ".....#.", "..###..",
     ".....#.", "......#", "......#", "......#", "#.....#", ".#####."),
    ("....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.", "#....#.",
     "#######", ".....#.", ".....#.", ".....#.", ".....#.", ".....#."),
    ("#######", "#......", "#......", "#......", "#####..", ".....#.",
     "......#", "......#", "......#", "......#", "#....#.", ".####.."),
    ("..####.", ".#.....", "#......", "#......", "#......", "#.###..",
     "##...#.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("#######", "......#", "......#", ".....#.", ".....#.", "....#..",
     "....#..", "...#...", "...#...", "..#....", "..#....", "..#...."),
    ("..###..", ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..",
     ".#...#.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", ".#...##",
     "..###.#", "......#", "......#", "......#", ".....#.", ".####.."),
)


def digit_prototypes() -> torch.Tensor:
    """(10, 84) tensor of -1/+1: the RBF centres, one 7x12 bitmap per digit."""
    rows = ["".join(bitmap) for bitmap in DIGIT_BITMAPS]
    return torch.tensor([[1.0 if ch == "#" else -1.0 for ch in row] for row in rows])


class Subsampling(nn.Module):
    """S2/S4: the four inputs of each 2x2 window are added, multiplied by a trainable
    coefficient and offset by a trainable bias, one pair per feature map."""

    def __init__(self, channels: int, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, 0
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        # coefficient * (sum of the window) + bias as one depthwise convolution whose kxk
        # kernel is the coefficient repeated: one pass over C1's large maps instead of four
        # (pool, x4, x coefficient, + bias), the same math (benchmarks/training.py).
        channels, k = self.weight.numel(), self.kernel_size
        kernel = self.weight.view(channels, 1, 1, 1).expand(channels, 1, k, k)
        return F.conv2d(x, kernel, self.bias, stride=self.stride, groups=channels)

    def fan_in(self) -> torch.Tensor:
        return torch.full((self.weight.numel(),), float(self.kernel_size**2))


class TableConv2d(nn.Conv2d):
    """A convolution whose output map o reads only the input maps table[o] (C3)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 table: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        mask = torch.ones(out_channels, in_channels, 1, 1)
        if table is not None:
            mask.zero_()
            for out_map, in_maps in enumerate(table):
                mask[out_map, list(in_maps)] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def fan_in(self) -> torch.Tensor:
        kh, kw = self.kernel_size
        return self.mask.flatten(1).sum(1) * kh * kw


def whole_window_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d(input, weight, bias) (stride 1, no padding) for a kernel exactly as large as the
    input, one output unit per map (LeNet-5's C5 on 5x5 maps): the same sum of products as one
    matrix product, (B, C*k*k) @ (C*k*k, out), which oneDNN's convolution of a 1x1 output runs
    slower (docs/benchmarks.md, 'Both loops got the faster model code'). Any other input size
    (a larger LeNet-5 input, as the paper's reason for calling C5 a convolution) is F.conv2d.
    Seen as one ``conv2d`` by a TorchFunctionMode: the receptive-field trace's rule applies."""
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(whole_window_conv2d, (input, weight, bias), input, weight, bias)
    if input.dim() == 4 and input.shape[-2:] == weight.shape[-2:]:
        return F.linear(input.flatten(1), weight.flatten(1), bias)[:, :, None, None]
    return F.conv2d(input, weight, bias)


whole_window_conv2d.__name__ = "conv2d"     # what the receptive-field trace keys its rules on


class WholeWindowConv2d(nn.Conv2d):
    """C5: a plain convolution (stride 1, no padding), computed by ``whole_window_conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return whole_window_conv2d(x, self.weight, self.bias)


class RBFOutput(nn.Module):
    """y_i = sum_j (x_j - w_ij)^2: each output is the squared distance to a class prototype."""

    def __init__(self, prototypes: torch.Tensor, learnable: bool = False) -> None:
        super().__init__()
        if learnable:
            self.prototypes = nn.Parameter(prototypes.clone())
        else:
            self.register_buffer("prototypes", prototypes.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 84) -> (B, 10) penalties, lower is better
        return (x.unsqueeze(1) - self.prototypes.unsqueeze(0)).pow(2).sum(-1)


class LeNet5(nn.Module):
    """Returns class *scores*, the negated RBF penalties, so argmax predicts as for any net."""

    def __init__(self, c3_table: bool = True, learnable_prototypes: bool = False, classes: int | None = None) -> None:
        """``classes``: None for MNIST's ten digits and their prototypes; a number of classes of
        another dataset, whose prototypes start as random -1/+1 bitmaps (drawn from torch's RNG
        first) and must be learned."""
        super().__init__()
        if classes is not None and not learnable_prototypes:
            raise ValueError("prototypes for classes other than the ten digits must be learnable")
        prototypes = digit_prototypes() if classes is None else torch.randint(0, 2, (classes, 84)).float() * 2 - 1
        self.conv1 = nn.Conv2d(1, 6, 5)                    # C1: (B, 6, 28, 28)
        self.tanh1 = ScaledTanh()
        self.pool1 = Subsampling(6)                        # S2: (B, 6, 14, 14)
        self.tanh2 = ScaledTanh()
        self.conv2 = TableConv2d(6, 16, 5, C3_TABLE if c3_table else None)  # C3: (B, 16, 10, 10)
        self.tanh3 = ScaledTanh()
        self.pool2 = Subsampling(16)                       # S4: (B, 16, 5, 5)
        self.tanh4 = ScaledTanh()
        self.conv3 = WholeWindowConv2d(16, 120, 5)         # C5: (B, 120, 1, 1)
        self.tanh5 = ScaledTanh()
        self.f6 = nn.Linear(120, 84)                       # F6: (B, 84)
        self.tanh6 = ScaledTanh()
        self.rbf = RBFOutput(prototypes, learnable=learnable_prototypes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """U(-2.4/F, 2.4/F) per unit, F its fan-in (C3's depends on its row of the table).
        Biases start at zero: the paper gives no rule for them."""
        for module in (self.conv1, self.pool1, self.conv2, self.pool2, self.conv3, self.f6):
            if hasattr(module, "fan_in"):
                fan_in = module.fan_in()
            else:
                fan_in = torch.full((module.weight.shape[0],), float(module.weight[0].numel()))
            bound = (2.4 / fan_in).view(-1, *([1] * (module.weight.dim() - 1)))
            module.weight.uniform_(-1.0, 1.0).mul_(bound)
            module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 32, 32) -> (B, 10)
        x = self.tanh2(self.pool1(self.tanh1(self.conv1(x))))
        x = self.tanh4(self.pool2(self.tanh3(self.conv2(x))))
        x = self.tanh5(self.conv3(x)).flatten(1)
        return -self.rbf(self.tanh6(self.f6(x)))


def lenet5_loss(scores: torch.Tensor, targets: torch.Tensor, j: float = 5.0) -> torch.Tensor:
    """The paper's eq. (9): y_correct + log(e^-j + sum_i e^-y_i), with y = -scores.

    Pulls the correct penalty down while pushing the others up (the log-sum-exp term) and
    stops pushing once they exceed j (the e^-j term), averaged over the batch."""
    penalty_correct = -scores.gather(1, targets.unsqueeze(1)).squeeze(1)
    floor = torch.full_like(scores[:, :1], -j)
    return (penalty_correct + torch.logsumexp(torch.cat([scores, floor], 1), dim=1)).mean()


def mnist_to_lenet_input(images_uint8: torch.Tensor | np.ndarray, background: float = -0.1,
                         foreground: float = 1.175) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 32, 32) float on the images' device: pad 2 and map 0 ->
    background, 255 -> foreground, the paper's levels (mean input near 0, variance near 1)."""
    x = torch.as_tensor(images_uint8).float().div_(255.0)
    x = background + (foreground - background) * x
    return F.pad(x.unsqueeze(1), (2, 2, 2, 2), value=background)


class LeNetInputs:
    """MNIST digits as LeNet-5 sees them. No distortions in training: the paper's 0.95 % is
    without them (its 0.8 % needs them), so train and eval are the same view."""

    def __init__(self, background: float, foreground: float) -> None:
        self.background, self.foreground = background, foreground

    def eval(self, images: torch.Tensor) -> torch.Tensor:  # (B, 28, 28) uint8 -> (B, 1, 32, 32)
        return mnist_to_lenet_input(images, self.background, self.foreground)

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.eval(images)

    def views(self, images: torch.Tensor) -> list:
        return [self.eval(images)]

    def display(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.background) / (self.foreground - self.background)).clamp(0, 1)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, 32) pixels (0 background, 1 ink) of the padded frame -> inputs; display's inverse."""
        return self.background + (self.foreground - self.background) * pixels


class LeNet5Config(NetConfig):
    """``train.lenet5``'s own keys; the defaults are the paper's."""

    no_imagenet: ClassVar[str] = "LeNet-5 is an MNIST net, with no ImageNet weights to start from"
    c3_table: bool = True                               # Table I's partial C2->C3 connections; false: full
    prototypes: Literal["fixed", "learned"] = "fixed"   # fixed: the paper's -1/+1 digit bitmaps
    normalize: Literal["paper", "standardize"] = "paper"  # paper: background -0.1, ink 1.175
    j: Positive = 5.0                                   # the constant of the loss, eq. (9)


DIGITS = Classes(tuple(str(digit) for digit in range(10)))     # MNIST's, in label order


def build_lenet5(config: LeNet5Config, classes: Classes = DIGITS) -> "LeNet5":
    """LeNet-5 for ``classes``: MNIST's digits with the paper's prototypes (fixed or learned);
    any other classes need ``prototypes: learned`` (the paper's bitmaps draw the ten digits)."""
    digits = classes.names == DIGITS.names
    if not digits and config.prototypes == "fixed":
        raise UserError(f"LeNet-5's fixed RBF prototypes are bitmaps of the ten digits; this dataset's {len(classes)} "
                        "classes are not those: set train.lenet5.prototypes: learned")
    return LeNet5(c3_table=config.c3_table, learnable_prototypes=config.prototypes == "learned",
                  classes=None if digits else len(classes))


def input_levels(stats: dict, config: LeNet5Config) -> tuple:
    """(background, foreground) input levels: the paper's -0.1 / 1.175, or the levels that
    standardise the training pixels with the dataset's mean and std."""
    if config.normalize == "paper":
        return -0.1, 1.175
    mean, std = float(stats["channel_mean"][0]), float(stats["channel_std"][0])
    return (0.0 - mean) / std, (1.0 - mean) / std


register(Net(
    name="lenet5", title="LeNet-5", dataset="mnist",
    layers=("conv1", "pool1", "conv2", "pool2", "conv3", "f6"),   # C1, S2, C3, S4, C5, F6
    input_size=(1, 32, 32),
    config=LeNet5Config,
    make_model=lambda c, classes: build_lenet5(c, classes),
    default_classes=DIGITS,
    stored_size=28,
    make_inputs=lambda stats, c, device: LeNetInputs(*input_levels(stats, c)),
    make_loss=lambda c: (lambda scores, targets: lenet5_loss(scores, targets, c.j)),
))
