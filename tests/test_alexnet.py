"""AlexNet (Krizhevsky et al. 2012) against the paper: layers, parameter count, initialisation,
LRN against torch's, and the batched input transforms against hand-computed crops and the
image-by-image reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_transforms import naive_alexnet_inputs_with, naive_alexnet_train_inputs
from torch import nn

from cnn_internals.engine.projection import backward_rules, receptive_field
from cnn_internals.models import transforms
from cnn_internals.models.alexnet import AlexNet, LocalResponseNorm, build_alexnet, init_weights, local_response_norm
from cnn_internals.models.transforms import VIEW_NAMES, AlexNetInputs, Augmentation, draw_augmentation

LAYERS = ["conv1", "relu1", "lrn1", "pool1", "conv2", "relu2", "lrn2", "pool2", "conv3", "relu3",
          "conv4", "relu4", "conv5", "relu5", "pool3", "lin1", "relu6", "drop1", "lin2", "relu7",
          "drop2", "lin3"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_alexnet().eval()


# ---------------------------------------------------------------------- the network

def test_parameter_count_is_58_322_314_as_the_layer_shapes_give():
    # (out, in, kh, kw) of each conv and (out, in) of each linear layer, from section 3.5
    by_hand = {"conv1": 96 * 3 * 11 * 11 + 96, "conv2": 256 * 96 * 5 * 5 + 256,
               "conv3": 384 * 256 * 3 * 3 + 384, "conv4": 384 * 384 * 3 * 3 + 384,
               "conv5": 256 * 384 * 3 * 3 + 256, "lin1": 4096 * 9216 + 4096,
               "lin2": 4096 * 4096 + 4096, "lin3": 10 * 4096 + 10}
    model = AlexNet()
    counted = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()
               if any(True for _ in m.parameters())}
    assert counted == by_hand
    assert sum(by_hand.values()) == 58_322_314
    assert sum(p.numel() for p in model.parameters()) == 58_322_314
    assert sum(p.numel() for p in AlexNet(num_classes=1000).parameters()) == 58_322_314 + 990 * 4097


def test_modules_are_named_and_shaped_as_listed():
    model = AlexNet()
    assert [name for name, _ in model.named_children()] == LAYERS
    convs = {name: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
             for name, m in model.named_children() if isinstance(m, nn.Conv2d)}
    assert convs == {"conv1": (3, 96, (11, 11), (4, 4), (2, 2)), "conv2": (96, 256, (5, 5), (1, 1), (2, 2)),
                     "conv3": (256, 384, (3, 3), (1, 1), (1, 1)), "conv4": (384, 384, (3, 3), (1, 1), (1, 1)),
                     "conv5": (384, 256, (3, 3), (1, 1), (1, 1))}
    linears = {name: (m.in_features, m.out_features) for name, m in model.named_children() if isinstance(m, nn.Linear)}
    assert linears == {"lin1": (9216, 4096), "lin2": (4096, 4096), "lin3": (4096, 10)}
    for name in ("pool1", "pool2", "pool3"):
        assert (getattr(model, name).kernel_size, getattr(model, name).stride) == (3, 2)
    for name in ("lrn1", "lrn2"):
        assert repr(getattr(model, name)) == "LocalResponseNorm(5, alpha=0.0005, beta=0.75, k=2)"
    assert all(getattr(model, f"relu{i}").inplace for i in range(1, 8))
    assert model.drop1.p == model.drop2.p == 0.5


def test_every_layer_has_the_papers_output_shape_at_224(net):
    shapes = {}

    def record(name):
        def hook(module, args, output):
            shapes[name] = tuple(output.shape)
        return hook

    handles = [getattr(net, n).register_forward_hook(record(n)) for n in LAYERS]
    try:
        with torch.no_grad():
            out = net(torch.randn(2, 3, 224, 224))
    finally:
        for h in handles:
            h.remove()
    assert shapes == {
        "conv1": (2, 96, 55, 55), "relu1": (2, 96, 55, 55), "lrn1": (2, 96, 55, 55), "pool1": (2, 96, 27, 27),
        "conv2": (2, 256, 27, 27), "relu2": (2, 256, 27, 27), "lrn2": (2, 256, 27, 27), "pool2": (2, 256, 13, 13),
        "conv3": (2, 384, 13, 13), "relu3": (2, 384, 13, 13), "conv4": (2, 384, 13, 13), "relu4": (2, 384, 13, 13),
        "conv5": (2, 256, 13, 13), "relu5": (2, 256, 13, 13), "pool3": (2, 256, 6, 6),
        "lin1": (2, 4096), "relu6": (2, 4096), "drop1": (2, 4096), "lin2": (2, 4096), "relu7": (2, 4096),
        "drop2": (2, 4096), "lin3": (2, 10)}
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_receptive_fields_match_the_design_table(net):
    # DESIGN.md (Araujo et al. 2019 for AlexNet at 224, conv1 11/s4/p2): (size, stride, padding)
    expected = {"conv1": (11, 4, 2), "pool1": (19, 8, 2), "conv2": (51, 8, 18), "pool2": (67, 16, 18),
                "conv3": (99, 16, 34), "conv4": (131, 16, 50), "conv5": (163, 16, 66)}
    assert {layer: receptive_field(net, layer, (3, 224, 224)) for layer in expected} == expected


def test_paper_init_puts_unit_biases_where_section_5_says_and_weights_at_std_0_01():
    torch.manual_seed(0)
    model = build_alexnet(weight_init="paper")
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "lin1", "lin2", "lin3"):
        layer = getattr(model, name)
        bias = 1.0 if name in ("conv2", "conv4", "conv5", "lin1", "lin2") else 0.0
        assert torch.equal(layer.bias, torch.full_like(layer.bias, bias)), name
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.03), name
        assert abs(layer.weight.mean().item()) < 0.001, name


def test_kaiming_init_has_std_sqrt_2_over_fan_in_and_zero_biases():
    torch.manual_seed(0)
    model = build_alexnet(weight_init="kaiming")
    fan_in = {"conv1": 3 * 121, "conv2": 96 * 25, "conv3": 256 * 9, "conv4": 384 * 9, "conv5": 384 * 9,
              "lin1": 9216, "lin2": 4096, "lin3": 4096}
    for name, fan in fan_in.items():
        layer = getattr(model, name)
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan), rel=0.03), name
        assert not layer.bias.any(), name


def test_init_is_seeded_by_the_caller_and_rejects_unknown_schemes():
    torch.manual_seed(3)
    a = build_alexnet(weight_init="paper")
    torch.manual_seed(3)
    b = build_alexnet(weight_init="paper")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="xavier"):
        init_weights(a, "xavier")


# ---------------------------------------------------------------------- LRN

@pytest.mark.parametrize("size", [5, 4, 3])
@pytest.mark.parametrize("shape", [(2, 1, 4, 5), (2, 3, 4, 5), (2, 7, 3, 3), (3, 16, 2, 2), (2, 6, 9)])
def test_lrn_equals_torch_forward_and_gradient_in_float64(size, shape):
    g = torch.Generator().manual_seed(size * 100 + shape[1])
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    constants = dict(alpha=0.3, beta=0.75, k=2.0)     # a large alpha, so the window matters
    ours = local_response_norm(x, size, **constants)
    theirs = F.local_response_norm(x, size, **constants)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours, x, upstream)
    (g_theirs,) = torch.autograd.grad(theirs, x, upstream)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-11, atol=1e-12)


def test_lrn_module_has_torchs_repr_and_output():
    ours, theirs = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
    assert repr(ours) == repr(theirs)
    x = torch.rand(2, 8, 6, 6, dtype=torch.float64) * 255     # raw pixel scale, where LRN bites
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_lrn_keeps_its_true_gradient_under_every_projection_rule():
    model = nn.Sequential(LocalResponseNorm(5, alpha=0.3, k=2.0))
    x = torch.randn(1, 7, 4, 4, dtype=torch.float64)
    upstream = torch.randn(1, 7, 4, 4, dtype=torch.float64)

    def input_gradient():
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(xg), xg, upstream)[0]

    true = input_gradient()
    for method in ("deconvnet", "guided_backprop"):
        with backward_rules(model, method):
            torch.testing.assert_close(input_gradient(), true, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lrn_backward_is_bitwise_reproducible_on_cuda():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(64, 96, 55, 55, device="cuda", generator=g)
    upstream = torch.randn(64, 96, 55, 55, device="cuda", generator=g)
    lrn = LocalResponseNorm(5, alpha=5e-4, k=2).cuda()

    def grad():
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(lrn(xg), xg, upstream)[0]

    first = grad()
    assert all(torch.equal(first, grad()) for _ in range(3))
    xg = x.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(F.local_response_norm(xg, 5, 5e-4, 0.75, 2.0), xg, upstream)
    torch.testing.assert_close(first, theirs)


# ---------------------------------------------------------------------- input transforms

EIGVALS = np.array([0.04, 0.01, 0.002])
# A rotation (orthonormal columns): its columns play the eigenvectors.
EIGVECS = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [0.0, 0.8, 0.6]])
STD = 0.25


def tiny_batch(height=6, width=6, batch=2):
    """Known uint8 images and mean image: pixel (b, r, c, ch) = 7b + 40r + 5c + 60ch (< 256)."""
    b, r, c, ch = np.meshgrid(np.arange(batch), np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    images = (7 * b + 40 * r + 5 * c + 60 * ch).astype(np.uint8)
    mean = ((r[0] * width + c[0]) * 3 + ch[0]) / (3.0 * height * width)     # in [0, 1)
    return images, mean


def by_hand(images, mean, top, left, flip, crop, scale, light=(0.0, 0.0, 0.0)):
    """numpy slicing of one image: (x/255 + light - mean)[window], mirrored, scaled, CHW."""
    window = (slice(top, top + crop), slice(left, left + crop))
    x = images[window].astype(np.float64) / 255 + np.asarray(light) - mean[window]
    if flip:
        x = x[:, ::-1]
    return (scale * x).transpose(2, 0, 1)


def draws(tops, lefts, flips, alphas=None):
    return Augmentation(torch.tensor(tops), torch.tensor(lefts), torch.tensor(flips),
                        None if alphas is None else torch.tensor(alphas, dtype=torch.float32))


@pytest.mark.parametrize("normalize, scale", [("standardize", 1 / STD), ("paper", 255.0)])
def test_crops_equal_hand_computed_slices_with_the_mean_of_their_own_window(normalize, scale):
    images, mean = tiny_batch()
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4, normalize=normalize)
    out = inputs.apply_augmentation(torch.from_numpy(images), draws([0, 2], [1, 2], [False, True]))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4) and out.is_contiguous()
    expected = np.stack([by_hand(images[0], mean, 0, 1, False, 4, scale),
                         by_hand(images[1], mean, 2, 2, True, 4, scale)])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-5)
    # one value spelled out: image 1, flipped window at (2, 2), output row 0 col 0 = pixel (2, 5), red
    assert out[1, 0, 0, 0].item() == pytest.approx(scale * ((7 + 80 + 25) / 255 - mean[2, 5, 0]), abs=1e-6 * scale)


def test_lighting_adds_eigvecs_times_alphas_times_eigvals_to_every_pixel():
    images, mean = tiny_batch()
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4)
    alphas = np.array([[0.1, -0.2, 0.3], [-0.05, 0.15, 0.0]], dtype=np.float32)
    plain = inputs.apply_augmentation(torch.from_numpy(images), draws([1, 0], [2, 1], [True, False]))
    lit = inputs.apply_augmentation(torch.from_numpy(images), draws([1, 0], [2, 1], [True, False], alphas))
    added = (lit - plain).numpy() * STD                                   # back to [0, 1] units
    for b in range(2):
        colour = EIGVECS @ (alphas[b].astype(np.float64) * EIGVALS)        # [p1 p2 p3][a_i l_i]^T
        np.testing.assert_allclose(added[b], np.broadcast_to(colour[:, None, None], (3, 4, 4)), atol=1e-6)
    torch.testing.assert_close(inputs.lighting(torch.from_numpy(alphas)),
                               torch.from_numpy((alphas @ np.diag(EIGVALS) @ EIGVECS.T).astype(np.float32)))


def test_train_is_reproducible_from_the_generator_and_follows_the_documented_draw_order():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 12, 10, 3), dtype=np.uint8))
    mean = rng.random((12, 10, 3))
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=6)
    a = inputs.train(images, torch.Generator().manual_seed(7))
    b = inputs.train(images, torch.Generator().manual_seed(7))
    c = inputs.train(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    tops = torch.randint(0, 7, (5,), generator=g)
    lefts = torch.randint(0, 5, (5,), generator=g)
    flips = torch.randint(0, 2, (5,), generator=g).bool()
    alphas = torch.randn(5, 3, generator=g) * 0.1
    manual = inputs.apply_augmentation(images, Augmentation(tops, lefts, flips, alphas))
    assert torch.equal(a, manual)


def test_draws_cover_every_offset_flip_half_the_time_and_have_lighting_std():
    d = draw_augmentation(20000, 256, 250, 224, 0.1, torch.Generator().manual_seed(0), "cpu")
    assert sorted(d.tops.unique().tolist()) == list(range(33))
    assert sorted(d.lefts.unique().tolist()) == list(range(27))
    assert np.bincount(d.tops.numpy()).min() > 20000 / 33 * 0.8     # roughly uniform
    assert d.flips.dtype == torch.bool and abs(d.flips.float().mean().item() - 0.5) < 0.015
    assert d.alphas.shape == (20000, 3) and d.alphas.std().item() == pytest.approx(0.1, rel=0.03)
    assert abs(d.alphas.mean().item()) < 0.003
    assert draw_augmentation(4, 8, 8, 4, 0.0, torch.Generator(), "cpu").alphas is None


def test_views_are_the_four_corners_and_centre_then_their_mirrors():
    images, mean = tiny_batch(height=7, width=6)          # odd spare rows: centre top = (7-4)//2 = 1
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4)
    views = inputs.views(torch.from_numpy(images))
    assert len(views) == len(VIEW_NAMES) == 10
    corners = [(0, 0), (0, 2), (3, 0), (3, 2), (1, 1)]
    for i, (flip, (top, left)) in enumerate([(f, o) for f in (False, True) for o in corners]):
        expected = np.stack([by_hand(image, mean, top, left, flip, 4, 1 / STD) for image in images])
        np.testing.assert_allclose(views[i].numpy(), expected, rtol=1e-6, atol=1e-5, err_msg=VIEW_NAMES[i])
    torch.testing.assert_close(views[4], inputs.eval(torch.from_numpy(images)))


@pytest.mark.parametrize("normalize", ["standardize", "paper"])
def test_display_of_eval_recovers_the_centre_crop_in_0_1(normalize):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 9, 8, 3), dtype=np.uint8)
    inputs = AlexNetInputs(rng.random((9, 8, 3)), EIGVALS, EIGVECS, STD, "cpu", crop=5, normalize=normalize)
    shown = inputs.display(inputs.eval(torch.from_numpy(images)))
    centre = images[:, 2:7, 1:6].transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(shown.numpy(), centre, atol=2e-6)


@pytest.mark.parametrize("normalize, atol", [("standardize", 1e-5), ("paper", 2e-4)])
def test_fast_path_equals_the_image_by_image_reference(monkeypatch, normalize, atol):
    monkeypatch.setattr(transforms, "CPU_CHUNK", 4)        # 11 images: chunks of 4, 4 and 3
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (11, 256, 256, 3), dtype=np.uint8)
    mean = rng.random((256, 256, 3))
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", normalize=normalize)
    d = draw_augmentation(11, 256, 256, 224, 0.1, torch.Generator().manual_seed(3), "cpu")
    ours = inputs.apply_augmentation(torch.from_numpy(images), d).numpy()
    reference = naive_alexnet_inputs_with(images, mean, EIGVALS, EIGVECS, STD, d.tops.numpy(), d.lefts.numpy(),
                                          d.flips.numpy(), d.alphas.numpy(), normalize=normalize)
    assert 0 < d.flips.sum() < 11
    assert np.abs(ours - reference).max() < atol      # paper scale: values up to ~260, float32
    buffer = torch.empty(11, 3, 224, 224)
    assert inputs.apply_augmentation(torch.from_numpy(images), d, out=buffer) is buffer
    assert np.array_equal(buffer.numpy(), ours)


def test_naive_reference_draws_per_image_and_is_seeded():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 10, 10, 3), dtype=np.uint8)
    mean = rng.random((10, 10, 3))
    a = naive_alexnet_train_inputs(images, mean, EIGVALS, EIGVECS, STD, np.random.default_rng(5), crop=6)
    b = naive_alexnet_train_inputs(images, mean, EIGVALS, EIGVECS, STD, np.random.default_rng(5), crop=6)
    assert a.shape == (3, 3, 6, 6) and a.dtype == np.float32 and np.array_equal(a, b)
    draw = np.random.default_rng(5)          # the documented per-image order: top, left, flip, alphas
    for i in range(3):
        top, left, flip = draw.integers(0, 5), draw.integers(0, 5), draw.random() < 0.5
        light = EIGVECS @ (draw.normal(0.0, 0.1, 3) * EIGVALS)
        np.testing.assert_allclose(a[i], by_hand(images[i], mean, top, left, flip, 6, 1 / STD, light), atol=1e-5)


def test_without_augment_train_is_the_centre_crop_and_lighting_std_0_adds_nothing():
    images, mean = tiny_batch()
    plain = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4, augment=False)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    torch.testing.assert_close(plain.train(torch.from_numpy(images), g), plain.eval(torch.from_numpy(images)))
    assert torch.equal(g.get_state(), state)                      # the generator was not used
    dark = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4, lighting_std=0.0)
    out = dark.train(torch.from_numpy(images), torch.Generator().manual_seed(1))
    d = draw_augmentation(2, 6, 6, 4, 0.0, torch.Generator().manual_seed(1), "cpu")
    expected = naive_alexnet_inputs_with(images, mean, EIGVALS, EIGVECS, STD, d.tops, d.lefts, d.flips, None, crop=4)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_bad_inputs_are_refused_with_a_reason():
    images, mean = tiny_batch()
    inputs = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4)
    with pytest.raises(ValueError, match="uint8"):
        inputs.eval(torch.from_numpy(images).float())
    with pytest.raises(ValueError, match="mean image is 6x6"):
        inputs.eval(torch.zeros(1, 5, 6, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out must be"):
        inputs.eval(torch.from_numpy(images), out=torch.empty(2, 3, 5, 5))
    with pytest.raises(ValueError, match="normalize"):
        AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=4, normalize="imagenet")
    with pytest.raises(ValueError, match="crop 7"):
        AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu", crop=7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_equals_cpu_path_for_the_same_draws():
    rng = np.random.default_rng(6)
    images = torch.from_numpy(rng.integers(0, 256, (20, 256, 256, 3), dtype=np.uint8))
    mean = rng.random((256, 256, 3))
    on_gpu = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cuda")
    on_cpu = AlexNetInputs(mean, EIGVALS, EIGVECS, STD, "cpu")
    d = draw_augmentation(20, 256, 256, 224, 0.1, torch.Generator(device="cuda").manual_seed(0), "cuda")
    gpu = on_gpu.apply_augmentation(images.cuda(), d)
    cpu_draws = Augmentation(d.tops.cpu(), d.lefts.cpu(), d.flips.cpu(), d.alphas.cpu())
    torch.testing.assert_close(gpu.cpu(), on_cpu.apply_augmentation(images, cpu_draws), rtol=1e-6, atol=1e-5)
    g1, g2 = (torch.Generator(device="cuda").manual_seed(9) for _ in range(2))
    assert torch.equal(on_gpu.train(images.cuda(), g1), on_gpu.train(images.cuda(), g2))
