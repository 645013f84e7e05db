"""Feature visualization on AlexNet conv5: ours against Lucent's ``render_vis``, batched and one
unit a call, at equal steps (issue 21's peer comparison).

    python benchmarks/feature_vis.py [--maps 8] [--steps 64] [--rounds 3] [--device auto|cpu|cuda] [--amp] [--out FILE]

torch-lucent 0.1.8 (PyPI; git tag v0.1.8, commit b8bbd42, whose code is that of the repository's
HEAD: only README.md differs) pins kornia <= 0.4.1, which predates the torch here, so Lucent is
not imported: its ``render_vis`` is ported below line by line (lucent/optvis/render.py,
transform.py, param/spatial.py, param/color.py, objectives.py; kornia 0.4.1's ``translate``,
``get_rotation_matrix2d`` and ``warp_affine`` for its transforms), run as its README runs it
(``model.to(device).eval()``, nothing frozen; ``param.image(128)``, the default transforms,
preprocessing and optimizer). Per call:
- the image (``param.image(128, batch=B)``: fft=True, decorrelate=True, sd 0.01, decay_power 1):
  a (B, 3, 128, 65, 2) spectrum from N(0, 0.01^2), times 1 / max(frequency, 1/128), orthonormal
  ``irfftn``, divided by 4; colour: pixels = M x per position, M Lucid's ImageNet
  ``color_correlation_svd_sqrt`` divided by its largest column norm; then a sigmoid;
- every step ONE draw for the whole batch (np.random), ``standard_transforms`` in this order:
  pad 12 (constant 0.5); jitter 8 = kornia ``translate`` by (dx, dy), each from
  ``np.random.choice(8)``, keeping the size (an affine warp: bilinear, zeros outside; kornia 0.4.1
  normalizes pixel coordinates the align_corners=True way but samples with align_corners=False,
  so a shift of t pixels moves the image t * W / (W - 1) pixels, interpolated: ported as is);
  random_scale from 0.90, 0.92, .., 1.10: bilinear resize (align_corners=True) to ceil(s * side),
  then, for s < 1 only, zero (black) padding of ceil((side - ceil(s * side)) / 2) on every side,
  so the scale is kept below 1 (152 px becomes 153 at 0.9) and nothing is cropped above it (the
  image grows to ceil(s * 152)); random_rotate from -10..10 degrees and five more 0s (kornia's
  rotation about ((W - 1) / 2, (H - 1) / 2), same size, bilinear, zeros outside); jitter 4;
  then torchvision's ImageNet ``Normalize`` per image; then ``Upsample(224, bilinear,
  align_corners=True)``, which resizes every size back to 224 (and so undoes a scale above 1);
- the WHOLE model's forward (``model(transform_f(image_f()))``, through the classifier), with
  Lucent's forward hooks on every module (``hook_model``); the objective reads the hooked conv5
  output: ``channel("conv5", n)`` is -mean(output[:, n]) (batched: the sum over i of
  ``channel("conv5", n_i, batch=i)``, -mean(output[i:i+1, n_i])). The hook keeps a reference,
  not a copy, so with this AlexNet's relu5 in place (ours is, as torchvision's is) Lucent would
  read, and optimize, relu(conv5): a different objective. For the same objective as ours (conv5,
  before relu5) Lucent runs on a copy of the net with its ReLUs out of place (the same weights;
  an in-place ReLU saves memory, not time that shows here);
- ``loss.backward()`` with no ``inputs=``: the weights require grad, as in Lucent's README, so
  every step also computes (and accumulates) the weight gradients of conv1..conv5;
- Adam, lr 0.05, ``optimizer.step(closure)``; the image as an array at the last step.
No relu_gradient_override: ``render_vis`` 0.1.8 has no such parameter; Lucent's redirected ReLU
exists only inside its own InceptionV1 model (modelzoo/inceptionv1, ``redirected_ReLU=True``),
so on this net Lucent has none. Left out of the port: tqdm, the display (``show_image``), and
Lucent's hooks piling up over calls (it never removes them; here each call removes its own, so a
run's cost does not depend on how many ran before).

Workload: the project's AlexNet (random kaiming weights, eval mode; bench_common), conv5, the
first ``--maps`` maps, ``--steps`` steps each.
  ours                   engine.feature_vis.visualize: all maps in one batch, each image its own
                         transforms, at 224 px, Lucid's colour matrix (the colour step is
                         Lucent's), the redirected ReLU gradient (our default, Lucid's); the
                         forward stops at conv5 and the backward asks for the image's gradient
                         only (``inputs=``): our design, so the weights are frozen for it
  ours_no_redirect       the same without the redirected ReLU (Lucent's recipe has none)
  lucent_batched         Lucent's render_vis as above, all maps in one batch
  lucent_one_unit        the same, one call per map (its README's ``render_vis(model, "layer:n")``)
  lucent_batched_frozen  lucent_batched with the weights frozen (no weight gradients; still the
                         whole forward): kinder to Lucent than Lucent is, reported for
                         transparency only; the goals compare with the faithful runs
Timing: a short warm-up of every path first (``WARMUP_STEPS`` steps each, the same batch
sizes), then ``--rounds`` rounds, each timing every configuration once, ours and Lucent's
alternating; a configuration's time is the median of its rounds (one run of this benchmark on
a 2-core machine varied by 10 % from the next), the optimization (and, for Lucent, its final
image array), not the scoring. Every round gives the same images (same seeds).
Figures: seconds per map, and each map's objective on its final image untransformed, as the
net sees it (Lucent's: the 128-px image normalized and upsampled to 224): the mean of conv5's
map over its positions.
Goals (issue 21): ours' objective at least Lucent's within noise: the median over the maps of
ours less batched Lucent's at least minus Lucent's own noise, the median over the maps of
|batched - one unit a call| (the same recipe, other random draws); time per map no more than
batched Lucent's, and at least 2x less than one unit a call. (A ratio of objectives says little
where they are near zero or negative, as conv5's can be.)
``--amp``: ours again under bfloat16 autocast (visualize.<net>.amp), its objectives against ours
in float32, map by map (the rule for switching it on: every map within 1 %) and their mean over
the maps; and a float64 reference (ours with the model, image and input in float64): how far
float32's per-map objectives are from it, the noise floor of rounding alone against which
bfloat16's change is read. On the CPU this measures bfloat16's rounding only, not a GPU's
kernels or speed, so no time is reported there (and float64 takes a few times float32's time).
Figures go to benchmarks/results/feature_vis.json, or --out.
"""

import argparse
import copy
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from cnn_internals.engine.feature_vis import Recipe, objective, visualize
from cnn_internals.engine.hooks import forward_to

from bench_common import RESULTS, alexnet, describe, imagenet_normalized, machine, pick_device, synchronize, write_json

LAYER = "conv5"
WARMUP_STEPS = 2
LUCENT = "torch-lucent 0.1.8 (tag v0.1.8, commit b8bbd42) with kornia 0.4.1, ported (not imported)"
AMP_CPU = "CPU bfloat16 autocast: bfloat16's rounding, not a GPU's kernels or speed"
AMP_CUDA = "CUDA bfloat16 autocast"

# lucent/optvis/param/color.py
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]]).astype("float32")
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
# lucent/optvis/transform.py: standard_transforms' lists, normalize()'s constants
SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
ANGLES = list(range(-10, 11)) + 5 * [0]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
KORNIA_PI = torch.tensor(3.14159265358979323846)    # kornia.constants.pi (float32)

to_input = imagenet_normalized


# --- Lucent's param.image(w, batch=B): fft_image + to_valid_rgb(decorrelate=True) ---------------

def lucent_image(w, batch, generator, device, sd=0.01, decay_power=1):
    """([spectrum], image_f) as lucent.optvis.param.image(w, batch=batch) gives them; the initial
    spectrum from ``generator`` (Lucent: torch's global generator)."""
    h, ch = w, 3
    fy = np.fft.fftfreq(h)[:, None]                                   # spatial.rfft2d_freqs
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    spectrum = (torch.randn(batch, ch, *freqs.shape, 2, generator=generator) * sd).to(device).requires_grad_(True)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    scale = torch.tensor(scale).float()[None, None, ..., None].to(device)
    colour_t = torch.tensor(COLOR_CORRELATION_NORMALIZED.T).to(device)

    def image_f():
        x = torch.fft.irfftn(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho")
        x = x[:batch, :ch, :h, :w] / 4.0
        x = torch.matmul(x.permute(0, 2, 3, 1), colour_t).permute(0, 3, 1, 2)   # _linear_decorrelate_color
        return torch.sigmoid(x)
    return [spectrum], image_f


# --- kornia 0.4.1's warp_affine (defaults: bilinear, zeros, align_corners=False) -----------------

def kornia_warp_affine(src, M):
    """kornia.warp_affine(src, M, dsize=src's (H, W)) of kornia 0.4.1: M (B, 2, 3) maps source
    pixels to destination pixels; it is normalized with the align_corners=True convention
    (pixel 0 -> -1, pixel W - 1 -> 1, normal_transform_pixel) but sampled with
    align_corners=False, as kornia 0.4.1 does."""
    b, c, h, w = src.shape
    m3 = F.pad(M, [0, 0, 0, 1], "constant", value=0.0)               # convert_affinematrix_to_homography
    m3[..., -1, -1] += 1.0
    norm = torch.tensor([[2.0 / (w - 1.0), 0.0, -1.0], [0.0, 2.0 / (h - 1.0), -1.0], [0.0, 0.0, 1.0]])[None].to(m3)
    dst_norm_trans_src_norm = norm @ (m3 @ torch.inverse(norm))     # normalize_homography
    src_norm_trans_dst_norm = torch.inverse(dst_norm_trans_src_norm)
    grid = F.affine_grid(src_norm_trans_dst_norm[:, :2, :], [b, c, h, w], align_corners=False)
    return F.grid_sample(src, grid, align_corners=False, mode="bilinear", padding_mode="zeros")


def kornia_translate(image, translation):
    """kornia.geometry.transform.translate (0.4.1): translation (1, 2) pixels, broadcast over the batch."""
    matrix = torch.eye(3, device=translation.device, dtype=translation.dtype).repeat(translation.shape[0], 1, 1)
    dx, dy = torch.chunk(translation, chunks=2, dim=-1)
    matrix[..., 0, 2:3] += dx
    matrix[..., 1, 2:3] += dy
    return kornia_warp_affine(image, matrix[..., :2, :3].expand(image.shape[0], -1, -1))


def kornia_rotation_matrix2d(center, angle, scale):
    """kornia.get_rotation_matrix2d (0.4.1): (B, 2, 3), angle in degrees, counter-clockwise."""
    rad = angle * KORNIA_PI.to(angle.device).type(angle.dtype) / 180.0
    cos_a, sin_a = torch.cos(rad), torch.sin(rad)
    rotation = torch.stack([cos_a, sin_a, -sin_a, cos_a], dim=-1).view(*angle.shape, 2, 2)
    scaling = torch.zeros((2, 2), dtype=rotation.dtype).fill_diagonal_(1).repeat(rotation.size(0), 1, 1)
    scaled = rotation @ (scaling * scale.unsqueeze(dim=2).repeat(1, 1, 2))
    alpha, beta = scaled[:, 0, 0], scaled[:, 0, 1]
    x, y = center[..., 0], center[..., 1]
    M = torch.zeros(center.shape[0], 2, 3, dtype=center.dtype)
    M[..., 0:2, 0:2] = scaled
    M[..., 0, 2] = (1.0 - alpha) * x - beta * y
    M[..., 1, 2] = beta * x + (1.0 - alpha) * y
    return M


# --- lucent/optvis/transform.py ----------------------------------------------------------------

def lucent_standard_transforms(rng, device):
    """standard_transforms, its draws from ``rng`` (Lucent: np.random's global RandomState)."""
    def pad(x):                                                       # pad(12, mode="constant", constant_value=0.5)
        return F.pad(x, [12] * 4, mode="constant", value=0.5)

    def jitter(d):
        def inner(x):
            dx, dy = rng.choice(d), rng.choice(d)
            return kornia_translate(x, torch.tensor([[dx, dy]]).float().to(device))
        return inner

    def random_scale(x):
        scale = rng.choice(SCALES)
        shp = x.shape[2:]
        scale_shape = [int(np.ceil(scale * d)) for d in shp]
        pad_x = max(0, int(np.ceil((shp[1] - scale_shape[1]) / 2)))
        pad_y = max(0, int(np.ceil((shp[0] - scale_shape[0]) / 2)))
        upsample = torch.nn.Upsample(size=scale_shape, mode="bilinear", align_corners=True)
        return F.pad(upsample(x), [pad_y, pad_x] * 2)                 # zeros; none for scale >= 1

    def random_rotate(x):
        b, _, h, w = x.shape
        angle = torch.ones(b) * rng.choice(ANGLES)                    # degrees
        scale = torch.ones(b, 2)
        center = torch.ones(b, 2)
        center[..., 0] = (x.shape[3] - 1) / 2
        center[..., 1] = (x.shape[2] - 1) / 2
        M = kornia_rotation_matrix2d(center, angle, scale).to(device)
        return kornia_warp_affine(x.float(), M)

    return [pad, jitter(8), random_scale, random_rotate, jitter(4)]


def lucent_normalize(x):
    """transform.normalize(): torchvision's Normalize, image by image."""
    def normal(t):
        mean = torch.as_tensor(MEAN, dtype=t.dtype, device=t.device).view(-1, 1, 1)
        std = torch.as_tensor(STD, dtype=t.dtype, device=t.device).view(-1, 1, 1)
        return (t - mean) / std
    return torch.stack([normal(t) for t in x])


UPSAMPLE = torch.nn.Upsample(size=224, mode="bilinear", align_corners=True)


def lucent_input(pixels):
    """What the net sees of Lucent's final image untransformed: normalized, upsampled to 224."""
    return UPSAMPLE(lucent_normalize(pixels))


# --- lucent/optvis/render.py: hook_model, render_vis; objectives.channel ---------------------------

def hook_model(model):
    """(hook, handles): Lucent's forward hooks on every module, named as Lucent names them; each
    keeps a reference to its module's output (not a copy)."""
    features, handles = OrderedDict(), []

    def keep(name):
        def hook_fn(module, args, output):
            features[name] = output
        return hook_fn

    def hook_layers(net, prefix=()):
        for name, layer in net._modules.items():
            if layer is None:
                continue
            handles.append(layer.register_forward_hook(keep("_".join(prefix + (name,)))))
            hook_layers(layer, prefix + (name,))

    hook_layers(model)
    return (lambda layer: features[layer]), handles


def channel(layer, n_channel, batch=None):
    """objectives.channel: -mean of map n_channel (of image ``batch`` only, when given)."""
    def inner(hook):
        t = hook(layer)
        if isinstance(batch, int):
            t = t[batch:batch + 1]
        return -t[:, n_channel].mean()
    return inner


def lucent_run(model, units, steps, seed, device):
    """render_vis(model, objective, param_f=lambda: param.image(128, batch=B), thresholds=(steps,))
    for the ``units`` of LAYER ("conv5:n" for one unit, the sum of channel(LAYER, n_i, batch=i)
    for several): the final pixels (B, 3, 128, 128)."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.RandomState(seed)
    params, image_f = lucent_image(128, len(units), generator, device)
    optimizer = torch.optim.Adam(params, lr=5e-2)
    transforms = lucent_standard_transforms(rng, device)
    transforms.append(lucent_normalize)                               # preprocess=True, not InceptionV1
    image_shape = image_f().shape
    if image_shape[2] < 224 or image_shape[3] < 224:
        transforms.append(UPSAMPLE)

    def transform_f(x):
        for t in transforms:
            x = t(x)
        return x

    if len(units) == 1:
        objective_f = channel(LAYER, units[0])
    else:
        terms = [channel(LAYER, n, batch=i) for i, n in enumerate(units)]
        objective_f = lambda hook: sum(term(hook) for term in terms)  # noqa: E731 (Objective.sum)
    hook, handles = hook_model(model)
    images = []
    try:
        for i in range(1, steps + 1):
            def closure():
                optimizer.zero_grad()
                model(transform_f(image_f()))
                loss = objective_f(hook)
                loss.backward()
                return loss
            optimizer.step(closure)
            if i == steps:
                images.append(image_f().cpu().detach().numpy().transpose(0, 2, 3, 1))   # tensor_to_img_array
    finally:
        for handle in handles:
            handle.remove()
    return image_f().detach()


# --- the benchmark ------------------------------------------------------------------------------

def weights(model, requires_grad):
    for p in model.parameters():
        p.requires_grad_(requires_grad)
        p.grad = None


@torch.no_grad()
def measure(model, inputs, units):
    """conv5's objective of units[b] on inputs[b], on the CPU."""
    index = torch.as_tensor(units, device=inputs.device)
    return objective(forward_to(model, LAYER, inputs)[0], index).cpu()


def out_of_place(model):
    """A copy of ``model`` (the same weights) with every ReLU out of place: Lucent's hook on conv5
    then reads conv5 itself, not relu5's in-place result."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return twin


def once(fn, device):
    """(seconds, result) of one call."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def relative(a, ref):
    return (a - ref).abs() / ref.abs().clamp_min(1e-12)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each configuration's median is kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true",
                        help="also ours under bfloat16 autocast, against float32 and a float64 reference")
    parser.add_argument("--out", default=RESULTS / "feature_vis.json")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model = alexnet(device=device)
    info = machine(device)
    print(describe(info))
    units = list(range(args.maps))
    colour = torch.from_numpy(COLOR_CORRELATION_NORMALIZED)           # Lucent's matrix, for ours too
    gens = lambda: [torch.Generator().manual_seed(100 + u) for u in units]  # noqa: E731
    cuda_amp = args.amp and device.type == "cuda"

    def ours(steps, redirect=True, autocast=None):
        weights(model, False)
        return visualize(model, LAYER, units, (3, 224, 224), to_input, gens(),
                         Recipe(steps=steps, redirected_relu=redirect), colour, autocast=autocast, score=False)[0]

    lucent_model = out_of_place(model)

    def lucent(steps, frozen=False, one_unit=False, maps=None):
        weights(lucent_model, not frozen)                             # README: model.to(device).eval(), nothing frozen
        if one_unit:
            return torch.cat([lucent_run(lucent_model, [u], steps, u, device) for u in units[:maps]])
        return lucent_run(lucent_model, units, steps, 0, device)

    # (timed run, its warm-up), in the order they run: ours and Lucent's alternating
    runs = {"ours": (lambda: ours(args.steps), lambda: ours(WARMUP_STEPS)),
            "lucent_batched": (lambda: lucent(args.steps), lambda: lucent(WARMUP_STEPS)),
            "ours_no_redirect": (lambda: ours(args.steps, redirect=False), lambda: ours(WARMUP_STEPS, redirect=False)),
            "lucent_batched_frozen": (lambda: lucent(args.steps, frozen=True), lambda: lucent(WARMUP_STEPS, frozen=True)),
            "lucent_one_unit": (lambda: lucent(args.steps, one_unit=True),
                                lambda: lucent(WARMUP_STEPS, one_unit=True, maps=1))}
    if cuda_amp:
        runs["amp"] = (lambda: ours(args.steps, autocast=torch.bfloat16),
                       lambda: ours(WARMUP_STEPS, autocast=torch.bfloat16))
    for _, warm_up in runs.values():                                  # every path first, a few steps
        warm_up()
    rounds, pixels = {name: [] for name in runs}, {}
    for _ in range(args.rounds):
        for name, (run, _) in runs.items():
            took, pixels[name] = once(run, device)
            rounds[name].append(took)
    seconds = {name: float(np.median(times)) for name, times in rounds.items()}
    weights(model, False)
    weights(lucent_model, False)
    scores = {name: measure(model, (lucent_input if name.startswith("lucent") else to_input)(p.to(device)), units)
              for name, p in pixels.items()}
    ours_obj, batched = scores["ours"], scores["lucent_batched"]
    gap = (ours_obj - batched).median().item()
    noise = (batched - scores["lucent_one_unit"]).abs().median().item()
    timed_names = [n for n in runs if n != "amp"]
    result = {
        "config": {"layer": LAYER, "maps": args.maps, "steps": args.steps, "warmup_steps": WARMUP_STEPS,
                   "rounds": args.rounds,
                   "net": "AlexNet, random kaiming weights", "lucent": LUCENT},
        "machine": info,
        "seconds_per_map": {n: seconds[n] / args.maps for n in timed_names},
        "seconds_per_map_rounds": {n: [t / args.maps for t in rounds[n]] for n in timed_names},
        "objective": {n: scores[n].tolist() for n in timed_names if n != "ours_no_redirect"},
        "objective_no_redirect": scores["ours_no_redirect"].tolist(),
        "mean_objective": {n: scores[n].mean().item() for n in timed_names},
        "median_ours_less_lucent_batched_objective": gap,
        "lucent_noise": noise,
        "objective_within_noise": gap >= -noise,
        "time_ours_over_lucent_batched": seconds["ours"] / seconds["lucent_batched"],
        "time_ours_no_redirect_over_lucent_batched": seconds["ours_no_redirect"] / seconds["lucent_batched"],
        "time_ours_over_lucent_batched_frozen": seconds["ours"] / seconds["lucent_batched_frozen"],
        "speedup_over_one_unit": seconds["lucent_one_unit"] / seconds["ours"],
        "goals": {"objective_gap_at_least": "-lucent_noise", "time_ours_over_batched_at_most": 1.0,
                  "speedup_over_one_unit_at_least": 2.0},
    }
    s = seconds
    print(f"{args.maps} maps of {LAYER}, {args.steps} steps: ours {s['ours']:.1f} s (no redirect "
          f"{s['ours_no_redirect']:.1f} s), Lucent batched {s['lucent_batched']:.1f} s (weights frozen "
          f"{s['lucent_batched_frozen']:.1f} s), one unit a call {s['lucent_one_unit']:.1f} s; objective: median of "
          f"ours - Lucent batched {gap:+.3f} (Lucent's noise {noise:.3f}); time ours/batched "
          f"{s['ours'] / s['lucent_batched']:.2f}, "
          f"one-unit/ours {s['lucent_one_unit'] / s['ours']:.2f}")
    if args.amp:
        if not cuda_amp:                                              # the CPU: not timed
            pixels["amp"] = ours(args.steps, autocast=torch.bfloat16)
        amp = measure(model, to_input(pixels["amp"].to(device)), units)
        change = relative(amp, ours_obj)
        amp_mean_change = abs(amp.mean().item() - ours_obj.mean().item()) / max(abs(ours_obj.mean().item()), 1e-12)
        model64 = copy.deepcopy(model).double()                       # the float64 reference (not timed)
        pixels64 = visualize(model64, LAYER, units, (3, 224, 224), to_input, gens(), Recipe(steps=args.steps),
                             colour.double(), dtype=torch.float64, score=False)[0]
        ref = measure(model64, to_input(pixels64.to(device)), units)
        floor = relative(ours_obj.double(), ref)
        floor_mean = abs(ours_obj.double().mean().item() - ref.mean().item()) / max(abs(ref.mean().item()), 1e-12)
        result["amp"] = {
            "note": AMP_CUDA if cuda_amp else AMP_CPU, "objective": amp.tolist(),
            "relative_change": change.tolist(), "worst_relative_change": change.max().item(),
            "median_relative_change": change.median().item(), "within_1_percent": bool((change <= 0.01).all()),
            "mean_objective": {"float32": ours_obj.mean().item(), "bfloat16_autocast": amp.mean().item()},
            "mean_objective_relative_change": amp_mean_change,
            "float64_reference": {
                "objective": ref.tolist(), "mean_objective": ref.mean().item(),
                "float32_relative_change": floor.tolist(), "worst_float32_relative_change": floor.max().item(),
                "median_float32_relative_change": floor.median().item(),
                "float32_mean_objective_relative_change": floor_mean},
        }
        if cuda_amp:
            result["amp"].update(seconds_per_map=seconds["amp"] / args.maps, speedup=seconds["ours"] / seconds["amp"])
        speed = f"{seconds['amp']:.1f} s ({seconds['ours'] / seconds['amp']:.2f}x); " if cuda_amp else ""
        print(f"{result['amp']['note']}: {speed}objective change worst {100 * change.max().item():.2f} %, median "
              f"{100 * change.median().item():.2f} % (rule: every map within 1 %), of the mean over the maps "
              f"{100 * amp_mean_change:.2f} %; float32 against float64: worst {100 * floor.max().item():.2f} %, "
              f"median {100 * floor.median().item():.2f} %, of the mean {100 * floor_mean:.2f} %")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
