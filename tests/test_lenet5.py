"""LeNet-5 against the 1998 paper: shapes, the C3 table, the RBF layer, the loss, the init."""

import math

import pytest
import torch

from cnn_internals.models.lenet5 import C3_TABLE, LeNet5, RBFOutput, digit_prototypes, lenet5_loss, mnist_to_lenet_input


def test_layer_shapes_follow_the_paper():
    net = LeNet5()
    shapes = {}
    def record(name):
        def hook(module, args, output):
            shapes[name] = tuple(output.shape)
        return hook

    hooks = [getattr(net, n).register_forward_hook(record(n)) for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "f6", "rbf")]
    net(torch.zeros(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == {"conv1": (2, 6, 28, 28), "pool1": (2, 6, 14, 14), "conv2": (2, 16, 10, 10),
                      "pool2": (2, 16, 5, 5), "conv3": (2, 120, 1, 1), "f6": (2, 84), "rbf": (2, 10)}


def test_c3_reads_only_the_maps_of_table_one():
    net = LeNet5()
    assert int(net.conv2.mask.sum()) == 60          # the paper's 60 connections, not 96
    x = torch.zeros(1, 6, 14, 14, requires_grad=True)
    for out_map, in_maps in enumerate(C3_TABLE):
        (g,) = torch.autograd.grad(net.conv2(x)[0, out_map].sum(), x)
        reads = {i for i in range(6) if g[0, i].abs().sum() > 0}
        assert reads == set(in_maps), out_map
    assert int(LeNet5(c3_table=False).conv2.mask.sum()) == 96


def test_trainable_parameter_count_matches_the_paper():
    # Paper: C1 156, S2 12, C3 1516, S4 32, C5 48120, F6 10164 trainable parameters.
    net = LeNet5()
    c3 = int(net.conv2.mask.sum()) * 25 + 16
    counts = {"conv1": sum(p.numel() for p in net.conv1.parameters()),
              "pool1": sum(p.numel() for p in net.pool1.parameters()), "conv2": c3,
              "pool2": sum(p.numel() for p in net.pool2.parameters()),
              "conv3": sum(p.numel() for p in net.conv3.parameters()),
              "f6": sum(p.numel() for p in net.f6.parameters())}
    assert counts == {"conv1": 156, "pool1": 12, "conv2": 1516, "pool2": 32, "conv3": 48120, "f6": 10164}


def test_rbf_output_is_squared_distance_to_each_prototype():
    prototypes = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]])
    rbf = RBFOutput(prototypes)
    x = torch.tensor([[0.5, 0.0, 2.0]])
    # (0.5-1)^2 + (0+1)^2 + (2-1)^2 = 2.25 ; (0.5+1)^2 + 1 + 9 = 12.25
    assert rbf(x).tolist() == [[2.25, 12.25]]
    assert not list(rbf.parameters())                       # fixed, as in the paper
    assert len(list(RBFOutput(prototypes, learnable=True).parameters())) == 1


def test_prototypes_are_plus_minus_one_bitmaps_of_distinct_digits():
    p = digit_prototypes()
    assert p.shape == (10, 84) and set(p.unique().tolist()) == {-1.0, 1.0}
    distances = torch.cdist(p, p)
    assert distances[~torch.eye(10, dtype=bool)].min() > 0


def test_loss_matches_equation_nine_by_hand():
    penalties = [[1.0, 4.0, 9.0], [2.0, 0.5, 3.0]]
    targets = [0, 2]
    j = 5.0
    by_hand = []
    for y, d in zip(penalties, targets):
        by_hand.append(y[d] + math.log(math.exp(-j) + sum(math.exp(-v) for v in y)))
    scores = -torch.tensor(penalties, dtype=torch.float64)
    got = lenet5_loss(scores, torch.tensor(targets), j)
    assert got.item() == pytest.approx(sum(by_hand) / 2, rel=1e-12)


def test_init_is_uniform_within_2_4_over_fan_in():
    torch.manual_seed(0)
    net = LeNet5()
    fan_ins = {"conv1": 25, "conv3": 16 * 25, "f6": 120}
    for name, fan_in in fan_ins.items():
        w = getattr(net, name).weight
        bound = 2.4 / fan_in
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound, name
        assert getattr(net, name).bias.abs().max() == 0
    # C3 units read 3, 4 or 6 maps: each row has its own bound 2.4 / (25 * maps).
    w = net.conv2.weight * net.conv2.mask
    for out_map, in_maps in enumerate(C3_TABLE):
        bound = 2.4 / (25 * len(in_maps))
        assert w[out_map].abs().max() <= bound and w[out_map].abs().max() > 0.8 * bound
    assert net.pool1.weight.abs().max() <= 2.4 / 4


def test_inputs_are_padded_to_32_with_the_papers_levels():
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 10, 10] = 255
    x = mnist_to_lenet_input(images.numpy())
    assert x.shape == (1, 1, 32, 32)
    assert x[0, 0, 12, 12].item() == pytest.approx(1.175)
    assert x[0, 0, 0, 0].item() == pytest.approx(-0.1) and x[0, 0, 13, 13].item() == pytest.approx(-0.1)
