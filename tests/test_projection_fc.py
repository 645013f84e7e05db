"""Projections and Grad-CAM of units without positions (a Linear layer's (B, C) output, the
model's class scores): against Captum, on a small conv net with an FC head and on torchvision's
VGG-16 head (fc6, fc7, scores); against a conv+FC net differentiated by hand; the errors; and
the model left as found."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    LayerAttribution,
    LayerGradCam,
    NeuronDeconvolution,
    NeuronGradient,
    NeuronGuidedBackprop,
    Saliency,
)
from oracles import out_of_place, rel_err
from torch import nn

from cnn_internals.engine.projection import METHODS, class_saliency, grad_cam, project, unit_grad_cam

NEURON = {"gradient": NeuronGradient, "deconvnet": NeuronDeconvolution, "guided_backprop": NeuronGuidedBackprop}


def captum_units(method, model, layer_module, images, units):
    """Captum's neuron attribution of unit units[b] of ``layer_module``'s (B, C) output for
    images[b]. Its neuron_selector is one unit for the whole batch: one call per distinct unit."""
    units = torch.as_tensor(units)
    out = torch.empty_like(images)
    for unit in units.unique():
        rows = units == unit
        out[rows] = NEURON[method](model, layer_module).attribute(images[rows], neuron_selector=int(unit))
    return out


def captum_classes(method, model, images, classes):
    """Captum's attribution of the score of class classes[b] (the model's output) for images[b]."""
    classes = torch.as_tensor(classes)
    if method == "gradient":
        return Saliency(model).attribute(images, target=classes, abs=False)
    return {"deconvnet": Deconvolution, "guided_backprop": GuidedBackprop}[method](model).attribute(images, target=classes)


def assert_rules_differ(results):
    """The three rules give different maps here, so agreeing with the oracle means something."""
    assert rel_err(results["deconvnet"], results["gradient"]) > 0.01
    assert rel_err(results["guided_backprop"], results["gradient"]) > 0.01
    assert rel_err(results["guided_backprop"], results["deconvnet"]) > 0.01


# --- a small ReLU conv net with a two-Linear head --------------------------------------------

def fc_net(seed=0):
    """3x16x16 -> conv 3x3 pad 1 -> ReLU (in place) -> 2x2 pool -> conv 3x3 -> ReLU -> 2x2 pool
    -> flatten (8x3x3) -> fc1 (72 -> 10) -> ReLU (in place) -> fc2 (10 -> 4), float64."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("relu1", nn.ReLU(inplace=True))
    net.add_module("pool1", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(6, 8, 3))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool2", nn.MaxPool2d(2))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc1", nn.Linear(72, 10))
    net.add_module("relu3", nn.ReLU(inplace=True))
    net.add_module("fc2", nn.Linear(10, 4))
    return net.double().eval()


def upto(net, name):
    """The Sequential ``net`` up to and including module ``name``."""
    return net[:list(net._modules).index(name) + 1]


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def assert_matches_captum(net, layer, images, units):
    """Every method's projection of units[b] of module ``layer`` (None: the classes) for
    images[b] equals Captum's on the same net with out-of-place ReLUs, and the rules differ."""
    results = {}
    for method in METHODS:
        ours = project(net, layer, images, units, method=method)
        with out_of_place(net) as oracle:
            if layer is None:
                ref = captum_classes(method, oracle, images, units)
            else:
                ref = captum_units(method, oracle, oracle.get_submodule(layer), images, units)
        assert ref.norm() > 0, method
        assert rel_err(ours, ref) <= 1e-5, method
        results[method] = ours
    assert_rules_differ(results)


# One unit per image row, some shared (Captum compares them in groups), some alone.
UNITS = {"fc1": [3, 0, 3, 7, 0, 3], "fc2": [1, 1, 0, 3, 2, 1], None: [2, 0, 2, 1, 3, 0]}


@pytest.mark.parametrize("layer", ["fc1", "fc2", None])
def test_fc_units_of_a_small_relu_net_match_captum(layer, images):
    net = fc_net()
    assert_matches_captum(net, layer, images, UNITS[layer])
    assert net.relu1.inplace and net.relu3.inplace


def test_class_scores_are_the_last_linear_layers_units(images):
    net = fc_net()
    for method in METHODS:
        assert torch.equal(project(net, None, images, UNITS[None], method=method),
                           project(net, "fc2", images, UNITS[None], method=method)), method


@pytest.mark.parametrize("layer", ["fc1", "fc2", None])
def test_chunks_do_not_change_fc_projections(layer, images):
    net = fc_net()
    whole = project(net, layer, images, UNITS[layer], method="guided_backprop", chunk=len(images))
    for chunk in (1, 4):   # 4: a short last chunk, whose rows take the last units
        part = project(net, layer, images, UNITS[layer], method="guided_backprop", chunk=chunk)
        torch.testing.assert_close(part, whole, rtol=1e-12, atol=0)


def test_class_saliency_of_the_small_net_matches_captum_saliency(images):
    net = fc_net()
    classes = UNITS[None]
    with out_of_place(net) as oracle:
        ref = Saliency(oracle).attribute(images, target=torch.tensor(classes), abs=True).amax(dim=1)
    ours = class_saliency(net, images, classes)
    assert ours.shape == (len(images), 16, 16) and ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5


@pytest.mark.parametrize("layer,cam_layer", [("fc1", "conv2"), ("fc2", "conv1"), ("fc2", "relu1"), ("fc1", "pool2")])
def test_unit_grad_cam_of_a_small_net_fc_unit_matches_captum(layer, cam_layer, images):
    net = fc_net()
    units = torch.tensor(UNITS[layer])
    with out_of_place(net) as oracle:
        head = upto(oracle, layer)   # the FC layer's output as the model's "scores": target = the unit
        ref = LayerGradCam(head, getattr(oracle, cam_layer)).attribute(images, target=units, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (16, 16), "bilinear").squeeze(1)
    ours = unit_grad_cam(net, layer, images, units, cam_layer=cam_layer)
    assert ours.shape == (len(images), 16, 16) and ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5


@pytest.mark.parametrize("cam_layer", ["conv1", "conv2"])
def test_unit_grad_cam_of_a_class_score_is_grad_cam(cam_layer, images):
    net = fc_net()
    classes = torch.tensor(UNITS[None])
    ours = unit_grad_cam(net, None, images, classes, cam_layer=cam_layer)
    with out_of_place(net) as oracle:
        ref = LayerGradCam(oracle, getattr(oracle, cam_layer)).attribute(images, target=classes, relu_attributions=True)
    ref = F.interpolate(ref, size=(16, 16), mode="bilinear", align_corners=False).squeeze(1)
    assert ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5
    assert torch.equal(ours, grad_cam(net, cam_layer, images, classes))


# --- torchvision's VGG-16 head ------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg():
    from torchvision.models import vgg16

    torch.manual_seed(0)
    net = vgg16(weights=None).double().eval()   # its ReLUs are in place
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    return net


@pytest.fixture(scope="module")
def vgg_images():
    # 64x64: the features end at 512x2x2 and the adaptive pool makes the 7x7 fc6 expects.
    return torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


VGG_UNITS = {"classifier.0": [17, 4000], "classifier.3": [5, 2222], None: [3, 999]}


def vgg_head(net, layer):
    """VGG-16 up to and including module ``layer`` of its classifier."""
    index = int(layer.split(".")[1])
    return lambda x: net.classifier[:index + 1](torch.flatten(net.avgpool(net.features(x)), 1))


@pytest.mark.parametrize("layer", ["classifier.0", "classifier.3", None])
def test_vgg16_fc6_fc7_and_scores_match_captum(layer, vgg, vgg_images):
    assert_matches_captum(vgg, layer, vgg_images, VGG_UNITS[layer])


def test_class_saliency_of_vgg16_matches_captum_saliency(vgg, vgg_images):
    classes = VGG_UNITS[None]
    with out_of_place(vgg) as oracle:
        ref = Saliency(oracle).attribute(vgg_images, target=torch.tensor(classes), abs=True).amax(dim=1)
    ours = class_saliency(vgg, vgg_images, classes)
    assert ours.shape == (2, 64, 64) and ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-5


def test_vgg16_fc7_unit_and_class_grad_cam_at_conv5_3_match_captum(vgg, vgg_images):
    units, classes = torch.tensor(VGG_UNITS["classifier.3"]), torch.tensor(VGG_UNITS[None])
    ours_unit = unit_grad_cam(vgg, "classifier.3", vgg_images, units, cam_layer="features.28")
    ours_class = unit_grad_cam(vgg, None, vgg_images, classes, cam_layer="features.28")
    with out_of_place(vgg) as oracle:
        conv5_3 = oracle.features[28]
        head = vgg_head(oracle, "classifier.3")   # fc7's output as the "scores": target = the unit
        ref_unit = LayerGradCam(head, conv5_3).attribute(vgg_images, target=units, relu_attributions=True)
        ref_class = LayerGradCam(oracle, conv5_3).attribute(vgg_images, target=classes, relu_attributions=True)
    for ours, ref in ((ours_unit, ref_unit), (ours_class, ref_class)):
        ref = LayerAttribution.interpolate(ref, (64, 64), "bilinear").squeeze(1)
        assert ours.shape == (2, 64, 64) and ref.norm() > 0
        assert rel_err(ours, ref) <= 1e-5
    assert torch.equal(ours_class, grad_cam(vgg, "features.28", vgg_images, classes))


# --- a conv+FC net differentiated by hand ---------------------------------------------------------

# 1x5x5 -> conv 2x2 (2 maps, 4x4) -> ReLU -> 2x2/2 max-pool (2x2x2) -> flatten (8) -> fc1 (8 -> 4)
# -> ReLU -> fc2 (4 -> 2). Flatten order: feature c*4 + a*2 + b is map c, pooled row a, column b.
CONV_W = np.array([[[1.0, -1.0], [0.5, 2.0]],
                   [[-1.0, 2.0], [1.0, -0.5]]])
CONV_B = np.array([0.25, -0.5])
FC1_W = np.array([[1.0, -2.0, 0.0, 1.0, 2.0, -1.0, 1.0, 0.0],
                  [-1.0, 1.0, 2.0, 0.0, -1.0, 1.0, 0.0, 2.0],
                  [2.0, 0.0, -1.0, 1.0, 1.0, 0.0, -2.0, 1.0],
                  [0.0, 1.0, 1.0, -2.0, 0.0, 2.0, 1.0, -1.0]])
FC1_B = np.array([0.5, -1.0, 0.0, 1.0])
FC2_W = np.array([[1.0, -2.0, 3.0, -1.0],
                  [-2.0, 1.0, 1.0, 2.0]])
FC2_B = np.array([0.1, -0.2])
# Conv outputs are never zero and each pool window has one clear largest value, except the
# window (map 1, row 0, col 1), whose conv outputs are all negative (-2, -7, -6.5, -2.5): ReLU
# makes it four tied zeros. fc1's pre-activations are [13.5, 25, -0.5, 4.5] (one negative).
HAND_X = np.array([[1.0, 1.0, 3.0, 0.0, -3.0],
                   [-2.0, -2.0, 1.0, -1.0, -1.0],
                   [-3.0, 1.0, -3.0, 0.0, 2.0],
                   [0.0, 1.0, 2.0, -2.0, -3.0],
                   [-3.0, 1.0, -2.0, -2.0, 2.0]])


def hand_net():
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(1, 2, 2))
    net.add_module("relu1", nn.ReLU(inplace=True))
    net.add_module("pool", nn.MaxPool2d(2, 2))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc1", nn.Linear(8, 4))
    net.add_module("relu2", nn.ReLU(inplace=True))
    net.add_module("fc2", nn.Linear(4, 2))
    net = net.double()
    with torch.no_grad():
        for module, w, b in ((net.conv, CONV_W[:, None], CONV_B), (net.fc1, FC1_W, FC1_B), (net.fc2, FC2_W, FC2_B)):
            module.weight.copy_(torch.from_numpy(w))
            module.bias.copy_(torch.from_numpy(b))
    return net


def hand_forward(x):
    """(conv output z, pool switches {(c, a, b): (row, col)}, fc1 output h, scores y)."""
    z = np.zeros((2, 4, 4))
    for c in range(2):
        for i in range(4):
            for j in range(4):
                z[c, i, j] = CONV_B[c] + sum(CONV_W[c, p, q] * x[i + p, j + q] for p in range(2) for q in range(2))
    r = np.maximum(z, 0)
    pooled, switches = np.zeros(8), {}
    for c in range(2):
        for a in range(2):
            for b in range(2):
                window = r[c, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
                k = int(np.argmax(window))   # the first of tied maxima, row by row
                switches[c, a, b] = (2 * a + k // 2, 2 * b + k % 2)
                pooled[c * 4 + a * 2 + b] = window.max()
    h = FC1_W @ pooled + FC1_B
    y = FC2_W @ np.maximum(h, 0) + FC2_B
    return z, switches, h, y


def relu_rule(g, x, method):
    """Backward through a ReLU with input x: the incoming gradient g under ``method``."""
    if method == "gradient":
        return g * (x > 0)
    if method == "deconvnet":
        return np.maximum(g, 0)
    return np.maximum(g, 0) * (x > 0)


def hand_projection(x, layer, unit, method):
    z, switches, h, _ = hand_forward(x)
    if layer == "fc1":
        g_pooled = FC1_W[unit].copy()                   # d h[unit] / d pooled = row of W1
    else:                                               # fc2 or the scores
        g_h = relu_rule(FC2_W[unit], h, method)         # d y[unit] / d relu(h) = row of W2; then the ReLU
        g_pooled = FC1_W.T @ g_h                        # back through fc1: W1^T g
    g_r = np.zeros((2, 4, 4))
    for (c, a, b), (row, col) in switches.items():      # each pooled unit's gradient goes to its argmax
        g_r[c, row, col] += g_pooled[c * 4 + a * 2 + b]
    g_z = relu_rule(g_r, z, method)
    g_x = np.zeros((5, 5))
    for c in range(2):                                  # the conv transposed with the same weights
        for i in range(4):
            for j in range(4):
                for p in range(2):
                    for q in range(2):
                        g_x[i + p, j + q] += CONV_W[c, p, q] * g_z[c, i, j]
    return g_x


def test_hand_net_is_what_the_hand_computation_says():
    net = hand_net()
    x = torch.from_numpy(HAND_X)[None, None]
    z, switches, h, y = hand_forward(HAND_X)
    with torch.no_grad():
        np.testing.assert_allclose(net(x)[0].numpy(), y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(net.fc1(net.flatten(net.pool(net.relu1(net.conv(x)))))[0].numpy(), h, rtol=0, atol=1e-12)
        # Where ReLU leaves four tied zeros, PyTorch's max-pool switch is the first (as np.argmax):
        # the deconvnet's route through the dead window depends on it.
        _, index = F.max_pool2d(F.relu(net.conv(x)), 2, 2, return_indices=True)
    assert z[1, 0:2, 2:4].max() < 0 and switches[1, 0, 1] == (0, 2)
    for (c, a, b), (row, col) in switches.items():
        assert index[0, c, a, b].item() == row * 4 + col
    assert (h < 0).any() and (h > 0).any()


@pytest.mark.parametrize("layer,unit", [("fc1", 0), ("fc1", 1), ("fc1", 2), ("fc1", 3),
                                        ("fc2", 0), ("fc2", 1), (None, 0), (None, 1)])
@pytest.mark.parametrize("method", METHODS)
def test_fc_projections_equal_the_hand_derivation(layer, unit, method):
    got = project(hand_net(), layer, torch.from_numpy(HAND_X)[None, None], [unit], method=method)
    np.testing.assert_allclose(got[0, 0].numpy(), hand_projection(HAND_X, layer, unit, method), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer,unit", [("fc1", 1), ("fc2", 0)])
def test_the_hand_example_separates_the_three_rules(layer, unit):
    # fc2 unit 0: deconvnet passes relu(3) back through h[2] = -0.5, which guided and gradient
    # mask; fc1 unit 1: deconvnet sends relu(1) into the dead window that the others mask; both:
    # guided and deconvnet drop negative signals that the gradient keeps.
    maps = {m: hand_projection(HAND_X, layer, unit, m) for m in METHODS}
    assert np.abs(maps["deconvnet"] - maps["guided_backprop"]).max() >= 0.5
    assert np.abs(maps["guided_backprop"] - maps["gradient"]).max() >= 0.5
    assert np.abs(maps["deconvnet"] - maps["gradient"]).max() >= 0.5


def test_hand_projection_is_the_true_gradient_for_method_gradient():
    # The hand backward under "gradient" is autograd's input gradient (checks the hand code).
    x = torch.from_numpy(HAND_X)[None, None].requires_grad_(True)
    net = hand_net()
    for unit in range(2):
        (grad,) = torch.autograd.grad(net(x)[0, unit], x)
        np.testing.assert_allclose(hand_projection(HAND_X, "fc2", unit, "gradient"), grad[0, 0].numpy(), rtol=0, atol=1e-12)


# --- errors ------------------------------------------------------------------------------------

def test_units_without_positions_reject_positions_and_vice_versa(images):
    net = fc_net()
    units, rows, cols = [0] * len(images), [0] * len(images), [0] * len(images)
    with pytest.raises(ValueError, match=r"units \(10,\) without positions: rows and cols must be None"):
        project(net, "fc1", images, units, rows, cols)
    with pytest.raises(ValueError, match=r"units \(4,\) without positions"):
        project(net, None, images, units, rows, cols, method="guided_backprop")
    with pytest.raises(ValueError, match=r"outputs maps \(8, 6, 6\): give each unit's rows and cols"):
        project(net, "conv2", images, units)
    with pytest.raises(ValueError, match="rows and cols go together"):
        project(net, "fc1", images, units, rows=rows)
    with pytest.raises(ValueError, match="rows and cols go together"):
        project(net, "conv2", images, units, cols=cols)
    with pytest.raises(ValueError, match="images and channels must have the same length"):
        project(net, "fc1", images, units[:-1])
    with pytest.raises(ValueError, match=r"units \(10,\) without positions"):
        unit_grad_cam(net, "fc1", images, units, rows, cols, cam_layer="conv2")


@pytest.mark.parametrize("layer", ["fc1", None])
def test_unit_grad_cam_of_a_unit_without_positions_needs_a_cam_layer(layer, images):
    with pytest.raises(ValueError, match="no map of its own: name the cam_layer"):
        unit_grad_cam(fc_net(), layer, images, [0] * len(images))


# --- the model as found --------------------------------------------------------------------------

def test_fc_projection_leaves_the_model_as_it_found_it(images):
    net = fc_net()
    net.train()
    net.pool1.eval()
    own_forward = lambda x: torch.relu(x)   # an instance forward of the model's own, to be kept
    net.relu2.forward = own_forward
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.eval()
        out_before = net(images)
        net.train()
        net.pool1.eval()
    units = UNITS["fc1"]

    project(net, "fc1", images, units, method="guided_backprop")
    project(net, "fc2", images, UNITS["fc2"], method="guided_backprop", chunk=4)
    project(net, None, images, UNITS[None], method="deconvnet")
    with pytest.raises(ValueError):   # raised inside the rules' context: restored all the same
        project(net, "fc1", images, units, units, units, method="guided_backprop")
    with pytest.raises(IndexError):   # unit 10 of 10
        project(net, "fc1", images, [10] * len(images), method="guided_backprop")

    assert net.training and not net.pool1.training and net.fc1.training and net.relu3.training
    assert net.relu1.inplace and net.relu3.inplace and not net.relu2.inplace
    assert net.relu2.__dict__["forward"] is own_forward
    for name, module in net.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks, name
        assert name == "relu2" or "forward" not in module.__dict__, name
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(images), out_before)
