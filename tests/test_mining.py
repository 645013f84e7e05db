"""Streaming top-k against a brute-force search over every activation."""

import copy

import pytest
import torch
from torch import nn

from cnn_internals.engine.mining import top_k_activations

from nets import relu_net, resnet18_net


def brute_force(acts, k):
    """acts: (N, C, H, W), all of them. Python sorting by (-value, image)."""
    n, c, h, w = acts.shape
    flat = acts.flatten(2)
    expected = []
    for ch in range(c):
        entries = []
        for img in range(n):
            values = flat[img, ch].tolist()
            best = max(values)
            pos = values.index(best)          # first in row-major order
            entries.append((-best, img, pos // w, pos % w))
        entries.sort()
        expected.append(entries[:k])
    return expected


def all_outputs(net, layer, images):
    out = {}

    def keep(module, args, output):
        out["x"] = output.clone()

    handle = dict(net.named_modules())[layer].register_forward_hook(keep)
    with torch.no_grad():
        net.eval()(images)
    handle.remove()
    return out["x"]


def make_data(n=45, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Coarse values make equal activations inside a map; repeated images tie across images.
    x = torch.randint(-2, 3, (n, 3, 32, 32), generator=g).double()
    x[10] = x[3]
    x[30] = x[3]
    x[20] = x[7]
    return x


@pytest.mark.parametrize("k", [1, 4, 9])
def test_top_k_equals_brute_force_with_ties_and_a_dead_channel(k):
    net = relu_net(inplace=True)
    with torch.no_grad():
        net.conv2.weight[5].zero_()        # channel 5 of conv2 is dead: every value is 0
        net.conv2.bias[5] = 0.0
    x = make_data()
    layers = ["conv1", "conv2", "relu2", "conv3"]
    got = top_k_activations(net, layers, torch.split(x, 7), k)   # uneven batches
    reference = relu_net(inplace=False)
    reference.load_state_dict(net.state_dict())
    for layer in layers:
        expected = brute_force(all_outputs(reference, layer, x), k)
        top = got[layer]
        assert top.values.shape == (len(expected), k)
        for ch, entries in enumerate(expected):
            assert top.values[ch].tolist() == [-e[0] for e in entries], (layer, ch)
            assert top.images[ch].tolist() == [e[1] for e in entries], (layer, ch)
            assert top.rows[ch].tolist() == [e[2] for e in entries], (layer, ch)
            assert top.cols[ch].tolist() == [e[3] for e in entries], (layer, ch)
    dead = got["conv2"]
    assert dead.values[5].tolist() == [0.0] * k and dead.images[5].tolist() == list(range(k))
    assert dead.rows[5].tolist() == [0] * k and dead.cols[5].tolist() == [0] * k


def test_top_k_at_a_resnet18_block_path_equals_brute_force():
    x = torch.randn(10, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = resnet18_net()
    top = top_k_activations(net, ["layer3.1.conv2"], torch.split(x, 3), 4)["layer3.1.conv2"]
    expected = brute_force(all_outputs(resnet18_net(inplace=False), "layer3.1.conv2", x), 4)
    assert top.values.shape == (256, 4)
    for ch, entries in enumerate(expected):
        assert top.values[ch].tolist() == [-e[0] for e in entries], ch
        assert top.images[ch].tolist() == [e[1] for e in entries], ch
        assert top.rows[ch].tolist() == [e[2] for e in entries], ch
        assert top.cols[ch].tolist() == [e[3] for e in entries], ch


def test_conv_values_are_read_before_the_inplace_relu_changes_them():
    net = relu_net(inplace=True)
    with torch.no_grad():
        net.conv1.bias[2] = -100.0         # every value of channel 2 is negative before relu1
    top = top_k_activations(net, ["conv1"], [make_data()], 3)
    values = top["conv1"].values[2]
    assert (values < -90).all()             # a read after the in-place ReLU would give zeros


def test_batching_does_not_change_the_result():
    net = relu_net()
    x = make_data()
    one = top_k_activations(net, ["conv2", "conv3"], [x], 5)
    many = top_k_activations(net, ["conv2", "conv3"], torch.split(x, 1), 5)
    for layer in one:
        for field in ("values", "images", "rows", "cols"):
            assert torch.equal(getattr(one[layer], field), getattr(many[layer], field))


def test_forward_stops_after_the_deepest_mined_layer():
    net = relu_net()

    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the deepest mined layer")

    net.fc = Boom()
    net.relu3 = Boom()
    top_k_activations(net, ["conv1", "conv3"], [make_data()], 3)


def test_bad_arguments():
    net = relu_net()
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_activations(net, ["conv1"], [make_data()], 0)
    with pytest.raises(ValueError, match="unknown layer"):
        top_k_activations(net, ["conv7"], [make_data()], 1)
    odd = nn.Sequential(net, nn.Unflatten(1, (5, 1)))          # a (B, 5, 1) output: neither maps nor units
    with pytest.raises(ValueError, match=r"outputs \(45, 5, 1\), not maps \(B, C, H, W\) or units \(B, C\)"):
        top_k_activations(odd, ["1"], [make_data()], 1)
    with pytest.raises(ValueError, match="may not be named 'classes'"):
        top_k_activations(net, {"classes": "conv1"}, [make_data()], 1, classes=True)


# ---------------------------------------------------------------- fully connected units and classes

def fc_net(seed=0):
    """A conv net with a fully connected head: fc1 (followed by an in-place ReLU, as in AlexNet
    and VGG-16), fc2, and the class scores."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(inplace=True), nn.Flatten(),
                         nn.Linear(4 * 7 * 7, 12), nn.ReLU(inplace=True), nn.Linear(12, 6),
                         nn.Linear(6, 4)).double()


def brute_force_units(values, k):
    """values (N, C): for each unit, the k (value, image) best, sorted by (-value, image)."""
    return [sorted((-values[i, c].item(), i) for i in range(len(values)))[:k] for c in range(values.shape[1])]


@pytest.mark.parametrize("k", [1, 5])
def test_fully_connected_units_and_classes_equal_brute_force_with_ties_and_a_dead_unit(k):
    net = fc_net()
    with torch.no_grad():
        net[3].weight[7].zero_()          # unit 7 of fc1 is dead: 0 for every image
        net[3].bias[7] = 0.0
    x = make_data()
    got = top_k_activations(net, {"fc1": "3", "fc2": "5"}, torch.split(x, 7), k, classes=True)
    assert list(got) == ["fc1", "fc2", "classes"]
    reference = copy.deepcopy(net)
    reference[4].inplace = False
    with torch.no_grad():            # batch by batch as mined, so every value is the same float
        hidden = torch.cat([reference[3](reference[2](reference[1](reference[0](b)))) for b in torch.split(x, 7)])
        fc2 = torch.cat([reference[5](reference[4](h)) for h in torch.split(hidden, 7)])  # fc1 above: before its ReLU
        scores = torch.cat([reference(b) for b in torch.split(x, 7)])
    for name, values in (("fc1", hidden), ("fc2", fc2), ("classes", scores)):
        top = got[name]
        assert top.rows is None and top.cols is None and top.values.shape == (values.shape[1], k)
        for unit, entries in enumerate(brute_force_units(values, k)):
            assert top.values[unit].tolist() == [-v for v, _ in entries], (name, unit)
            assert top.images[unit].tolist() == [i for _, i in entries], (name, unit)
    assert got["fc1"].values[7].tolist() == [0.0] * k and got["fc1"].images[7].tolist() == list(range(k))
    # images 3, 10 and 30 are the same: a unit whose best is image 3 has 10 and 30 next, in that order
    best3 = [u for u in range(12) if got["fc1"].images[u, 0] == 3 and u != 7]
    assert k == 1 or all(got["fc1"].images[u, 1:3].tolist() == [10, 30] for u in best3)


def test_fully_connected_values_are_read_before_the_inplace_relu_changes_them():
    net = fc_net()
    with torch.no_grad():
        net[3].bias[2] = -100.0            # every value of fc1's unit 2 is negative before its ReLU
    top = top_k_activations(net, {"fc1": "3"}, [make_data()], 3)["fc1"]
    assert (top.values[2] < -90).all()      # a read after the in-place ReLU would give zeros


def test_classes_of_lenet5_are_its_negated_rbf_distances_computed_by_hand():
    """LeNet-5's forward returns the negated RBF penalties: sum over F6's 84 outputs of
    (x_j - w_ij)^2 for class i (eq. 7 of LeCun et al. 1998), so a class's top image is the one
    nearest its prototype."""
    from cnn_internals.models import NETS

    torch.manual_seed(0)
    model = NETS["lenet5"].build({}).eval()
    x = torch.rand(20, 1, 32, 32)
    got = top_k_activations(model, {"conv3": "conv3"}, torch.split(x, 6), 3, classes=True)["classes"]
    kept = {}
    handle = model.tanh6.register_forward_hook(lambda module, args, out: kept.update(f6=out))
    with torch.no_grad():
        model(x)
        handle.remove()
        prototypes = model.rbf.prototypes                                     # (10, 84): the -1/+1 bitmaps
        distances = ((kept["f6"][:, None, :] - prototypes[None]) ** 2).sum(-1)  # (N, 10), eq. 7 by hand
    for c, entries in enumerate(brute_force_units(-distances.double(), 3)):
        assert got.images[c].tolist() == [i for _, i in entries]
        torch.testing.assert_close(got.values[c].double(), torch.tensor([-v for v, _ in entries], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-5)


def test_mining_the_classes_runs_the_same_one_forward_per_batch():
    net = fc_net()
    calls = []
    net[0].register_forward_hook(lambda *a: calls.append(1))
    batches = torch.split(make_data(), 9)
    top_k_activations(net, {"conv": "0", "fc1": "3"}, batches, 2, classes=True)
    assert len(calls) == len(batches)
