"""Small random nets shared by the tests (importable: tests/ is on sys.path under pytest)."""

import torch
from torch import nn


def relu_net(inplace=True, seed=0):
    """A ReLU conv net with everything the projection engine must get right: in-place ReLUs,
    LRN, overlapping 3x3/s2 max pools (shared argmaxes), padding and a classifier head."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 5, stride=2, padding=2))
    net.add_module("relu1", nn.ReLU(inplace=inplace))
    net.add_module("lrn1", nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
    net.add_module("pool1", nn.MaxPool2d(3, 2))
    net.add_module("conv2", nn.Conv2d(8, 12, 3, padding=1))
    net.add_module("relu2", nn.ReLU(inplace=inplace))
    net.add_module("pool2", nn.MaxPool2d(3, 2))
    net.add_module("conv3", nn.Conv2d(12, 16, 3, padding=1))
    net.add_module("relu3", nn.ReLU(inplace=inplace))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(16 * 3 * 3, 5))
    return net.double()


def twin(net, inplace):
    """The same weights with ReLUs of the other kind."""
    other = relu_net(inplace=inplace)
    other.load_state_dict(net.state_dict())
    return other


def resnet18_net(inplace=True, seed=0):
    """torchvision's ResNet-18 (random weights, 10 classes, float64, eval mode): each
    BasicBlock calls its one ReLU module twice, and a 1x1 stride-2 shortcut conv branches off
    the main path in layers 2-4. ``inplace=False`` gives the same net with ordinary ReLUs."""
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    net = resnet18(weights=None, num_classes=10).double().eval()
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = inplace
    return net
