"""What a whole feature visualization costs: every map of every shown layer, every hidden fully
connected unit and every class of AlexNet and GoogLeNet, at the default 512 steps, estimated
from timed steps (issue 21: "the cost of a whole AlexNet and GoogLeNet visualization ...
measured or estimated from timed steps and labelled as such").

    python benchmarks/feature_vis_cost.py [--nets alexnet googlenet] [--batch 8] [--steps 4]
                                          [--device auto|cpu|cuda] [--out FILE]

For each net (the registry's, random weights: the cost does not depend on the values) and each
shown layer and the classes, ``engine.feature_vis.visualize`` runs ``--steps`` steps of a batch
of ``--batch`` maps at the net's input size with the default recipe (after one untimed step,
for first-call allocations); the figure per layer is seconds per image-step. The whole run is
then estimated as the sum over layers of (maps of the layer) x 512 x (seconds per image-step):
an estimate, not a run, and labelled so in the JSON and the docs. The batch of the stage
(``visualize.<net>.batch``: 64) is larger than the one timed here; on a CPU a larger batch
changes little per image (benchmarks/feature_vis.py: one 224-px image keeps 2 cores busy).
Figures go to benchmarks/results/feature_vis_cost.json (feature_vis_cost_cuda.json on a GPU),
or --out.
"""

import argparse
import time

import torch

from cnn_internals.engine.feature_vis import Recipe, visualize
from cnn_internals.models import NETS
from cnn_internals.pipeline.artifacts import layer_shapes

from bench_common import RESULTS, describe, imagenet_normalized, machine, pick_device, synchronize, write_json

FULL_STEPS = 512

to_input = imagenet_normalized


def seconds_per_image_step(model, path, batch, steps, input_size, device) -> float:
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(batch)]  # noqa: E731
    visualize(model, path, range(batch), input_size, to_input, gens(), Recipe(steps=1))     # warm-up
    synchronize(device)
    began = time.perf_counter()
    visualize(model, path, range(batch), input_size, to_input, gens(), Recipe(steps=steps))
    synchronize(device)
    return (time.perf_counter() - began) / (steps * batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["alexnet", "googlenet"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    info = machine(device)
    print(describe(info))
    result = {"config": {"batch": args.batch, "timed_steps": args.steps, "full_steps": FULL_STEPS,
                         "weights": "random (scratch): the cost does not depend on the values"},
              "machine": info, "nets": {},
              "label": "estimated from timed steps: maps x 512 x seconds per image-step, not a full run"}
    for name in args.nets:
        net = NETS[name]
        torch.manual_seed(0)
        model = net.build({"weights": "scratch"}).to(device).eval()
        sizes = {name: shape[0] for name, shape in layer_shapes(net, model).items()}   # maps, units, classes
        layers = {}
        for layer, maps in sizes.items():
            path = None if layer == "classes" else net.module_path(layer)
            per = seconds_per_image_step(model, path, min(args.batch, maps), args.steps, net.input_size, device)
            layers[layer] = {"maps": maps, "seconds_per_image_step": per, "estimated_hours": maps * FULL_STEPS * per / 3600}
            print(f"{net.title} {layer}: {maps} maps, {per:.3f} s per image-step, "
                  f"~{layers[layer]['estimated_hours']:.1f} h at {FULL_STEPS} steps")
        total = sum(v["estimated_hours"] for v in layers.values())
        # Imagenette's ten classes: what the classes tab shows (a 1000-class ImageNet view would be 100x that line)
        result["nets"][name] = {"title": net.title, "layers": layers, "estimated_hours": total,
                                "images": sum(sizes.values())}
        print(f"{net.title}: {sum(sizes.values())} images, estimated {total:.1f} h in all")
    out = args.out or RESULTS / ("feature_vis_cost_cuda.json" if device.type == "cuda" else "feature_vis_cost.json")
    write_json(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
