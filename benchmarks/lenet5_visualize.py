"""The figures behind docs/feature-visualization.md's LeNet-5 section: why some optimized images
lose to the best mined digit, and how far float32 images move with their batch.

    python benchmarks/lenet5_visualize.py      # from the project root, after `dvc repro`

Reads the committed run (params.yaml's visualize.lenet5, models/lenet5.pt, the mined table and
data/visualized/lenet5/objectives.json). For every unit whose stored image does not beat the best
of its mined digits, and the best-scoring winner of the same layer for reference:
  blank, grey          the objective of a page all background (what the digits' margins are) and
                       of the uniform grey the recipe starts from (sigmoid(0) = 0.5 everywhere)
  digit, shifted       the best mined digit as mined, and moved 1 px right and down (background
                       in from the edge): how much the objective depends on the exact position
  default              the stage's recipe and seeds again, these units in one batch of their own:
                       the committed objectives up to float32's batch effect (within 3e-4 here)
  no transforms        the same without pad, jitter, scale and rotation
  2048 steps           the recipe with 4x the steps, with and without the transforms
Objectives as the stage computes them: on the image as stored (uint8). The same thread count as
the stage (its CPU pinning). About a minute on 2 idle cores.
And the batch: F6's units 3 and 7 (and classes 3 and 7) optimized each alone (a batch of one)
against the committed images, optimized in one batch with all the layer's others: in float64
the two are equal (tests/test_feature_vis.py); in float32 the kernels' summation order follows
the batch's size. Reported: how many uint8 pixels differ and by how much at most.
Figures go to benchmarks/results/lenet5_visualize.json, or --out.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))          # the stage's own seeds, recipe and mined best
from visualize import best_mined, recipe_of, seed_of  # noqa: E402 (its _bootstrap puts src/ on sys.path)

from cnn_internals.core.params import load_params  # noqa: E402
from cnn_internals.data.loader import gather  # noqa: E402
from cnn_internals.engine.feature_vis import objectives_in_chunks, unit_objective, visualize  # noqa: E402
from cnn_internals.models import get_net  # noqa: E402
from cnn_internals.pipeline.artifacts import (  # noqa: E402
    load_mined,
    load_model,
    load_split,
    load_stats,
    load_visualized,
    net_inputs,
    visualized_objectives_path,
)
from cnn_internals.pipeline.config import read_visualize  # noqa: E402
from cnn_internals.pipeline.stage import device_for, on_its_dataset  # noqa: E402

from bench_common import RESULTS, machine, write_json  # noqa: E402

STILL = {"pad": 0.0, "jitter": 0.0, "jitter2": 0.0, "rotate": 0.0, "scale": (1.0, 1.0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=RESULTS / "lenet5_visualize.json")
    args = parser.parse_args(argv)
    params = load_params(ROOT / "params.yaml")
    net = on_its_dataset(get_net("lenet5"), params)
    p = read_visualize(params, net)
    device = device_for(net, params)
    model, config = load_model(net, device)
    inputs = net_inputs(net, config, device, load_stats(net.dataset))
    split_name, tables = load_mined(net)
    split = load_split(net, split_name)
    committed = json.loads(visualized_objectives_path(net).read_text())["layers"]
    recipe = recipe_of(p)

    def optimized_pixels(name, units, r):
        """uint8 (len(units), C, H, W) as the stage stores them."""
        generators = [torch.Generator().manual_seed(seed_of(p.seed, name, u)) for u in units]
        pixels, _ = visualize(model, net.module_path(name), units, net.input_size, inputs.from_pixels, generators, r,
                              None, score=False)
        return pixels.mul(255).round().clamp(0, 255).to(torch.uint8)

    def optimized(name, units, r):
        path = net.module_path(name)
        as_stored = optimized_pixels(name, units, r)
        return objectives_in_chunks(model, path, torch.as_tensor(units),
                                    lambda rows: inputs.from_pixels(as_stored[rows].float() / 255), 256).tolist()

    def page(path, units, level):
        x = inputs.from_pixels(torch.full((len(units), *net.input_size), level))
        with torch.no_grad():
            return unit_objective(model, path, x, torch.as_tensor(units)).tolist()

    def digits(name, path, units):
        """(best mined digit's objective, the same digit shifted 1 px right and down)"""
        k = tables[name]["images"].shape[1]
        best, shifted = [], []
        background = inputs.from_pixels(torch.zeros(1, *net.input_size))[0, 0, 0, 0]
        for unit in units:
            x = inputs.eval(gather(split.images, tables[name]["images"][unit].numpy()))
            with torch.no_grad():
                values = unit_objective(model, path, x, torch.full((k,), unit))
                one = x[values.argmax()][None]
                moved = torch.full_like(one, float(background))
                moved[..., 1:, 1:] = one[..., :-1, :-1]
                best.append(float(values.max()))
                shifted.append(float(unit_objective(model, path, moved, torch.tensor([unit]))[0]))
        return best, shifted

    layers = {}
    for name, found in committed.items():
        losers = [u for u, (a, b) in enumerate(zip(found["objective"], found["best_mined"])) if a <= b]
        if not losers:
            continue
        winners = [u for u in range(len(found["objective"])) if u not in losers]
        reference = max(winners, key=lambda u: found["objective"][u] - found["best_mined"][u]) if winners else None
        units = losers + ([reference] if reference is not None else [])
        path = net.module_path(name)
        best, shifted = digits(name, path, units)
        rows = {
            "units": units, "reference": reference,
            "committed": [found["objective"][u] for u in units],
            "best_mined_committed": [found["best_mined"][u] for u in units],
            "mined_recomputed": best_mined(model, path, inputs, split, tables[name], units, 256).tolist(),
            "blank": page(path, units, 0.0), "grey": page(path, units, 0.5),
            "digit": best, "digit_shifted_1px": shifted,
            "default": optimized(name, units, recipe),
            "no_transforms": optimized(name, units, dataclasses.replace(recipe, **STILL)),
            "steps_2048": optimized(name, units, dataclasses.replace(recipe, steps=2048)),
            "steps_2048_no_transforms": optimized(name, units, dataclasses.replace(recipe, steps=2048, **STILL)),
        }
        layers[name] = rows
        print(f"{name}: losers {losers}, reference {reference}")
        for key in ("blank", "grey", "digit", "digit_shifted_1px", "default", "no_transforms", "steps_2048",
                    "steps_2048_no_transforms"):
            print(f"  {key:26s}" + "  ".join(f"{v:9.3f}" for v in rows[key]))
    batch = {}
    for name in ("f6", "classes"):
        units = [3, 7]
        committed_pixels = torch.from_numpy(load_visualized(net, name))[units].to(torch.int16)
        alone = torch.cat([optimized_pixels(name, [u], recipe) for u in units]).to(torch.int16)
        diff = (alone - committed_pixels).abs()
        batch[name] = {"units": units, "pixels": diff[0].numel(), "differing_pixels": [int((d > 0).sum()) for d in diff],
                       "largest_step": int(diff.max())}
        print(f"{name} units {units} alone against the committed batch: {batch[name]['differing_pixels']} of "
              f"{diff[0].numel()} pixels differ, by at most {batch[name]['largest_step']} of 255")
    write_json(args.out, {"machine": machine(device), "split": split_name, "steps": p.steps, "layers": layers,
                          "batch": batch})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
