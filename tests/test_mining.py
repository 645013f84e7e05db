"""Streaming top-k against a brute-force search over every activation."""

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
    with pytest.raises(ValueError, match="not \\(B, C, H, W\\)"):
        top_k_activations(net, ["fc"], [make_data()], 1)
