"""The feature-visualization engine (engine/feature_vis.py) against known optima and hand
computations: a linear unit's optimum under a fixed L2 norm is the direction of its gradient,
images do not depend on their batch-mates, the Fourier scale and the colour matrix are Lucid's
formulas computed here by hand, the transforms are drawn from Lucid's lists."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnn_internals.engine.feature_vis import (
    Images,
    Recipe,
    colour_matrix,
    draw_transforms,
    objective,
    redirected_relus,
    spectrum_scale,
    transform,
    visualize,
)
from cnn_internals.engine.hooks import forward_to

STILL = {"pad": 0.0, "jitter": 0.0, "jitter2": 0.0, "rotate": 0.0, "scale": (1.0, 1.0)}


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def cosine(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("kernel", [8, 3])
def test_a_linear_unit_converges_to_its_gradients_direction_and_the_right_map_is_optimized(kernel):
    """A conv layer without bias or nonlinearity: a map's mean over its positions is linear in
    the input, so under a fixed L2 norm its maximum is the input along the objective's gradient
    (the filter itself for a kernel as large as the image). Each map's image matches its own
    direction, not another map's, and not its negative (the sign of the objective)."""
    torch.manual_seed(0)
    net = nn.Conv2d(3, 6, kernel, bias=False).double()
    maps = [1, 4]
    recipe = Recipe(param="pixel", l2=3.0, steps=300, lr=0.05, **STILL)
    pixels, values = visualize(net, None, maps, (3, 8, 8), lambda x: x, generators([5, 6]), recipe,
                               dtype=torch.float64)
    directions = []
    for m in range(6):
        x = torch.zeros(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        objective(net(x), torch.tensor([m])).sum().backward()
        directions.append(x.grad[0])
    for i, m in enumerate(maps):
        assert cosine(pixels[i], directions[m]) > 0.99
        assert max(abs(cosine(pixels[i], directions[o])) for o in range(6) if o != m) < 0.9
        assert pixels[i].norm().item() == pytest.approx(3.0)
        best = 3.0 * directions[m] / directions[m].norm()           # the optimum's value, by hand
        assert values[i].item() == pytest.approx(objective(net(best[None]), torch.tensor([m])).item(), rel=1e-3)


def small_relu_net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(10, 5)).double().eval()


def test_maps_optimized_together_equal_each_optimized_alone():
    """Maps {3, 7} of a ReLU net's second conv in one batch, Fourier images with decorrelated
    colour and the transforms on, float64, 20 steps: each equals the same map optimized alone
    (its own generator, seeded per map), to 1e-10; and a rerun gives the same bytes."""
    net = small_relu_net()
    colour = colour_matrix(torch.tensor([[0.6, -0.7, 0.3], [0.6, 0.1, -0.8], [0.5, 0.7, 0.5]]),
                           torch.tensor([0.09, 0.01, 0.002]))
    recipe = Recipe(steps=20)

    def run(maps):
        return visualize(net, "3", maps, (3, 24, 24), lambda x: x * 2 - 1, generators([100 + m for m in maps]),
                         recipe, colour, dtype=torch.float64)

    together, values = run([3, 7])
    for i, m in enumerate([3, 7]):
        alone, value = run([m])
        assert (together[i] - alone[0]).abs().max().item() <= 1e-10
        assert abs(values[i].item() - value[0].item()) <= 1e-10
    again, _ = run([3, 7])
    assert torch.equal(again, together)
    assert not torch.equal(together[0], together[1])


def test_optimizing_raises_the_objective_of_units_of_every_kind():
    """A map, a fully connected unit and a class (layer None): 30 steps of the default recipe
    leave each objective higher than on the starting image, and higher than on grey."""
    net = small_relu_net()
    for layer, unit in (("3", 2), ("7", 1), (None, 4)):
        start_images = Images(3, 24, 24, generators([9]), Recipe(), dtype=torch.float64)
        with torch.no_grad():
            x = start_images() * 2 - 1
            start = objective(net(x) if layer is None else net[: int(layer) + 1](x), torch.tensor([unit])).item()
        _, value = visualize(net, layer, [unit], (3, 24, 24), lambda x: x * 2 - 1, generators([9]), Recipe(steps=30),
                             dtype=torch.float64)
        assert value.item() > start + 1e-3, layer


def test_the_spectrum_scale_is_lucids_by_hand():
    """1 / max(sqrt(fy^2 + fx^2), 1 / max(h, w)), fy = numpy's fftfreq(h), fx the first w // 2 + 1
    of fftfreq(w) (Lucid's rfft2d_freqs; the sign of the Nyquist term squares away)."""
    for h, w in ((8, 8), (6, 10), (32, 32)):
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[: w // 2 + 1]
        want = 1.0 / np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / max(h, w))
        assert np.allclose(spectrum_scale(h, w).numpy(), want, rtol=0, atol=1e-12)


def test_a_fourier_image_is_the_scaled_orthonormal_inverse_transform_through_colour_and_sigmoid():
    """One image from its coefficients by hand: the spectrum times the scale, numpy's inverse
    real FFT with norm ortho, divided by 4, mixed by the colour matrix, through a sigmoid."""
    colour = torch.tensor([[0.5, 0.2, 0.0], [0.4, -0.3, 0.1], [0.3, 0.1, -0.2]], dtype=torch.float64)
    images = Images(3, 6, 8, generators([3]), Recipe(init_std=0.5), colour, dtype=torch.float64)
    coefficients = images.values.detach()[0].numpy()
    spectrum = (coefficients[..., 0] + 1j * coefficients[..., 1]) * spectrum_scale(6, 8).numpy()
    plain = np.fft.irfft2(spectrum, s=(6, 8), norm="ortho") / 4
    mixed = np.einsum("ij,jhw->ihw", colour.numpy(), plain)
    want = 1 / (1 + np.exp(-mixed))
    assert np.allclose(images()[0].detach().numpy(), want, rtol=0, atol=1e-12)
    grey = Images(1, 6, 8, generators([3]), Recipe(init_std=0.5), colour, dtype=torch.float64)
    assert grey.colour is None                              # one channel: nothing to decorrelate


def test_the_colour_matrix_is_the_pca_square_root_normalized_by_hand():
    eigvecs = np.array([[0.58, -0.71, 0.40], [0.58, 0.02, -0.81], [0.57, 0.70, 0.43]])
    eigvals = np.array([0.064, 0.0061, 0.0009])
    want = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            want[i, j] = eigvecs[i, j] * math.sqrt(eigvals[j])
    norms = [math.sqrt(sum(want[i, j] ** 2 for i in range(3))) for j in range(3)]
    want /= max(norms)
    assert np.allclose(colour_matrix(torch.tensor(eigvecs), torch.tensor(eigvals)).numpy(), want, atol=1e-15)


def test_no_transforms_is_the_identity_and_a_pad_shows_grey_margins():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    still = draw_transforms(generators([1, 2]), (16, 16), Recipe(**STILL), torch.float64)
    assert torch.allclose(transform(x, still), x, atol=1e-12)
    padded = draw_transforms(generators([1]), (16, 16), Recipe(**{**STILL, "pad": 32.0}), torch.float64)
    out = transform(x[:1], padded)                          # pad 4 px at 16 px: the frame is 24 px wide
    assert torch.equal(out[0, :, 0, 0], torch.full((3,), 0.5, dtype=torch.float64))
    assert (out[0, :, 8, 8] - 0.5).abs().max() > 0          # the centre is the image


def test_transforms_are_drawn_from_lucids_lists_per_image():
    """Scales 0.9, 0.92, .., 1.1 and whole-degree angles -10..10 with five extra zeros, recovered
    from the affine maps; each image's draws come from its generator alone."""
    recipe = Recipe(pad=0.0, jitter=0.0, jitter2=0.0)
    thetas = draw_transforms(generators(range(2000)), (128, 128), recipe, torch.float64)
    extent = thetas[:, :, :2].pow(2).sum(1).sqrt()[:, 0]    # the column norm: 1 / scale
    scales = (1 / extent).numpy()
    angles = np.degrees(np.arctan2(thetas[:, 1, 0].numpy(), thetas[:, 0, 0].numpy()))
    assert set(np.round(scales, 6)) == {round(0.9 + 0.02 * i, 6) for i in range(11)}
    assert set(np.round(angles, 6)) == set(range(-10, 11))
    assert abs(np.mean(np.round(angles) == 0) - 6 / 26) < 0.03
    one = draw_transforms(generators([7]), (128, 128), Recipe(), torch.float64)
    among = draw_transforms(generators([3, 7, 9]), (128, 128), Recipe(), torch.float64)
    assert torch.equal(one[0], among[1])


@pytest.mark.parametrize("size, jitters", [(32, (2, 1)), (128, (8, 4)), (224, (14, 7))])
def test_jitters_are_whole_pixels_centred_as_lucids_crops(size, jitters):
    """Lucid's jitter(d) crops d px off a side at an offset drawn from 0..d (d + 1 places): the
    view moves -d/2..d/2 px, zero on average. Here each jitter alone, scaled from 128 px to the
    net's size: every shift of that range is drawn, symmetric about zero, and none other."""
    for index, j in enumerate(jitters):
        recipe = Recipe(pad=0.0, scale=(1.0, 1.0), rotate=0.0, jitter=8.0 if index == 0 else 0.0,
                        jitter2=4.0 if index == 1 else 0.0)
        thetas = draw_transforms(generators(range(4000)), (size, size), recipe, torch.float64)
        shifts = (thetas[:, :, 2] * size / 2).numpy()       # the translation, in pixels of the output
        want = {round(o - j / 2, 9) for o in range(j + 1)}
        assert set(np.round(shifts.ravel(), 9)) == want
        assert np.abs(shifts.mean(0)).max() < 0.05 * j       # centred (the old draw was -0.5 px off)


@pytest.mark.parametrize("name, size, transforms", [("alexnet", 224, True), ("zfnet", 224, True), ("vgg16", 64, True),
                                                    ("resnet18", 64, False), ("googlenet", 64, False)])
def test_on_random_relu_nets_every_visualization_beats_the_best_fixture_image(name, size, transforms):
    """The registry's ReLU nets, random weights (scratch), the first and the last shown layer,
    2 maps each, 64 steps of the default recipe (Fourier, decorrelated colour, transforms):
    each image beats the best of 16 fixture photos (smoothed noise) on the map's objective.
    Batch norm's statistics are those of the photos (as a trained net's would be of its data).
    VGG-16, ResNet-18 and GoogLeNet (adaptive pools) at 64 px to keep the test short.
    Random deep units are not robust to the transforms (that robustness is what training on
    photos gives), and under them their objectives hardly climb. The last layer's maps 0 and 1
    after 64 steps, with the transforms and without (this test's setup, measured 2026-12-05):
    ResNet-18 conv5_x at 224 px 0.09, 0.08 against 18.0, 19.9 (0.19, 0.07 after 128 steps);
    VGG-16 conv5_3 at 64 px 0.004, 0.054 against 0.55, 0.59 (it still beats the photos' best,
    -0.087 and -0.049, so it keeps them); GoogLeNet inception5b jumps tenfold from one step to
    the next under them (64 and 224 px: no climb in 256 steps).
    So ResNet-18 and GoogLeNet run without the transforms, the rest of the recipe as it is; there
    GoogLeNet's inception5b map 1 is dead on the grey start and only the redirected ReLU gradient
    gets it going."""
    from cnn_internals.models import NETS

    net = NETS[name]
    torch.manual_seed(0)
    model = net.build({"weights": "scratch"}).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def to_input(pixels):
        return (pixels - mean) / std

    noise = torch.rand(16, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
    photos = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:       # batch norm's running statistics from the photos, not the identity: GoogLeNet's
        for m in norms:                    # std-0.01 init otherwise fades to ~1e-12 by inception5b
            m.reset_running_stats()
            m.momentum = None              # a cumulative average: one batch sets them
        with torch.no_grad():
            model.train()(to_input(photos))
        model.eval()
    colour = colour_matrix(torch.tensor([[0.58, -0.71, 0.40], [0.58, 0.02, -0.81], [0.57, 0.70, 0.43]]),
                           torch.tensor([0.064, 0.0061, 0.0009]))
    recipe = Recipe(steps=64) if transforms else Recipe(steps=64, pad=0.0, jitter=0.0, jitter2=0.0, rotate=0.0,
                                                        scale=(1.0, 1.0))
    if name == "googlenet":
        _, stuck = visualize(model, net.layers[-1], [0, 1], (3, size, size), to_input, generators([11, 12]),
                             dataclasses.replace(recipe, redirected_relu=False), colour)
        assert stuck[1] == 0
    for layer in (net.layers[0], net.layers[-1]):
        path = net.module_path(layer)
        pixels, values = visualize(model, path, [0, 1], (3, size, size), to_input, generators([11, 12]),
                                   recipe, colour)
        with torch.no_grad():
            acts = forward_to(model, path, to_input(photos))[0]
            for i, unit in enumerate((0, 1)):
                best = objective(acts, torch.full((16,), unit)).max()
                assert values[i] > best, (name, layer, unit, float(values[i]), float(best))


def test_redirected_relu_gradient_by_hand():
    """Lucid's redirected_relu_grad, image by image: image 0 has a live input, so the ReLU's own
    gradient; image 1's inputs are all negative, so the incoming gradient where it would raise
    them (negative: the loss is minimized) and 0 where it would push them lower."""
    relu = nn.ReLU(inplace=True)
    x = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    incoming = torch.tensor([[0.5, -0.5, -1.0], [0.5, -0.5, -1.0]])
    with redirected_relus(nn.Sequential(relu)):
        out = relu(x)
    out.backward(incoming)
    assert torch.equal(out, torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(x.grad, torch.tensor([[0.0, -0.5, 0.0], [0.0, -0.5, -1.0]]))
    assert "forward" not in relu.__dict__                   # the module's own forward is back


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_bfloat16_autocast_stays_near_float32(device):
    """The stage's amp path (CUDA; on the CPU the same bfloat16 rounding, through the CPU's
    autocast): the images optimized under autocast, the objectives returned in float32, within
    5 % of float32's map by map on a small ReLU net's conv2 after 32 steps (measured 0.1-3.3 %: the
    two paths take different steps, as any two roundings do), and the autocast path really ran
    (not the same images). Deeper, where 32 steps leave the objective still climbing, the two
    paths drift apart by more (docs/feature-visualization.md)."""
    from nets import relu_net

    net = relu_net().float().to(device).eval()
    args = (net, "conv2", [0, 1, 2], (3, 32, 32), lambda p: (p - 0.5) * 4)
    full_pixels, full = visualize(*args, generators([1, 2, 3]), Recipe(steps=32))
    half_pixels, half = visualize(*args, generators([1, 2, 3]), Recipe(steps=32), autocast=torch.bfloat16)
    assert half.dtype == torch.float32 and (full > 0.3).all()
    assert ((half - full).abs() / full).max() < 0.05
    assert not torch.equal(half_pixels, full_pixels)


@pytest.mark.parametrize("name, config", [
    ("lenet5", {}), ("alexnet", {"normalize": "paper"}), ("alexnet", {"normalize": "standardize"}),
    ("vgg16", {"weights": "scratch"}), ("googlenet", {"weights": "scratch"})])
def test_from_pixels_is_the_eval_path_from_the_pixels_it_shows(name, config):
    """Feature visualization optimizes [0, 1] pixels and hands the net ``from_pixels`` of them: for
    stored uint8 images that is exactly what ``eval`` makes of them (the fast crop path, held to
    a per-image reference in the nets' own tests), taking the pixels ``display`` shows back."""
    from cnn_internals.models import NETS

    net = NETS[name]
    rng = np.random.default_rng(0)
    channels = net.input_size[0]
    size = 256 if channels == 3 else 28                     # the stored images: 256 px, or MNIST's 28
    shape = (3, size, size, 3) if channels == 3 else (3, size, size)
    images = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
    stats = {"mean_image": rng.uniform(0.3, 0.6, (size, size, 3)), "pca_eigvals": np.array([0.05, 0.01, 0.002]),
             "pca_eigvecs": np.linalg.qr(rng.normal(size=(3, 3)))[0], "channel_std": np.array([0.25, 0.24, 0.26])}
    inputs = net.inputs(stats if channels == 3 else None, config, "cpu")
    x = inputs.eval(images)
    pixels = inputs.display(x)
    torch.testing.assert_close(inputs.from_pixels(pixels), x, atol=1e-5, rtol=1e-5)
    if channels == 3:                                       # the centre crop's own pixels, by hand
        top = (size - 224) // 2
        torch.testing.assert_close(pixels, images[:, top:top + 224, top:top + 224].permute(0, 3, 1, 2) / 255,
                                   atol=1e-6, rtol=0)
