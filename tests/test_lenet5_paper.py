"""LeNet-5 against LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
document recognition", with every figure taken from the paper and written out here: Table I,
the trainable parameters and connections of each layer, the squashing function, the
subsampling layers, and a forward pass rebuilt from those facts alone."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnn_internals.engine.activations import ScaledTanh, ScaledTanhFunction
from cnn_internals.models.lenet5 import LeNet5

# Table I of the paper, as printed: rows are S2's maps 0..5, columns C3's maps 0..15, X where
# the C3 map reads the S2 map.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)

# Appendix A: f(a) = A tanh(S a).
PAPER_A = 1.7159
PAPER_S = 2.0 / 3.0

# Section II-B, layer by layer: (trainable parameters, connections).
PAPER_LAYERS = {
    "conv1": (156, 122_304),     # C1
    "pool1": (12, 5_880),        # S2
    "conv2": (1_516, 151_600),   # C3
    "pool2": (32, 2_000),        # S4
    "conv3": (48_120, 48_120),   # C5: "48,120 trainable connections"
    "f6": (10_164, 10_164),      # F6
}
# Section III-C: "340,908 connections, but only 60,000 trainable free parameters" (the
# connection count includes the 84 x 10 of the RBF output layer, whose prototypes are fixed).
PAPER_TOTAL_CONNECTIONS, PAPER_TOTAL_PARAMETERS = 340_908, 60_000

# What each layer reads: (C, H, W) of its input on a 32x32 image.
LAYER_INPUTS = {"conv1": (1, 32, 32), "pool1": (6, 28, 28), "conv2": (6, 14, 14),
                "pool2": (16, 10, 10), "conv3": (16, 5, 5), "f6": (120,)}


def table_reads(out_map):
    """The S2 maps that C3 map ``out_map`` reads, per the printed table."""
    return {row for row in range(6) if TABLE_I[row][out_map] == "X"}


def paper_mask(dtype=torch.float64):
    """(16, 6, 1, 1): 1 where Table I has an X."""
    mask = torch.tensor([[1.0 if TABLE_I[i][j] == "X" else 0.0 for i in range(6)] for j in range(16)],
                        dtype=dtype)
    return mask.view(16, 6, 1, 1)


def f(a):
    return PAPER_A * torch.tanh(PAPER_S * a)


def window_sums(x):
    """Sum of each non-overlapping 2x2 window, by indexing (no pooling op)."""
    return x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]


def subsample(module, x):
    """The paper's S-layer: window sum x trainable coefficient + trainable bias, per map."""
    return window_sums(x) * module.weight.view(1, -1, 1, 1) + module.bias.view(1, -1, 1, 1)


def seeded_net(seed=0):
    torch.manual_seed(seed)
    return LeNet5().double()


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_table_one_as_printed_has_the_papers_structure():
    # A typo in the literal table above would make every test below check the wrong thing.
    columns = [table_reads(j) for j in range(16)]
    assert sum(len(c) for c in columns) == 60
    for j in range(6):
        assert columns[j] == {j % 6, (j + 1) % 6, (j + 2) % 6}
    for j in range(6, 12):
        assert columns[j] == {(j - 6 + k) % 6 for k in range(4)}
    assert columns[12:15] == [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}]
    assert columns[15] == set(range(6))


def test_c3_map_depends_on_exactly_the_s2_maps_of_table_one():
    net = seeded_net()
    kept = {}

    def keep(name):
        def hook(module, args, output):
            kept[name] = output
        return hook

    handles = [net.tanh2.register_forward_hook(keep("s2")), net.conv2.register_forward_hook(keep("c3"))]
    try:
        net(randn(3, 1, 32, 32))
    finally:
        for h in handles:
            h.remove()
    s2, c3 = kept["s2"], kept["c3"]
    assert s2.shape == (3, 6, 14, 14) and c3.shape == (3, 16, 10, 10)
    for j in range(16):
        (g,) = torch.autograd.grad(c3[:, j].sum(), s2, retain_graph=True)
        reads = {i for i in range(6) if g[:, i].abs().sum() > 0}
        assert reads == table_reads(j), f"C3 map {j}"


def test_weights_outside_table_one_do_not_change_the_output():
    net = seeded_net()
    x = randn(2, 1, 32, 32)
    before = net(x)
    with torch.no_grad():
        net.conv2.weight.add_((1 - paper_mask()) * 10.0)   # only the absent connections
    assert torch.equal(net(x), before)
    with torch.no_grad():
        net.conv2.weight.add_(paper_mask() * 0.1)          # the present ones do matter
    assert (net(x) - before).abs().max() > 1e-3


def test_trainable_parameters_per_layer_are_the_papers():
    # A parameter entry is trainable if the loss can move it: count the entries with a
    # non-zero gradient (weights C3 never reads have none, whatever the tensor's size).
    net = seeded_net()
    net(randn(4, 1, 32, 32)).sum().backward()
    counts = {name: sum(int((p.grad != 0).sum()) for p in getattr(net, name).parameters())
              for name in PAPER_LAYERS}
    assert counts == {name: params for name, (params, _) in PAPER_LAYERS.items()}
    assert sum(counts.values()) == PAPER_TOTAL_PARAMETERS
    # Nothing else trains: the RBF prototypes are fixed, as in the paper.
    others = [n for n, p in net.named_parameters() if n.split(".")[0] not in PAPER_LAYERS]
    assert others == []


def jacobian_nonzeros(module, shape, chunk=1024):
    """Non-zero entries of the Jacobian of an affine module: its response to each input unit
    alone, less its response to zero (one forward pass per input unit, batched)."""
    n = math.prod(shape)
    with torch.no_grad():
        zero = module(torch.zeros(1, *shape, dtype=torch.float64))
        count = 0
        for start in range(0, n, chunk):
            basis = torch.eye(n, dtype=torch.float64)[start:start + chunk].view(-1, *shape)
            count += int((module(basis) - zero != 0).sum())
    return count, zero.numel()


def test_connections_per_layer_are_the_papers():
    # Connections of a layer = (input unit, output unit) pairs where the output depends on the
    # input, plus one bias connection per output unit; the RBF output layer has no bias.
    net = seeded_net()
    total = 0
    for name, (_, connections) in PAPER_LAYERS.items():
        nonzeros, outputs = jacobian_nonzeros(getattr(net, name), LAYER_INPUTS[name])
        assert nonzeros + outputs == connections, name
        total += nonzeros + outputs
    rbf = torch.autograd.functional.jacobian(net.rbf, randn(1, 84, seed=2))
    total += int((rbf != 0).sum())
    assert total == PAPER_TOTAL_CONNECTIONS


def test_squashing_function_is_the_papers_scaled_tanh():
    net = seeded_net()
    a = torch.linspace(-6, 6, 49, dtype=torch.float64)
    expected = torch.tensor([PAPER_A * math.tanh(PAPER_S * v) for v in a.tolist()], dtype=torch.float64)
    for name in ("tanh1", "tanh2", "tanh3", "tanh4", "tanh5", "tanh6"):
        assert torch.allclose(getattr(net, name)(a), expected, rtol=0, atol=1e-12), name
    # The paper's reason for the constants: f(1) = 1 and f(-1) = -1 (to 1e-5 with A = 1.7159).
    ones = net.tanh1(torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert ones.tolist() == pytest.approx([1.0, -1.0], abs=1e-4)
    assert PAPER_A * math.tanh(PAPER_S) == pytest.approx(1.0, abs=1e-4)



def test_the_fused_training_form_is_the_same_function_and_gradient():
    """The training loop's fused scaled tanh (2A sigmoid(2S a) - A) against math.tanh in
    float64, torch's finite-difference gradcheck, and in float32 against float64."""
    net = seeded_net()
    net.train()
    for module in net.modules():
        if isinstance(module, ScaledTanh):
            module.fused = True
    a = torch.cat([torch.linspace(-6, 6, 49, dtype=torch.float64), torch.tensor([-80.0, -30.0, 30.0, 80.0],
                                                                                 dtype=torch.float64)])
    a.requires_grad_(True)
    value = net.tanh1(a)
    assert value.grad_fn.name().startswith("ScaledTanhFunction")
    expected = torch.tensor([PAPER_A * math.tanh(PAPER_S * v) for v in a.tolist()], dtype=torch.float64)
    assert torch.allclose(value, expected, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(value.sum(), a)
    slope = torch.tensor([PAPER_A * PAPER_S * (1 - math.tanh(PAPER_S * v) ** 2) for v in a.tolist()],
                         dtype=torch.float64)
    assert torch.allclose(grad, slope, rtol=0, atol=1e-12)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ScaledTanhFunction.apply(t, PAPER_A, PAPER_S), (x,))
    # float32, the training dtype: values and gradients within 1e-6 of the float64 function.
    x32 = (3 * torch.randn(100_000, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    y32 = net.tanh1(x32)
    (g32,) = torch.autograd.grad(y32.sum(), x32)
    x64 = x32.detach().double()
    assert (y32.double() - PAPER_A * torch.tanh(PAPER_S * x64)).abs().max() < 1e-6
    assert (g32.double() - PAPER_A * PAPER_S * (1 - torch.tanh(PAPER_S * x64) ** 2)).abs().max() < 1e-6
    # Evaluation (and so mining, projection, explain) runs the reference form, bit for bit.
    net.eval()
    assert torch.equal(net.tanh1(x32.detach()), PAPER_A * torch.tanh(PAPER_S * x32.detach()))

@pytest.mark.parametrize("size", [5, 7])
def test_c5_is_the_convolution_computed_as_one_matrix_product_where_its_kernel_covers_the_map(size):
    """C5 (WholeWindowConv2d) against F.conv2d in float64, value and gradients: on 5x5 maps (the
    matrix-product path) and on larger ones (a bigger input, F.conv2d itself)."""
    net = seeded_net()
    c5 = net.conv3
    x = randn(3, 16, size, size, seed=4).requires_grad_(True)
    out = c5(x)
    expected = F.conv2d(x, c5.weight, c5.bias)
    assert out.shape == expected.shape == (3, 120, size - 4, size - 4)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    g = randn(*out.shape, seed=5)
    ours = torch.autograd.grad(out, (x, c5.weight, c5.bias), g)
    theirs = torch.autograd.grad(expected, (x, c5.weight, c5.bias), g)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


# Two hand-worked 4x4 maps; the remaining maps are zero.
MAP0 = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0], [13.0, 14.0, 15.0, 16.0]]
MAP1 = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.0, -0.5, 0.25], [0.0, 0.0, 1.0, 1.0], [0.0, -3.0, 1.0, 1.0]]
# Window sums: map 0 [[14, 22], [46, 54]]; map 1 [[1, 1.75], [-3, 4]].
# Coefficient 0.1, bias -2 on map 0; coefficient -0.5, bias 0.25 on map 1:
BEFORE_SQUASH = [
    [[14 * 0.1 - 2, 22 * 0.1 - 2], [46 * 0.1 - 2, 54 * 0.1 - 2]],      # [[-0.6, 0.2], [2.6, 3.4]]
    [[1 * -0.5 + 0.25, 1.75 * -0.5 + 0.25], [-3 * -0.5 + 0.25, 4 * -0.5 + 0.25]],  # [[-0.25, -0.625], [1.75, -1.75]]
]


@pytest.mark.parametrize("pool,squash,maps", [("pool1", "tanh2", 6), ("pool2", "tanh4", 16)])
def test_subsampling_is_window_sum_times_coefficient_plus_bias_then_squashed(pool, squash, maps):
    net = seeded_net()
    module = getattr(net, pool)
    coefficients = [0.1, -0.5] + [0.3 + 0.1 * c for c in range(2, maps)]
    biases = [-2.0, 0.25] + [-0.2 * c for c in range(2, maps)]
    with torch.no_grad():
        module.weight.copy_(torch.tensor(coefficients, dtype=torch.float64))
        module.bias.copy_(torch.tensor(biases, dtype=torch.float64))
    x = torch.zeros(1, maps, 4, 4, dtype=torch.float64)
    x[0, 0], x[0, 1] = torch.tensor(MAP0), torch.tensor(MAP1)
    expected = torch.tensor([BEFORE_SQUASH[0], BEFORE_SQUASH[1]] + [[[b, b], [b, b]] for b in biases[2:]],
                            dtype=torch.float64).unsqueeze(0)
    expected = PAPER_A * torch.tanh(PAPER_S * expected)
    got = getattr(net, squash)(module(x))
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # The numbers discriminate: a window mean (plain average pool) would be far off.
    mean_based = PAPER_A * torch.tanh(PAPER_S * (
        F.avg_pool2d(x, 2) * torch.tensor(coefficients, dtype=torch.float64).view(1, -1, 1, 1)
        + torch.tensor(biases, dtype=torch.float64).view(1, -1, 1, 1)))
    assert (mean_based - expected).abs().max() > 0.5
    # Coefficient and bias are trainable, one pair per map: d out / d coefficient = window sum.
    assert module.weight.shape == module.bias.shape == (maps,)
    assert module.weight.requires_grad and module.bias.requires_grad
    grads = torch.autograd.grad(module(x)[0, 0, 1, 1], [module.weight, module.bias])
    assert grads[0][0].item() == 54.0 and grads[1][0].item() == 1.0
    assert grads[0][1:].abs().sum() == 0 and grads[1][1:].abs().sum() == 0


def paper_forward(net, x):
    """LeNet-5 from the paper's description, with the model's weights: C1, S2, C3 over Table I,
    S4, C5, F6, each squashed by f, then y_i = sum_j (x_j - w_ij)^2 (scores = -y)."""
    h = f(F.conv2d(x, net.conv1.weight, net.conv1.bias))
    h = f(subsample(net.pool1, h))
    h = f(F.conv2d(h, net.conv2.weight * paper_mask(), net.conv2.bias))
    h = f(subsample(net.pool2, h))
    h = f(F.conv2d(h, net.conv3.weight, net.conv3.bias)).flatten(1)
    h = f(h @ net.f6.weight.T + net.f6.bias)
    return -((h.unsqueeze(1) - net.rbf.prototypes.unsqueeze(0)) ** 2).sum(-1)


def test_forward_is_the_papers_composition():
    net = seeded_net()
    with torch.no_grad():   # weights off their init so no layer is near-linear or trivial
        for name in PAPER_LAYERS:
            module = getattr(net, name)
            module.weight.mul_(3.0)
            module.bias.copy_(randn(*module.bias.shape, seed=5) * 0.5)
    x = randn(5, 1, 32, 32, seed=3)
    with torch.no_grad():
        assert torch.allclose(net(x), paper_forward(net, x), rtol=1e-12, atol=1e-10)
