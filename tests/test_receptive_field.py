"""receptive_field against brute force on branching nets: the support of a unit's input
gradient in a copy of the net that is linear where it matters (max pools averaged, every
weight, bias and input value positive, so every ReLU stays on its linear side and no term
cancels) is exactly the window receptive_field gives, clipped to the image."""

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from cnn_internals.engine.projection import receptive_field
from cnn_internals.models.alexnet import LocalResponseNorm
from cnn_internals.models.lenet5 import TableConv2d


class _Stop(Exception):
    pass


class DepthwiseOnes(nn.Module):
    """A dilated max pool made linear: the sum over the same window."""

    def __init__(self, pool, channels):
        super().__init__()
        self.pool, self.channels = pool, channels

    def forward(self, x):
        k, s, p, d = (self.pool.kernel_size, self.pool.stride, self.pool.padding, self.pool.dilation)
        weight = x.new_ones(self.channels, 1, k, k)
        return F.conv2d(x, weight, stride=s, padding=p, dilation=d, groups=self.channels)


def linearised(net, pool_channels=None):
    """A float64 copy whose unit gradients are positive exactly where the unit looks."""
    twin = copy.deepcopy(net).double().eval()
    for parent in list(twin.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                if child.dilation == 1:
                    pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
                else:
                    pool = DepthwiseOnes(child, pool_channels[name])
                setattr(parent, name, pool)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5)
    return twin


def supports(twin, layer, input_size, units):
    """For each unit (channel, row, col) of ``layer``: the input rows and columns where its
    gradient is nonzero."""
    out = {}

    def stop(module, args, output):
        out["y"] = output
        raise _Stop

    x = torch.ones(len(units), *input_size, dtype=torch.float64, requires_grad=True)
    handle = dict(twin.named_modules())[layer].register_forward_hook(stop)
    try:
        twin(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    c, i, j = (torch.tensor(v) for v in zip(*units))
    out["y"][torch.arange(len(units)), c, i, j].sum().backward()
    grad = x.grad.abs().sum(1)                                            # (B, H, W)
    return [(grad[b].sum(1).nonzero().flatten().tolist(), grad[b].sum(0).nonzero().flatten().tolist())
            for b in range(len(units))]


def window(rf, axis, index, length):
    """Input positions unit ``index`` sees along ``axis``, clipped to [0, length)."""
    size, stride, padding = (v if isinstance(v, int) else v[axis] for v in rf)
    first = index * stride - padding
    return list(range(max(first, 0), min(first + size, length)))


def assert_fields_are_gradient_supports(net, layer, input_size, units, rf_of, **linear):
    height, width = input_size[1:]
    got = supports(linearised(net, **linear), layer, input_size, units)
    for (c, i, j), (rows, cols) in zip(units, got):
        rf = rf_of(c)
        assert rows == window(rf, 0, i, height), (layer, c, i, j, rf)
        assert cols == window(rf, 1, j, width), (layer, c, i, j, rf)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return resnet18(weights=None).double().eval()


RESNET_96 = {  # at 96x96: maps of 48, 24, 12, 6, 3 units
    "layer1.0.conv1": ((19, 4, 9), 24),
    "layer2.1.conv2": ((99, 8, 49), 12),   # the shortcut's 1x1/s2 conv adds nothing to it
    "layer3.0.downsample.0": ((99, 16, 49), 6),
    "layer4.1.conv2": ((435, 32, 217), 3),
}


@pytest.mark.parametrize("layer", sorted(RESNET_96))
def test_resnet18_fields_are_the_union_over_main_path_and_shortcut(resnet, layer):
    rf, n = RESNET_96[layer]
    assert receptive_field(resnet, layer, (3, 96, 96)) == rf
    units = [(0, 0, n - 1), (3, n // 2, 1), (5, n - 1, 0), (7, 1, n // 2), (1, n - 1, n - 1)]
    assert_fields_are_gradient_supports(resnet, layer, (3, 96, 96), units, lambda c: rf)


class Mixed(nn.Module):
    """Inception-style module: parallel 1x1, 3x3, 1x7 (rows and columns differ) and 3x3 max
    pool -> 1x1 branches, concatenated along the channels, a functional ReLU on top."""

    def __init__(self, cin):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 2, 1)
        self.b3 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
        self.b7 = nn.Conv2d(cin, 2, (1, 7), padding=(0, 3))
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.bp = nn.Conv2d(cin, 2, 1)

    def forward(self, x):
        return F.relu(torch.cat([self.b1(x), self.b3(x), self.b7(x), self.bp(self.pool(x))], 1))


class Reduction(nn.Module):
    """Stride-2 branches with different windows and offsets: 3x3/p1 and 2x2/p0 convs, a 4x4/p1
    average pool of every channel, all plus a 1x1/s2 shortcut of the first channel alone."""

    def __init__(self, cin):
        super().__init__()
        self.a = nn.Conv2d(cin, 2, 3, stride=2, padding=1)
        self.b = nn.Conv2d(cin, 2, 2, stride=2)
        self.c = nn.AvgPool2d(4, 2, 1)
        self.shortcut = nn.Conv2d(1, 1, 1, stride=2)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x)], 1) + self.shortcut(x[:, :1])


class InceptionStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)   # called twice
        self.relu = nn.ReLU()                          # called three times
        self.mixed = Mixed(4)
        self.reduce = Reduction(8)
        self.head = nn.Conv2d(12, 3, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.shared(self.relu(self.shared(self.relu(self.stem(x))))))
        return self.head(self.reduce(self.mixed(x)))


INCEPTION_CASES = {
    # layer: (channels, map size, field of each channel)
    "shared": (4, 24, [(5, 1, 2)] * 4),
    "mixed": (8, 24, [(7, 1, 3)] * 2 + [(9, 1, 4)] * 2 + [((7, 13), (1, 1), (3, 6))] * 2 + [(9, 1, 4)] * 2),
    # the union over the mixed channels is 9 rows x 13 columns, offset 4 x 6
    # reduce: 3x3/s2 and 2x2/s2 over all mixed channels, then the 4x4 avg pool of each of them
    "reduce": (12, 12, [((11, 15), (2, 2), (5, 7))] * 2 + [((10, 14), (2, 2), (4, 6))] * 2 + [(10, 2, 4)] * 2
               + [(12, 2, 5)] * 2 + [((10, 16), (2, 2), (4, 7))] * 2 + [(12, 2, 5)] * 2),
    "head": (3, 12, [((16, 20), (2, 2), (7, 9))] * 3),
}


@pytest.mark.parametrize("layer", sorted(INCEPTION_CASES))
def test_inception_style_fields_are_per_channel_after_a_concat(layer):
    torch.manual_seed(0)
    net = InceptionStyle().double()
    channels, n, expected = INCEPTION_CASES[layer]
    per_channel = [receptive_field(net, layer, (3, 24, 24), channel=c) for c in range(channels)]
    assert per_channel == expected
    units = [(c, i, j) for c in range(channels) for i, j in [(0, n - 1), (n // 2, 1), (n - 1, n // 2)]]
    assert_fields_are_gradient_supports(net, layer, (3, 24, 24), units, lambda c: per_channel[c])


class ChannelMixers(nn.Module):
    """After the per-channel fields of ``mixed``: AlexNet's LRN over 3 neighbouring channels
    (one op to the trace, though it sums with a 1x1 convolution inside), then LeNet-5's table
    convolution (weights times a 0/1 mask) reading channel 0 alone and channels 2 and 4."""

    def __init__(self):
        super().__init__()
        self.net = InceptionStyle()
        self.lrn = LocalResponseNorm(3, alpha=0.3, k=2.0)
        self.table = TableConv2d(8, 2, 1, table=((0,), (2, 4)))

    def forward(self, x):
        n = self.net
        x = n.relu(n.shared(n.relu(n.shared(n.relu(n.stem(x))))))
        return self.table(self.lrn(n.mixed(x)))


WIDE = ((9, 13), (1, 1), (4, 6))      # the union of mixed's (9, 1, 4) and ((7, 13), (1, 1), (3, 6))
MIXER_CASES = {
    # channel c of the LRN reads mixed's c-1, c, c+1 (see INCEPTION_CASES["mixed"])
    "lrn": [(7, 1, 3), (9, 1, 4), (9, 1, 4), WIDE, WIDE, WIDE, WIDE, (9, 1, 4)],
    # the table conv reads the LRN's channel 0, and its channels 2 and 4
    "table": [(7, 1, 3), WIDE],
}


@pytest.mark.parametrize("layer", sorted(MIXER_CASES))
def test_a_conv_reads_only_the_channels_its_kernel_is_not_zero_on(layer):
    torch.manual_seed(0)
    net = ChannelMixers().double()
    expected = MIXER_CASES[layer]
    per_channel = [receptive_field(net, layer, (3, 24, 24), channel=c) for c in range(len(expected))]
    assert per_channel == expected
    units = [(c, i, j) for c in range(len(expected)) for i, j in [(0, 23), (12, 1), (23, 12)]]
    assert_fields_are_gradient_supports(net, layer, (3, 24, 24), units, lambda c: per_channel[c])


def test_without_a_channel_the_field_is_the_union_over_channels():
    net = InceptionStyle().double()
    assert receptive_field(net, "mixed", (3, 24, 24)) == ((9, 13), (1, 1), (4, 6))
    assert receptive_field(net, "reduce", (3, 24, 24)) == ((12, 16), (2, 2), (5, 7))
    with pytest.raises(ValueError, match="channel 8 out of range"):
        receptive_field(net, "mixed", (3, 24, 24), channel=8)


def zoo():
    """A chain with everything the window arithmetic must get right."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 3, (3, 5), padding=(1, 2))),                  # asymmetric
        ("pool1", nn.MaxPool2d(3, 2, 1, ceil_mode=True)),                    # ceil mode
        ("conv2", nn.Conv2d(3, 3, 3, padding=2, dilation=2)),                # dilated
        ("conv3", nn.Conv2d(3, 3, 3, padding="same")),
        ("pool2", nn.MaxPool2d(2, 1, 1, dilation=2)),                        # dilated pool
        ("pool3", nn.AvgPool2d((2, 3), (2, 1), (1, 1), ceil_mode=True)),     # asymmetric
    ]))


ZOO = {"conv1": ((3, 5), (1, 1), (1, 2)), "pool1": ((5, 7), (2, 2), (2, 3)), "conv2": ((13, 15), (2, 2), (6, 7)),
       "conv3": ((17, 19), (2, 2), (8, 9)), "pool2": ((21, 23), (2, 2), (10, 11)),
       "pool3": ((23, 27), (4, 2), (12, 13))}


@pytest.mark.parametrize("size", [23, 24])
def test_ceil_mode_dilation_and_asymmetric_windows(size):
    torch.manual_seed(0)
    net = zoo().double()
    for layer, rf in ZOO.items():
        assert receptive_field(net, layer, (2, size, size)) == rf, layer
        out = net[:list(ZOO).index(layer) + 1](torch.zeros(1, 2, size, size, dtype=torch.float64))
        h, w = out.shape[-2:]
        units = [(0, 0, w - 1), (1, h // 2, w // 2), (2, h - 1, 0), (0, h - 1, w - 1)]
        assert_fields_are_gradient_supports(net, layer, (2, size, size), units, lambda c, rf=rf: rf,
                                            pool_channels={"pool2": 3})


class Functional(nn.Module):
    """Channel and spatial ops inside a forward: chunk, narrow, slicing, cat, pad, F.relu."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Conv2d(2, 2, 3, padding=1)
        self.c1 = nn.Conv2d(2, 2, 1)
        self.c5 = nn.Conv2d(2, 2, 5, padding=2)
        self.out = nn.Identity()

    def forward(self, x):
        wide, narrow = torch.cat([F.relu(self.c3(x)), self.c1(x)], 1).chunk(2, dim=1)
        y = torch.cat([narrow, self.c5(x).narrow(1, 1, 1), wide[:, 1:]], 1)
        # output row i is input row i + 1, output column j is input column j - 1
        return self.out(F.pad(y, (1, 0, 0, 2))[..., 1:, :])


def test_functional_channel_and_spatial_ops():
    torch.manual_seed(0)
    net = Functional().double()
    expected = [((1, 1), (1, 1), (-1, 1))] * 2 + [((5, 5), (1, 1), (1, 3)), ((3, 3), (1, 1), (0, 2))]
    per_channel = [receptive_field(net, "out", (2, 10, 10), channel=c) for c in range(4)]
    assert per_channel == expected
    # units over input rows 1..9 and columns 0..8: the rest sit on the zero padding itself
    units = [(c, i, j) for c in range(4) for i, j in [(0, 1), (4, 5), (8, 10), (8, 1)]]
    assert_fields_are_gradient_supports(net, "out", (2, 10, 10), units, lambda c: per_channel[c])


def test_asking_past_flatten_or_an_adaptive_pool_names_it(resnet):
    with pytest.raises(ValueError, match="'fc' undefined: adaptive_avg_pool2d in 'avgpool'"):
        receptive_field(resnet, "fc", (3, 64, 64))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(ValueError, match="'2' undefined: flatten in '1' leaves no spatial map"):
        receptive_field(net, "2", (1, 5, 5))


def test_adding_maps_of_different_strides_is_refused():
    class Mismatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 5)             # 8 -> 4, stride 1
            self.b = nn.Conv2d(1, 1, 2, stride=2)   # 8 -> 4, stride 2
            self.out = nn.Identity()

        def forward(self, x):
            return self.out(self.a(x) + self.b(x))

    net = Mismatch()
    assert receptive_field(net, "a", (1, 8, 8)) == (5, 1, 0)
    with pytest.raises(ValueError, match="add in the model's forward combines maps of different strides"):
        receptive_field(net, "out", (1, 8, 8))


def test_a_forward_that_reads_values_is_traced_on_the_real_device():
    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            if x.abs().sum() >= 0:   # cannot be decided on the meta device
                x = self.conv(x)
            return self.pool(x)

    assert receptive_field(Reads(), "pool", (1, 10, 10)) == (4, 2, 0)

