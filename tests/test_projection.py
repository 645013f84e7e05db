"""The projection engine against Captum (an independent implementation), hand-worked
examples, and brute force."""

import math

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop
from oracles import rel_err
from torch import nn

from cnn_internals.engine.activations import A, S, ScaledTanh
from cnn_internals.engine.projection import crop_patches, grad_cam, guided_grad_cam, project, receptive_field, unit_grad_cam
from cnn_internals.models.alexnet import AlexNet
from cnn_internals.models.lenet5 import LeNet5

from nets import relu_net, resnet18_net, twin

CAPTUM = {"gradient": NeuronGradient, "deconvnet": NeuronDeconvolution,
          "guided_backprop": NeuronGuidedBackprop}


def units(n, channels, height, width, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(channels, (n,), generator=g), torch.randint(height, (n,), generator=g),
            torch.randint(width, (n,), generator=g))


@pytest.fixture(scope="module")
def batch():
    return torch.randn(20, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", sorted(CAPTUM))
@pytest.mark.parametrize("layer,shape", [("conv1", (8, 16, 16)), ("conv2", (12, 7, 7)), ("relu3", (16, 3, 3))])
def test_project_matches_captum_on_relu_net_with_inplace_relu_lrn_and_overlapping_pools(method, layer, shape, batch):
    net = relu_net(inplace=True)
    oracle = twin(net, inplace=False)   # Captum on ordinary ReLUs, ours on the in-place ones
    ch, r, c = units(len(batch), *shape)
    ref = CAPTUM[method](oracle, dict(oracle.named_modules())[layer]).attribute(
        batch, lambda out: out[torch.arange(len(batch)), ch, r, c])
    ours = project(net, layer, batch, ch, r, c, method)
    assert ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5


@pytest.fixture(scope="module")
def small_images():
    return torch.randn(4, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", sorted(CAPTUM))
def test_project_matches_captum_on_resnet18_whose_relu_modules_run_twice_per_block(method, small_images):
    net, oracle = resnet18_net(inplace=True), resnet18_net(inplace=False)
    ch, r, c = torch.tensor([0, 5, 17, 100]), torch.tensor([0, 3, 7, 4]), torch.tensor([7, 2, 0, 4])
    ref = CAPTUM[method](oracle, oracle.layer2[1].conv2).attribute(
        small_images, lambda out: out[torch.arange(len(small_images)), ch, r, c])
    ours = project(net, "layer2.1.conv2", small_images, ch, r, c, method)
    assert ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-10
    if method != "gradient":   # the rule changed the result, so both ReLU calls got it
        assert rel_err(ours, project(net, "layer2.1.conv2", small_images, ch, r, c, "gradient")) > 0.1


def test_grad_cam_at_a_resnet18_block_path_matches_captum(small_images):
    net, oracle = resnet18_net(inplace=True), resnet18_net(inplace=False)
    classes = torch.tensor([0, 3, 9, 3])
    ref = LayerGradCam(oracle, oracle.layer3[1].conv2).attribute(small_images, target=classes,
                                                                  relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (64, 64), "bilinear").squeeze(1)
    ours = grad_cam(net, "layer3.1.conv2", small_images, classes)
    assert ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-10


def test_methods_differ_so_the_comparison_means_something(batch):
    net = relu_net()
    ch, r, c = units(len(batch), 12, 7, 7)
    grads = {m: project(net, "conv2", batch, ch, r, c, m) for m in CAPTUM}
    assert rel_err(grads["deconvnet"], grads["gradient"]) > 0.1
    assert rel_err(grads["guided_backprop"], grads["gradient"]) > 0.01
    assert rel_err(grads["guided_backprop"], grads["deconvnet"]) > 0.01


def test_overlapping_max_pool_switches_sum_like_autograd():
    # Two windows of a 3x3/s2 pool share their argmax at the centre column: the backward must
    # send both units' gradient there (2), where max_unpool2d would overwrite (1).
    pool = nn.Sequential()
    pool.add_module("pool", nn.MaxPool2d((1, 3), stride=(1, 2)))
    pool.add_module("sum", nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        pool.sum.weight.fill_(1.0)
    x = torch.tensor([[[[0.0, 1.0, 5.0, 1.0, 0.0]]]]).repeat(2, 1, 1, 1)
    for method in CAPTUM:
        g = project(pool, "sum", x, [0, 0], [0, 0], [0, 1], method)
        assert g[0, 0, 0].tolist() == [0, 0, 1, 0, 0] and g[1, 0, 0].tolist() == [0, 0, 1, 0, 0]
    both = nn.Sequential(pool.pool)  # the pool's output summed over both windows
    x1 = x[:1].clone().requires_grad_(True)
    both(x1).sum().backward()
    assert x1.grad[0, 0, 0].tolist() == [0, 0, 2, 0, 0]


def test_gradient_on_lenet5_equals_captum_neuron_gradient():
    torch.manual_seed(0)
    net = LeNet5().double()
    x = torch.randn(12, 1, 32, 32, dtype=torch.float64)
    for layer, shape in [("conv1", (6, 28, 28)), ("conv2", (16, 10, 10)), ("conv3", (120, 1, 1))]:
        ch, r, c = units(len(x), *shape)
        ref = NeuronGradient(net, getattr(net, layer)).attribute(x, lambda out: out[torch.arange(len(x)), ch, r, c])
        assert rel_err(project(net, layer, x, ch, r, c, "gradient"), ref) <= 1e-5


def _f(a):
    return A * math.tanh(S * a)


def _df(a):
    return A * S * (1 - math.tanh(S * a) ** 2)


def test_scaled_tanh_rules_on_a_hand_worked_two_layer_net():
    # x -> [a1, a2] = [x + 0.5, -2x] -> f -> unit = 3 f(a1) - f(a2), at x = 0.3.
    net = nn.Sequential()
    net.add_module("c1", nn.Conv2d(1, 2, 1))
    net.add_module("t", ScaledTanh())
    net.add_module("c2", nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        net.c1.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        net.c1.bias.copy_(torch.tensor([0.5, 0.0]))
        net.c2.weight.copy_(torch.tensor([3.0, -1.0]).view(1, 2, 1, 1))
    net = net.double()
    x = torch.full((1, 1, 1, 1), 0.3, dtype=torch.float64)
    a1, a2 = 0.8, -0.6
    assert net(x).item() == pytest.approx(3 * _f(a1) - _f(a2))
    # Backward signal at the tanh outputs: g = [3, -1]; relu(g) = [3, 0].
    expected = {
        "gradient": 1 * 3 * _df(a1) + (-2) * (-1) * _df(a2),
        "deconvnet": 1 * 3 * A * S,          # relu(g) * f'(0), input-independent
        "guided_backprop": 1 * 3 * _df(a1),  # relu(g) * f'(x)
    }
    for method, value in expected.items():
        got = project(net, "c2", x, [0], [0], [0], method)
        assert got.item() == pytest.approx(value, rel=1e-12), method


def test_project_leaves_the_model_as_it_found_it(batch):
    net = relu_net()
    net.train()
    net.pool1.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ch, r, c = units(len(batch), 12, 7, 7)
    for method in CAPTUM:
        project(net, "conv2", batch, ch, r, c, method)
    unit_grad_cam(net, "conv2", batch, ch, r, c)
    grad_cam(net, "conv2", batch, [0] * len(batch))
    assert net.training and not net.pool1.training and net.relu2.training
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
        assert "forward" not in module.__dict__
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.relu2.inplace


def test_forward_stops_at_the_layer(batch):
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the layer")

    net = relu_net()
    net.conv3 = Boom()
    ch, r, c = units(len(batch), 12, 7, 7)
    assert project(net, "conv2", batch, ch, r, c, "guided_backprop").shape == batch.shape


def test_chunk_size_does_not_change_the_result(batch):
    net = relu_net()
    ch, r, c = units(len(batch), 12, 7, 7)
    whole = project(net, "conv2", batch, ch, r, c, "guided_backprop", chunk=len(batch))
    for chunk in (1, 3, 7):
        assert torch.equal(project(net, "conv2", batch, ch, r, c, "guided_backprop", chunk=chunk), whole)


def test_unknown_layer_and_method_are_rejected(batch):
    net = relu_net()
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        project(net, "conv9", batch[:1], [0], [0], [0])
    with pytest.raises(ValueError, match="unknown method"):
        project(net, "conv1", batch[:1], [0], [0], [0], "lrp")
    net.relu1 = nn.ELU()
    with pytest.raises(ValueError, match="no rule for ELU"):
        project(net, "conv2", batch[:1], [0], [0], [0], "deconvnet")


@pytest.mark.parametrize("layer", ["conv2", "relu2", "conv3"])
def test_grad_cam_matches_captum_layer_grad_cam(layer, batch):
    net = relu_net(inplace=True)
    oracle = twin(net, inplace=False)
    classes = torch.arange(len(batch)) % 5
    ref = LayerGradCam(oracle, getattr(oracle, layer)).attribute(batch, target=classes, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (32, 32), "bilinear").squeeze(1)
    ours = grad_cam(net, layer, batch, classes)
    assert ours.shape == (len(batch), 32, 32) and ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5


def test_guided_grad_cam_is_cam_times_guided_backprop_of_the_class(batch):
    net = relu_net()
    classes = torch.arange(len(batch)) % 5
    oracle = twin(net, inplace=False)
    ref_cam = LayerAttribution.interpolate(
        LayerGradCam(oracle, oracle.conv2).attribute(batch, target=classes, relu_attributions=True),
        (32, 32), "bilinear")
    from captum.attr import GuidedBackprop
    ref = GuidedBackprop(oracle).attribute(batch, target=classes) * ref_cam
    assert rel_err(guided_grad_cam(net, "conv2", batch, classes), ref) <= 1e-5


def test_unit_grad_cam_at_an_earlier_layer_matches_captum_with_a_unit_target(batch):
    net = relu_net()
    oracle = twin(net, inplace=False)
    ch, r, c = units(len(batch), 16, 3, 3)

    class Unit(nn.Module):  # the conv3 unit as the model's "class score"
        def forward(self, x):
            out = oracle[:8](x)
            return out[torch.arange(len(x)), ch, r, c].unsqueeze(1)

    ref = LayerGradCam(Unit(), oracle.conv2).attribute(batch, target=0, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (32, 32), "bilinear").squeeze(1)
    assert rel_err(unit_grad_cam(net, "conv3", batch, ch, r, c, cam_layer="conv2"), ref) <= 1e-5


def test_receptive_fields_reproduce_the_alexnet_and_lenet5_tables():
    alexnet = {"conv1": (11, 4, 2), "pool1": (19, 8, 2), "conv2": (51, 8, 18), "pool2": (67, 16, 18),
               "conv3": (99, 16, 34), "conv4": (131, 16, 50), "conv5": (163, 16, 66)}
    net = AlexNet()
    for layer, rf in alexnet.items():
        assert receptive_field(net, layer, (3, 224, 224)) == rf, layer
    lenet = {"conv1": (5, 1, 0), "pool1": (6, 2, 0), "conv2": (14, 2, 0), "pool2": (16, 4, 0), "conv3": (32, 4, 0)}
    for layer, rf in lenet.items():
        assert receptive_field(LeNet5(), layer, (1, 32, 32)) == rf, layer


def test_receptive_field_equals_the_support_of_a_linearised_input_gradient():
    # Random stack with padding and strides (k >= s, so the field has no holes); max pools swapped for avg pools and all
    # weights positive, so the input gradient of a unit is nonzero exactly where it looks.
    g = torch.Generator().manual_seed(3)
    for trial in range(4):
        net, channels = nn.Sequential(), 1
        for i in range(4):
            k = int(torch.randint(2, 6, (1,), generator=g))
            s = int(torch.randint(1, min(k, 3) + 1, (1,), generator=g))
            p = int(torch.randint(0, k // 2 + 1, (1,), generator=g))
            if i % 2:
                net.add_module(f"pool{i}", nn.AvgPool2d(k, s, p))
            else:
                net.add_module(f"conv{i}", nn.Conv2d(channels, 2, k, s, p, bias=False))
                channels = 2
            net.add_module(f"act{i}", nn.Identity())
        for conv in net:
            if isinstance(conv, nn.Conv2d):
                nn.init.uniform_(conv.weight, 0.5, 1.0)
        net = net.double()
        size, stride, padding = receptive_field(net, "act3", (1, 128, 128))
        out_h = net(torch.zeros(1, 1, 128, 128, dtype=torch.float64)).shape[-1]
        interior = 0
        for u in range(out_h):
            x = torch.ones(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
            net(x)[0, 0, u, u].backward()
            rows = x.grad[0, 0].abs().sum(1).nonzero().flatten()
            first, last = u * stride - padding, u * stride - padding + size - 1
            # Always inside the field; exactly the field where no layer's padding cuts it.
            assert first <= rows.min().item() and rows.max().item() <= last, (trial, u)
            if first >= 0 and last <= 127:
                interior += 1
                assert (rows.min().item(), rows.max().item(), len(rows)) == (first, last, size), (trial, u)
        assert interior > 0


def test_crop_patches_zero_pads_at_the_borders():
    img = torch.arange(2 * 1 * 6 * 6, dtype=torch.float64).view(2, 1, 6, 6) + 1
    patches = crop_patches(img, (4, 2, 1), torch.tensor([0, 2]), torch.tensor([1, 2]))
    assert patches.shape == (2, 1, 4, 4)
    # unit (0, 1) of image 0 sees rows -1..2, cols 1..4; row -1 is padding
    expected0 = torch.zeros(4, 4, dtype=torch.float64)
    expected0[1:, :] = img[0, 0, 0:3, 1:5]
    assert torch.equal(patches[0, 0], expected0)
    # unit (2, 2) of image 1 sees rows 3..6, cols 3..6; row/col 6 is padding
    expected1 = torch.zeros(4, 4, dtype=torch.float64)
    expected1[:3, :3] = img[1, 0, 3:6, 3:6]
    assert torch.equal(patches[1, 0], expected1)
