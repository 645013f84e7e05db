"""Feature visualization on AlexNet conv5: ours against Lucent's recipe, batched and one unit a
call, at equal steps (issue 21's peer comparison).

    python benchmarks/feature_vis.py [--maps 8] [--steps 64] [--device auto|cpu|cuda] [--amp] [--out FILE]

torch-lucent (PyPI 0.1.8) pins kornia <= 0.4.1, which predates the torch here, so Lucent's
recipe is written out below as Lucent runs it (lucent/optvis/param, transform.py, render.py),
not imported: a 128-px Fourier image (1/frequency, decay 1, sd 0.01, divided by 4), colour
decorrelated by Lucid's fixed ImageNet matrix, sigmoid; per step ONE draw of the standard
transforms for the whole batch (pad 12 with 0.5, jitter 8, scale from 0.9..1.1, rotate from
-10..10 and five 0s, jitter 4), then upsampled to the net's 224 (bilinear, align_corners), the
net's normalization, Adam lr 0.05. Objectives: the sum of ``channel(layer, n_i, batch=i)``, the
mean of map n_i over its positions, for image i.

Workload: the project's AlexNet (random kaiming weights, eval mode; bench_common), conv5, the
first ``--maps`` maps, ``--steps`` steps each.
  ours              engine.feature_vis.visualize: all maps in one batch, each image its own
                    transforms, at 224 px, colour from a PCA like the stats stage's (Lucid's
                    matrix here, so the colour step is the same)
  lucent batched    Lucent's recipe, all maps in one batch (Lucent's ``batch=i`` terms summed)
  lucent one-unit   Lucent's recipe, one call per map (how its notebooks call it)
Figures: seconds per map, and each map's objective on its final image untransformed, as the
net sees it (Lucent's: the 128-px image upsampled to 224). Goals (issue 21): ours' objective at
least Lucent's (within noise: the median ratio of ours to batched Lucent's >= 0.95), time per
map no more than batched Lucent's, and at least 2x less than one unit a call.
``--amp`` (CUDA): ours again under bfloat16 autocast (visualize.<net>.amp), its objectives
against ours in float32, map by map: the rule for switching it on is every map within 1 %.
Ours runs with the redirected ReLU gradient, our default and Lucid's; Lucent's ``render_vis``
takes ``relu_gradient_override`` but does nothing with it, so its recipe here has none, and ours
is timed once more without it (``ours_no_redirect``: the same recipe as Lucent's).
Figures go to benchmarks/results/feature_vis.json, or --out.
"""

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from cnn_internals.engine.feature_vis import Recipe, objective, visualize
from cnn_internals.engine.hooks import forward_to

from bench_common import RESULTS, alexnet, describe, imagenet_normalized, machine, pick_device, timed, write_json

LAYER = "conv5"
# Lucid's (and Lucent's) colour_correlation_svd_sqrt, measured on ImageNet
LUCID_COLOUR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
ANGLES = list(range(-10, 11)) + 5 * [0]

to_input = imagenet_normalized


def lucent_image(batch, size, generator, device):
    """Lucent's fft_image + to_valid_rgb(decorrelate=True, sigmoid=True) for ``batch`` images."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[: size // 2 + 1]
    scale = torch.tensor(1.0 / np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / size), dtype=torch.float32)[None, None, ..., None]
    spectrum = (torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator) * 0.01).to(device).requires_grad_(True)
    matrix = LUCID_COLOUR / LUCID_COLOUR.norm(dim=0).max()

    def image():
        x = torch.fft.irfftn(torch.view_as_complex(scale.to(device) * spectrum), s=(size, size), norm="ortho") / 4.0
        x = torch.einsum("ij,bjhw->bihw", matrix.to(device), x)
        return torch.sigmoid(x)
    return spectrum, image


def lucent_transforms(x, rng):
    """Lucent's standard_transforms, one draw for the whole batch, sizes changing as in Lucent."""
    x = F.pad(x, (12, 12, 12, 12), mode="constant", value=0.5)
    for d in (8,):
        ox, oy = rng.choice(d), rng.choice(d)
        x = x[:, :, ox:ox + x.shape[2] - d, oy:oy + x.shape[3] - d]
    s = rng.choice(SCALES)
    x = F.interpolate(x, size=(math.ceil(s * x.shape[2]), math.ceil(s * x.shape[3])), mode="bilinear",
                      align_corners=False)
    angle = math.radians(rng.choice(ANGLES))
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="zeros", align_corners=False)
    d = 4
    ox, oy = rng.choice(d), rng.choice(d)
    return x[:, :, ox:ox + x.shape[2] - d, oy:oy + x.shape[3] - d]


def lucent_run(model, units, steps, seed, device):
    """Lucent's render_vis for the ``units`` of LAYER, one batch: (final objectives,)."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    spectrum, image = lucent_image(len(units), 128, generator, device)
    optimizer = torch.optim.Adam([spectrum], lr=0.05)
    index = torch.as_tensor(units, device=device)
    upsample = torch.nn.Upsample(size=224, mode="bilinear", align_corners=True)
    for _ in range(steps):
        optimizer.zero_grad()
        x = to_input(upsample(lucent_transforms(image(), rng)))
        loss = -objective(forward_to(model, LAYER, x)[0], index).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return objective(forward_to(model, LAYER, to_input(upsample(image())))[0], index).cpu()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="CUDA: also ours under bfloat16 autocast")
    parser.add_argument("--out", default=RESULTS / "feature_vis.json")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model = alexnet(device=device)
    for p in model.parameters():
        p.requires_grad_(False)          # no weight gradients for Lucent's runs either (ours asks for the image's only)
    info = machine(device)
    print(describe(info))
    units = list(range(args.maps))
    colour = LUCID_COLOUR / LUCID_COLOUR.norm(dim=0).max()     # what colour_matrix makes of a PCA, Lucid's
    gens = lambda: [torch.Generator().manual_seed(100 + u) for u in units]  # noqa: E731

    ours_s, (_, ours) = timed(lambda: visualize(model, LAYER, units, (3, 224, 224), to_input, gens(),
                                                Recipe(steps=args.steps), colour), 1, device)
    plain_s, (_, plain) = timed(lambda: visualize(model, LAYER, units, (3, 224, 224), to_input, gens(),
                                                  Recipe(steps=args.steps, redirected_relu=False), colour), 1, device)
    batched_s, batched = timed(lambda: lucent_run(model, units, args.steps, 0, device), 1, device)
    one_s, one = timed(lambda: torch.cat([lucent_run(model, [u], args.steps, u, device) for u in units]), 1, device)
    ratio = (ours / batched).median().item()
    result = {
        "config": {"layer": LAYER, "maps": args.maps, "steps": args.steps, "net": "AlexNet, random kaiming weights"},
        "machine": info,
        "seconds_per_map": {"ours": ours_s / args.maps, "ours_no_redirect": plain_s / args.maps,
                            "lucent_batched": batched_s / args.maps,
                            "lucent_one_unit": one_s / args.maps},
        "objective": {"ours": ours.tolist(), "lucent_batched": batched.tolist(), "lucent_one_unit": one.tolist()},
        "median_ours_over_lucent_batched_objective": ratio,
        "time_ours_over_lucent_batched": ours_s / batched_s,
        "time_ours_no_redirect_over_lucent_batched": plain_s / batched_s,
        "objective_no_redirect": plain.tolist(),
        "speedup_over_one_unit": one_s / ours_s,
        "goals": {"objective_ratio_at_least": 0.95, "time_ours_over_batched_at_most": 1.0,
                  "speedup_over_one_unit_at_least": 2.0},
    }
    print(f"{args.maps} maps of {LAYER}, {args.steps} steps: ours {ours_s:.1f} s, Lucent batched {batched_s:.1f} s, "
          f"one unit a call {one_s:.1f} s; objective median ours/Lucent batched {ratio:.2f}; "
          f"time ours/batched {ours_s / batched_s:.2f}, one-unit/ours {one_s / ours_s:.2f}")
    if args.amp:
        if device.type != "cuda":
            parser.error("--amp needs --device cuda")
        amp_s, (_, amp) = timed(lambda: visualize(model, LAYER, units, (3, 224, 224), to_input, gens(),
                                                  Recipe(steps=args.steps), colour, autocast=torch.bfloat16), 1, device)
        change = ((amp - ours).abs() / ours.abs().clamp_min(1e-12))
        result["amp"] = {"seconds_per_map": amp_s / args.maps, "objective": amp.tolist(),
                         "relative_change": change.tolist(), "worst_relative_change": change.max().item(),
                         "within_1_percent": bool((change <= 0.01).all()), "speedup": ours_s / amp_s}
        print(f"bfloat16 autocast: {amp_s:.1f} s ({ours_s / amp_s:.2f}x), objective change worst "
              f"{100 * change.max().item():.2f} % (rule: every map within 1 %)")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
