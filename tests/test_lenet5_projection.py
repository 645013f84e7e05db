"""The projection engine on the real LeNet-5 against two references built here: the model's own
autograd with the scaled-tanh rules of docs/projection.md installed as backward hooks, and a backward pass
written out by hand (transposed convolutions, the S-layers' coefficients, the tanh rules).

docs/projection.md, "Projection rules", for f(x) = A tanh(Sx) with incoming gradient g:
    gradient         g * f'(x)
    deconvnet        relu(g) * f'(0) = relu(g) * A S   (ignores the input)
    guided_backprop  relu(g) * f'(x)
"""

import pytest
import torch
import torch.nn.functional as F
from oracles import rel_err

from cnn_internals.engine.projection import project
from cnn_internals.models.lenet5 import LeNet5

A, S = 1.7159, 2.0 / 3.0          # the paper's constants, written out (appendix A)
METHODS = ("gradient", "deconvnet", "guided_backprop")
# Output (C, H, W) of each projected layer on a 32x32 input: C1, S2, C3, S4, C5.
LAYERS = {"conv1": (6, 28, 28), "pool1": (6, 14, 14), "conv2": (16, 10, 10),
          "pool2": (16, 5, 5), "conv3": (120, 1, 1)}
# Table I (LeCun et al. 1998): rows S2 maps 0..5, columns C3 maps 0..15.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)
PAPER_MASK = torch.tensor([[1.0 if TABLE_I[i][j] == "X" else 0.0 for i in range(6)] for j in range(16)],
                          dtype=torch.float64).view(16, 6, 1, 1)


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def net():
    """A seeded LeNet-5 moved off its init: larger weights and non-zero biases put the tanh units
    at many slopes, and S-layer coefficients of both signs make relu(g) matter."""
    torch.manual_seed(0)
    model = LeNet5().double()
    with torch.no_grad():
        for i, name in enumerate(("conv1", "conv2", "conv3", "f6")):
            layer = getattr(model, name)
            layer.weight.mul_(3.0)
            layer.bias.copy_(randn(*layer.bias.shape, seed=10 + i) * 0.5)
        for i, name in enumerate(("pool1", "pool2")):
            layer = getattr(model, name)
            layer.weight.copy_(randn(*layer.weight.shape, seed=20 + i))
            layer.bias.copy_(randn(*layer.bias.shape, seed=30 + i) * 0.5)
    return model


@pytest.fixture(scope="module")
def images():
    return randn(6, 1, 32, 32, seed=1)


def units(layer, n=6, seed=2):
    channels, height, width = LAYERS[layer]
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(channels, (n,), generator=g), torch.randint(height, (n,), generator=g),
            torch.randint(width, (n,), generator=g))


def f(a):
    return A * torch.tanh(S * a)


def tanh_rule(g, pre_activation, method):
    """The backward rule (docs/projection.md) at a scaled tanh whose input was ``pre_activation``."""
    slope = A * S * (1 - torch.tanh(S * pre_activation) ** 2)
    if method == "gradient":
        return g * slope
    if method == "deconvnet":
        return g.clamp_min(0) * (A * S)
    return g.clamp_min(0) * slope


def hooked_reference(model, x, layer, channels, rows, cols, method):
    """d unit / d input by the model's own autograd, with each squashing module's input gradient
    replaced by the method's rule (full backward hooks)."""
    squashes = [m for name, m in model.named_children() if name.startswith("tanh")]
    assert len(squashes) == 6
    seen, kept = {}, {}

    def remember(module, args):
        seen[module] = args[0].detach()

    def rule(module, grad_input, grad_output):
        return (tanh_rule(grad_output[0], seen[module], method),)

    def keep(module, args, output):
        kept["out"] = output

    handles = [m.register_forward_pre_hook(remember) for m in squashes]
    handles += [m.register_full_backward_hook(rule) for m in squashes]
    handles.append(getattr(model, layer).register_forward_hook(keep))
    try:
        x = x.clone().requires_grad_(True)
        model(x)
        target = kept["out"][torch.arange(len(x)), channels, rows, cols]
        (grad,) = torch.autograd.grad(target.sum(), x)
    finally:
        for h in handles:
            h.remove()
    return grad


def window_sums(x):
    return x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]


def hand_reference(model, x, layer, channels, rows, cols, method):
    """The same projection with no autograd at all: the forward pass keeps each squashing
    input; the backward pass is written step by step from the projected layer down."""
    p = {name: param.detach() for name, param in model.named_parameters()}
    w2 = p["conv2.weight"] * PAPER_MASK
    a1 = F.conv2d(x, p["conv1.weight"], p["conv1.bias"])
    a2 = window_sums(f(a1)) * p["pool1.weight"].view(1, -1, 1, 1) + p["pool1.bias"].view(1, -1, 1, 1)
    a3 = F.conv2d(f(a2), w2, p["conv2.bias"])
    a4 = window_sums(f(a3)) * p["pool2.weight"].view(1, -1, 1, 1) + p["pool2.bias"].view(1, -1, 1, 1)

    def spread(g, coefficient):   # each input of a 2x2 window receives coefficient * g
        g = g * coefficient.view(1, -1, 1, 1)
        return g.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    steps = [  # (layer whose output the step starts from, backward step to the layer below)
        ("conv3", lambda g: tanh_rule(F.conv_transpose2d(g, p["conv3.weight"]), a4, method)),
        ("pool2", lambda g: tanh_rule(spread(g, p["pool2.weight"]), a3, method)),
        ("conv2", lambda g: tanh_rule(F.conv_transpose2d(g, w2), a2, method)),
        ("pool1", lambda g: tanh_rule(spread(g, p["pool1.weight"]), a1, method)),
        ("conv1", lambda g: F.conv_transpose2d(g, p["conv1.weight"])),
    ]
    g = torch.zeros(len(x), *LAYERS[layer], dtype=x.dtype)
    g[torch.arange(len(x)), channels, rows, cols] = 1.0
    start = [name for name, _ in steps].index(layer)
    for _, step in steps[start:]:
        g = step(g)
    return g


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_project_on_lenet5_equals_autograd_with_the_readme_tanh_rules_as_hooks(layer, method, net, images):
    ch, r, c = units(layer)
    ref = hooked_reference(net, images, layer, ch, r, c, method)
    assert ref.norm() > 0
    assert rel_err(project(net, layer, images, ch, r, c, method), ref) <= 1e-10


@pytest.mark.parametrize("method", METHODS)
def test_project_on_lenet5_equals_a_backward_pass_written_by_hand(method, net, images):
    for layer in LAYERS:
        ch, r, c = units(layer, seed=3)
        ref = hand_reference(net, images, layer, ch, r, c, method)
        assert ref.norm() > 0, layer
        assert rel_err(project(net, layer, images, ch, r, c, method), ref) <= 1e-10, layer


def test_the_three_methods_differ_on_this_net_so_the_comparisons_mean_something(net, images):
    for layer in ("pool1", "conv2", "conv3"):
        ch, r, c = units(layer)
        got = {m: hand_reference(net, images, layer, ch, r, c, m) for m in METHODS}
        assert rel_err(got["deconvnet"], got["gradient"]) > 0.1, layer
        assert rel_err(got["guided_backprop"], got["gradient"]) > 0.05, layer
        assert rel_err(got["guided_backprop"], got["deconvnet"]) > 0.1, layer


@pytest.mark.parametrize("method", METHODS)
def test_a_conv1_unit_projects_to_its_filter_at_its_receptive_field(method, net, images):
    # Nothing nonlinear lies below C1: every method gives the 5x5 filter at rows i..i+4,
    # cols j..j+4 of the input (the unit's receptive field), zero elsewhere.
    ch = torch.tensor([0, 1, 2, 3, 4, 5])
    r = torch.tensor([0, 27, 0, 27, 13, 4])
    c = torch.tensor([0, 27, 27, 0, 6, 20])
    got = project(net, "conv1", images, ch, r, c, method)
    expected = torch.zeros_like(images)
    for b in range(len(images)):
        i, j = int(r[b]), int(c[b])
        expected[b, 0, i:i + 5, j:j + 5] = net.conv1.weight[ch[b], 0].detach()
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)


def test_deconvnet_of_an_s2_unit_is_four_copies_of_the_filter_scaled_by_the_rectified_coefficient(net, images):
    # Backward from S2 unit (k, i, j): the coefficient w_k to each of its four C1 inputs, then
    # the tanh rule relu(w_k) * A S, then the filter at each of the four C1 positions.
    coefficient = net.pool1.weight.detach()
    positive = [k for k in range(6) if coefficient[k] > 0]
    negative = [k for k in range(6) if coefficient[k] < 0]
    assert positive and negative
    ch = torch.tensor([positive[0], positive[-1], negative[0], positive[0], negative[-1], positive[-1]])
    r = torch.tensor([0, 13, 5, 7, 0, 13])
    c = torch.tensor([0, 13, 9, 2, 13, 0])
    got = project(net, "pool1", images, ch, r, c, "deconvnet")
    expected = torch.zeros_like(images)
    for b in range(len(images)):
        k, i, j = int(ch[b]), int(r[b]), int(c[b])
        scale = A * S * max(coefficient[k].item(), 0.0)
        for di in (0, 1):
            for dj in (0, 1):
                top, left = 2 * i + di, 2 * j + dj
                expected[b, 0, top:top + 5, left:left + 5] += scale * net.conv1.weight[k, 0].detach()
    assert expected[ch == negative[0]].abs().sum() == 0 and expected.abs().sum() > 0
    assert torch.allclose(got, expected, rtol=0, atol=1e-13)


def test_deconvnet_on_lenet5_does_not_depend_on_the_input(net, images):
    # Average-like pooling has no switches and the tanh rule ignores its input, so the same
    # unit projects to the same picture for any image; guided backprop does depend on it.
    digit = torch.full((6, 1, 32, 32), -0.1, dtype=torch.float64)   # the paper's levels
    digit[:, 0, 8:24, 14:18] = 1.175                                 # a vertical stroke
    for layer in LAYERS:
        ch, r, c = units(layer, seed=4)
        on_noise = project(net, layer, images, ch, r, c, "deconvnet")
        on_digit = project(net, layer, digit, ch, r, c, "deconvnet")
        assert on_noise.abs().sum() > 0, layer
        assert torch.equal(on_noise, on_digit), layer
        if layer != "conv1":
            guided = [project(net, layer, x, ch, r, c, "guided_backprop") for x in (images, digit)]
            assert rel_err(guided[0], guided[1]) > 0.01, layer
