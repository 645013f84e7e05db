"""Render workload of the projection engine on AlexNet: ours against Captum and against the plain
PyTorch floor, in one run.

    python benchmarks/projection.py [--quick] [--device auto|cpu|cuda] [--out FILE]

Workload. A random-weight AlexNet (benchmarks/bench_common.py; float32, eval mode, 224x224
inputs). For each of conv1..conv5: 54 rows = 6 channels x 9 images, every row its own random
image, its unit at a random valid (row, col) of the layer's output (fixed seeds), i.e. what
rendering a 6-channel, top-9 figure costs. Each row is the backward pass of its one unit to the
input pixels.

Contenders, all producing the same (54, 3, 224, 224) tensor per layer:
  ours             cnn_internals.engine.projection.project(model, layer, images, ch, rows, cols,
                   "guided_backprop") at its default chunk (default_chunk), and a sweep of
                   chunk sizes to show where the default stands; "gradient" at the default too.
  captum batched   NeuronGuidedBackprop(model, layer).attribute(images[part],
                   neuron_selector=lambda out: out[arange(n), ch, rows, cols]) over chunks,
                   the same sweep; the best chunk per layer is the figure.
  captum per-neuron  how peer tools call it: one attribute(image[None], neuron_selector=(c, i, j))
                   per row.
  floor            plain PyTorch: an nn.Sequential slice up to and including the layer (none of
                   our code, no hooks) and one torch.autograd.grad w.r.t. the input per chunk,
                   i.e. the plain gradient; the best chunk per layer is the figure.
All run the same model object (in-place ReLUs: Captum's neuron methods keep a clone of the
layer's output, so that is safe, and the equality checks below confirm it on every run). Captum
runs the whole model, classifier included; ours and the floor stop at the layer.

Checks (printed, and in the JSON): ours vs Captum batched guided backprop and ours vs Captum
per-neuron on the rows it ran, ||a - b|| / ||b|| per layer; ours "gradient" vs the floor. Also
shown: how far ours guided backprop is from ours gradient, so that near-zero errors mean
something (at conv1 no ReLU lies below the unit, and the two are equal there by definition).

Goals, on the totals over the five layers:
  ours / floor                      <= 1.15   (guided backprop vs the plain gradient's best chunk)
  ours / captum batched (best)      <= 1.0
  captum per-neuron / ours          reported (the speed-up over the usual peer usage)

Timing: time.perf_counter, one warm-up call, the median of --repeats calls (3), with
torch.cuda.synchronize around each call on CUDA. The full run takes about 15 minutes on 2 CPU
cores (--repeats 1: about half that). The figures go to benchmarks/results/projection.json
(sorted keys) or --out.

--quick (smoke test, about half a minute on 2 cores): conv1 and conv2 only, two swept chunk
sizes (8, 16), one repeat, and 6 rows per layer on the per-neuron path (its time is scaled to
54 rows and marked so). Quick figures are written only where --out says.
"""

import argparse
import warnings

import torch
from captum.attr import NeuronGuidedBackprop

from cnn_internals.engine.projection import default_chunk, project

from bench_common import (
    CONV_LAYERS,
    INPUT_SHAPE,
    RESULTS,
    alexnet,
    describe,
    machine,
    pick_device,
    rel_err,
    timed,
    truncated,
    write_json,
)

CHANNELS, IMAGES_PER_CHANNEL = 6, 9
ROWS = CHANNELS * IMAGES_PER_CHANNEL
CHUNKS = (1, 4, 8, 16, 27, 54)
QUICK_CHUNKS = (8, 16)
QUICK_LAYERS = ("conv1", "conv2")
QUICK_PER_NEURON_ROWS = 6
GOALS = {"ours_over_floor": 1.15, "ours_over_captum_batched_best": 1.0}


def workload(model, layer, seed, device):
    """54 distinct random images and one unit per row: 6 random channels, 9 rows each, each
    at a random valid position of ``layer``'s output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _, c, h, w = truncated(model, layer)(torch.zeros(1, *INPUT_SHAPE, device=device)).shape
    images = torch.randn(ROWS, *INPUT_SHAPE, generator=g)
    channels = torch.randperm(c, generator=g)[:CHANNELS].repeat_interleave(IMAGES_PER_CHANNEL)
    rows, cols = torch.randint(h, (ROWS,), generator=g), torch.randint(w, (ROWS,), generator=g)
    return images.to(device), channels.to(device), rows.to(device), cols.to(device)


def plain_gradient(trunk, images, channels, rows, cols, chunk):
    """The floor: plain forward to the layer, one autograd.grad w.r.t. the input per chunk."""
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        x = images[part].detach().requires_grad_(True)
        acts = trunk(x)
        units = acts[torch.arange(len(x), device=x.device), channels[part], rows[part], cols[part]]
        (out[part],) = torch.autograd.grad(units.sum(), x)
    return out


def captum_batched(attribution, images, channels, rows, cols, chunk):
    """Captum's best batched use: one attribute call per chunk, a callable picking each row's unit."""
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        index = torch.arange(len(images[part]), device=images.device)

        def select(acts, part=part, index=index):
            return acts[index, channels[part], rows[part], cols[part]]

        out[part] = attribution.attribute(images[part], neuron_selector=select)
    return out


def captum_per_neuron(attribution, images, units, which):
    """One attribute call per row, the unit as a (channel, row, col) tuple."""
    return torch.cat([attribution.attribute(images[b:b + 1], neuron_selector=units[b]) for b in which])


def bench_layer(layer, seed, model, chunks, per_neuron_rows, repeats, device):
    images, channels, rows, cols = workload(model, layer, seed, device)
    default = default_chunk(images, ROWS)
    trunk = truncated(model, layer)
    attribution = NeuronGuidedBackprop(model, dict(model.named_modules())[layer])
    units = list(zip(channels.tolist(), rows.tolist(), cols.tolist()))
    which = list(range(0, ROWS, ROWS // per_neuron_rows))[:per_neuron_rows]

    ours = {}
    for chunk in sorted(set(chunks) | {default}):
        ours[chunk], ours_result = timed(
            lambda: project(model, layer, images, channels, rows, cols, "guided_backprop", chunk), repeats, device)
        if chunk == default:
            ours_default_result = ours_result
    ours_gradient, ours_gradient_result = timed(
        lambda: project(model, layer, images, channels, rows, cols, "gradient", default), repeats, device)
    captum, floor = {}, {}
    for chunk in chunks:
        captum[chunk], captum_result = timed(
            lambda: captum_batched(attribution, images, channels, rows, cols, chunk), repeats, device)
        floor[chunk], floor_result = timed(
            lambda: plain_gradient(trunk, images, channels, rows, cols, chunk), repeats, device)
    per_neuron, per_neuron_result = timed(
        lambda: captum_per_neuron(attribution, images, units, which), repeats, device)

    captum_best, floor_best = min(captum, key=captum.get), min(floor, key=floor.get)
    return {
        "default_chunk": default,
        "ours_guided_backprop_s": ours[default],
        "ours_guided_backprop_sweep_s": {str(c): t for c, t in ours.items()},
        "ours_best_chunk": min(ours, key=ours.get),
        "ours_gradient_s": ours_gradient,
        "captum_batched_sweep_s": {str(c): t for c, t in captum.items()},
        "captum_batched_best_chunk": captum_best,
        "captum_batched_best_s": captum[captum_best],
        "captum_per_neuron_rows_timed": len(which),
        "captum_per_neuron_s": per_neuron * ROWS / len(which),   # scaled to all 54 rows
        "floor_sweep_s": {str(c): t for c, t in floor.items()},
        "floor_best_chunk": floor_best,
        "floor_best_s": floor[floor_best],
        "rel_err_ours_vs_captum_batched": rel_err(ours_default_result, captum_result),
        "rel_err_ours_vs_captum_per_neuron": rel_err(ours_default_result[which], per_neuron_result),
        "rel_err_ours_gradient_vs_floor": rel_err(ours_gradient_result, floor_result),
        # not an error: shows the two methods differ, so the zero-ish errors above mean something
        "rel_diff_guided_backprop_vs_gradient": rel_err(ours_default_result, ours_gradient_result),
    }


def print_tables(layers, results, chunks):
    print(f"\nper layer, seconds for {ROWS} rows (best chunk in brackets):")
    print(f"{'layer':6} {'ours GB':>14} {'ours grad':>10} {'floor':>14} {'captum batch':>14} {'captum/neuron':>14}"
          f" {'ours/floor':>10} {'ours/capt':>9}   rel.err vs captum, per-neuron; grad vs floor "
          "(GB vs grad differ by)")
    for layer in layers:
        r = results[layer]
        scaled = "" if r["captum_per_neuron_rows_timed"] == ROWS else "*"
        print(f"{layer:6} {r['ours_guided_backprop_s']:8.4f} [{r['default_chunk']:2d}] {r['ours_gradient_s']:10.4f} "
              f"{r['floor_best_s']:8.4f} [{r['floor_best_chunk']:2d}] "
              f"{r['captum_batched_best_s']:8.4f} [{r['captum_batched_best_chunk']:2d}] "
              f"{r['captum_per_neuron_s']:13.4f}{scaled or ' '} "
              f"{r['ours_guided_backprop_s'] / r['floor_best_s']:10.2f} "
              f"{r['ours_guided_backprop_s'] / r['captum_batched_best_s']:9.2f}   "
              f"{r['rel_err_ours_vs_captum_batched']:.1e}, {r['rel_err_ours_vs_captum_per_neuron']:.1e}; "
              f"{r['rel_err_ours_gradient_vs_floor']:.1e} ({r['rel_diff_guided_backprop_vs_gradient']:.2f})")
    if any(results[layer]["captum_per_neuron_rows_timed"] != ROWS for layer in layers):
        print(f"  * per-neuron timed on {results[layers[0]]['captum_per_neuron_rows_timed']} rows, scaled to {ROWS}")

    print("\nchunk sweep, seconds (ours guided backprop / captum batched / floor gradient):")
    swept = sorted({int(c) for layer in layers for c in results[layer]["ours_guided_backprop_sweep_s"]})
    print(f"{'chunk':>5}  " + "  ".join(f"{layer:>26}" for layer in layers))
    for chunk in swept:
        cells = []
        for layer in layers:
            r = results[layer]
            ours = r["ours_guided_backprop_sweep_s"].get(str(chunk))
            captum = r["captum_batched_sweep_s"].get(str(chunk))
            floor = r["floor_sweep_s"].get(str(chunk))
            cells.append(" / ".join("     -" if t is None else f"{t:6.3f}" for t in (ours, captum, floor)))
        mark = "" if chunk in chunks else "  (default, not in the sweep)"
        print(f"{chunk:5d}  " + "  ".join(f"{cell:>26}" for cell in cells) + mark)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="conv1-2, 2 chunk sizes, 1 repeat (smoke test)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 3, quick 1)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/projection.json; "
                                                    "--quick writes only where --out says)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module=r"captum(\.|$)")  # "Setting backward hooks on ReLU ..."

    device = pick_device(args.device)
    layers = QUICK_LAYERS if args.quick else CONV_LAYERS
    chunks = QUICK_CHUNKS if args.quick else CHUNKS
    per_neuron_rows = QUICK_PER_NEURON_ROWS if args.quick else ROWS
    repeats = args.repeats or (1 if args.quick else 3)
    model = alexnet(device=device)
    info = machine(device)
    print(describe(info))
    print(f"{ROWS} rows per layer ({CHANNELS} channels x {IMAGES_PER_CHANNEL} images), guided backprop, "
          f"median of {repeats} after a warm-up{', QUICK' if args.quick else ''}")

    results = {}
    for layer in layers:
        print(f"  {layer} ...", flush=True)
        results[layer] = bench_layer(layer, 1000 + CONV_LAYERS.index(layer), model, chunks, per_neuron_rows,
                                     repeats, device)
    print_tables(layers, results, chunks)

    total = {key: sum(results[layer][key] for layer in layers)
             for key in ("ours_guided_backprop_s", "ours_gradient_s", "floor_best_s", "captum_batched_best_s",
                         "captum_per_neuron_s")}
    ratios = {
        "ours_over_floor": total["ours_guided_backprop_s"] / total["floor_best_s"],
        "ours_gradient_over_floor": total["ours_gradient_s"] / total["floor_best_s"],
        "ours_over_captum_batched_best": total["ours_guided_backprop_s"] / total["captum_batched_best_s"],
        "captum_per_neuron_over_ours": total["captum_per_neuron_s"] / total["ours_guided_backprop_s"],
    }
    print(f"\ntotal over {', '.join(layers)}: ours {total['ours_guided_backprop_s']:.3f} s (gradient "
          f"{total['ours_gradient_s']:.3f} s), floor {total['floor_best_s']:.3f} s, captum batched "
          f"{total['captum_batched_best_s']:.3f} s, captum per-neuron {total['captum_per_neuron_s']:.3f} s")
    for name, value in ratios.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"   goal <= {goal:.2f}: {'met' if value <= goal else 'MISSED'}"
        print(f"  {name:32} {value:6.2f}{verdict}")

    out = args.out or (None if args.quick else RESULTS / "projection.json")
    if out is not None:
        write_json(out, {
            "machine": info,
            "config": {"quick": args.quick, "repeats": repeats, "layers": list(layers), "chunks": list(chunks),
                       "rows_per_layer": ROWS, "channels": CHANNELS, "images_per_channel": IMAGES_PER_CHANNEL,
                       "per_neuron_rows_timed": per_neuron_rows, "input": list(INPUT_SHAPE), "dtype": "float32"},
            "layers": results, "total_s": total, "ratios": ratios, "goals": GOALS,
            "goals_met": {name: ratios[name] <= goal for name, goal in GOALS.items()},
        })


if __name__ == "__main__":
    main()
