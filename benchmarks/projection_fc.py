"""Projection of AlexNet's fully connected units and classes: ours against Captum and against the
plain PyTorch floor, in one run (issue 22: FC units batched like conv units, rows in chunks).

    python benchmarks/projection_fc.py [--rows 54] [--repeats 3] [--out FILE]

Workload. The project's random-weight AlexNet (bench_common; float32, eval mode, in-place
ReLUs, LRN, overlapping pools). For each of fc6 (``lin1``), fc7 (``lin2``) and the classes (the
scores the forward returns): ``--rows`` rows (54 = the render stage's 6 units x 9 images), every
row its own random 224x224 image and its own unit (fixed seeds). Each row is the backward pass of
its one unit to the input pixels, guided backprop.

Contenders, all giving the same (rows, 3, 224, 224) tensor:
  ours            engine.projection.project(model, layer, images, units, method="guided_backprop")
                  (layer None for the classes) at its default chunk
  captum batched  NeuronGuidedBackprop(model, layer).attribute(chunk, neuron_selector=lambda out:
                  out[arange(n), units]) over chunks of the same size (for the classes:
                  GuidedBackprop(model).attribute(chunk, target=units))
  floor           one torch.autograd.grad of the plain model's selected units w.r.t. the input per
                  chunk: the plain gradient, no rules, none of our code
Figures: seconds (median of --repeats after one warm-up), ours / captum and ours / floor per
depth and over the three, and ||ours - captum|| / ||captum|| per depth (the same numbers, or the
ratio means nothing). Goals on the totals: ours / captum <= 1.05 (parity: see GOALS), ours / floor
<= 1.15 (the conv benchmark's, benchmarks/projection.py). Written to benchmarks/results/projection_fc.json or --out.
"""

import argparse
import warnings

import torch
from captum.attr import GuidedBackprop, NeuronGuidedBackprop

from cnn_internals.engine.hooks import eval_mode
from cnn_internals.engine.projection import default_chunk, project

from bench_common import INPUT_SHAPE, RESULTS, alexnet, describe, machine, rel_err, timed, write_json

DEPTHS = {"fc6": "lin1", "fc7": "lin2", "classes": None}     # the deep visualization toolbox's names
# Parity with Captum, within the noise of these shared cores (runs of the same call differ by
# up to 5 %): the conv benchmark's ours <= Captum comes from stopping the forward and backward
# passes at the layer, and here the layer is one Linear short of the scores, or the scores.
GOALS = {"ours_over_captum": 1.05, "ours_over_floor": 1.15}


def workload(model, path, rows, seed):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(rows, *INPUT_SHAPE, generator=gen)
    with torch.no_grad():
        width = (model(images[:1]) if path is None else _output(model, path, images[:1])).shape[1]
    return images, torch.randint(0, width, (rows,), generator=gen)


def _output(model, path, x):
    from cnn_internals.engine.hooks import forward_to

    return forward_to(model, path, x)[0]


def captum_batched(model, path, images, units, chunk):
    out = torch.empty_like(images)
    method = GuidedBackprop(model) if path is None else NeuronGuidedBackprop(model, model.get_submodule(path))
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        index = units[part]
        if path is None:
            out[part] = method.attribute(images[part], target=index)
        else:
            out[part] = method.attribute(images[part], neuron_selector=lambda acts, index=index:
                                         acts[torch.arange(len(index)), index])
    return out


def floor(model, path, images, units, chunk):
    out = torch.empty_like(images)
    with eval_mode(model), torch.enable_grad():
        for start in range(0, len(images), chunk):
            part = slice(start, start + chunk)
            x = images[part].detach().requires_grad_(True)
            acts = model(x) if path is None else _output(model, path, x)
            (out[part],) = torch.autograd.grad(acts[torch.arange(len(x)), units[part]].sum(), x)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=54)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=RESULTS / "projection_fc.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module=r"captum(\.|$)")
    device = torch.device("cpu")
    model = alexnet(device=device)
    info = machine(device)
    print(describe(info))
    results, totals = {}, {"ours": 0.0, "captum": 0.0, "floor": 0.0}
    for seed, (depth, path) in enumerate(DEPTHS.items()):
        images, units = workload(model, path, args.rows, seed)
        chunk = default_chunk(images, len(images))
        ours_s, ours = timed(lambda: project(model, path, images, units, method="guided_backprop"), args.repeats,
                             device)
        captum_s, theirs = timed(lambda: captum_batched(model, path, images, units, chunk), args.repeats, device)
        floor_s, _ = timed(lambda: floor(model, path, images, units, chunk), args.repeats, device)
        gradient = project(model, path, images, units, method="gradient")
        results[depth] = {"module": path, "rows": args.rows, "chunk": chunk, "ours_s": round(ours_s, 4),
                          "captum_s": round(captum_s, 4), "floor_s": round(floor_s, 4),
                          "ours_over_captum": round(ours_s / captum_s, 4), "ours_over_floor": round(ours_s / floor_s, 4),
                          "rel_err_ours_vs_captum": rel_err(ours, theirs),
                          "rel_err_guided_vs_gradient": rel_err(ours, gradient)}
        for name, t in (("ours", ours_s), ("captum", captum_s), ("floor", floor_s)):
            totals[name] += t
        r = results[depth]
        print(f"{depth:8} ours {ours_s:7.3f} s  captum {captum_s:7.3f} s  floor {floor_s:7.3f} s  "
              f"ours/captum {r['ours_over_captum']:.2f}  ours/floor {r['ours_over_floor']:.2f}  "
              f"rel.err vs captum {r['rel_err_ours_vs_captum']:.1e} (guided vs gradient "
              f"{r['rel_err_guided_vs_gradient']:.2f})")
    ratios = {"ours_over_captum": round(totals["ours"] / totals["captum"], 4),
              "ours_over_floor": round(totals["ours"] / totals["floor"], 4)}
    met = {key: ratios[key] <= goal for key, goal in GOALS.items()}
    print(f"total: ours {totals['ours']:.3f} s, captum {totals['captum']:.3f} s, floor {totals['floor']:.3f} s; "
          f"ours/captum {ratios['ours_over_captum']:.2f} (goal <= {GOALS['ours_over_captum']}), "
          f"ours/floor {ratios['ours_over_floor']:.2f} (goal <= {GOALS['ours_over_floor']})")
    write_json(args.out, {"config": {"rows": args.rows, "repeats": args.repeats, "method": "guided_backprop"},
                          "machine": info, "depths": results, "total_s": {k: round(v, 4) for k, v in totals.items()},
                          "ratios": ratios, "goals": GOALS, "goals_met": met})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
