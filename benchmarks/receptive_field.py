"""Cost of receptive_field, once per rendered layer, against one plain forward pass of the net.

    python benchmarks/receptive_field.py [--repeats 5] [--out benchmarks/results/receptive_field.json]

Workload: torchvision's ResNet-18 (weights=None, float32, CPU) and the project's AlexNet at
224x224, receptive_field(model, layer, (3, 224, 224)) for a layer in each stage of the net.
Baseline: one plain batch-1 forward pass of the whole model on the CPU, no hooks, which is what
a probe that computes would pay at the least (our trace runs on the meta device instead, so it
computes nothing; it pays for the Python bookkeeping of every op and the meta kernels).
Goal: well under a second per call. Timing: median of --repeats calls after one warm-up.
"""

import argparse

import torch
from torchvision.models import resnet18

from cnn_internals.engine.projection import receptive_field

from bench_common import RESULTS, alexnet, describe, machine, timed, write_json

NETS = {
    "resnet18": (lambda: resnet18(weights=None).eval(),
                 ("layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2")),
    "alexnet": (alexnet, ("conv1", "conv3", "conv5")),
}
GOAL_S = 1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "receptive_field.json"))
    args = parser.parse_args()
    cpu = torch.device("cpu")
    info = machine(cpu)
    print(describe(info))
    results = {"machine": info, "goal_s": GOAL_S, "nets": {}}
    print(f"{'net':9} {'layer':15} {'field':>16} {'ours s':>8} {'forward s':>10} {'ours/forward':>12}")
    probe = torch.zeros(1, 3, 224, 224)
    for net_name, (build, layers) in NETS.items():
        model = build()
        with torch.no_grad():
            forward_s, _ = timed(lambda m=model: m(probe), args.repeats, cpu)
        per_layer = {}
        for layer in layers:
            ours_s, rf = timed(lambda m=model, l=layer: receptive_field(m, l, (3, 224, 224)), args.repeats, cpu)
            per_layer[layer] = {"field": list(rf), "ours_s": ours_s, "ratio_to_forward": ours_s / forward_s}
            print(f"{net_name:9} {layer:15} {rf!s:>16} {ours_s:8.3f} {forward_s:10.3f} {ours_s / forward_s:12.2f}")
        results["nets"][net_name] = {"forward_s": forward_s, "layers": per_layer}
    worst = max(r["ours_s"] for n in results["nets"].values() for r in n["layers"].values())
    results["worst_ours_s"] = worst
    print(f"slowest call {worst:.3f} s (goal < {GOAL_S} s): {'met' if worst < GOAL_S else 'MISSED'}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
