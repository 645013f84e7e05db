"""Mining every unit of AlexNet in one pass, conv maps, fully connected units and the classes,
against a bare forward to the scores (issue 22's speed goal: at most 1.2x).

    python benchmarks/mining_fc.py [--images N] [--repeats R] [--out FILE]

Workload: the project's AlexNet (random kaiming weights, float32, eval mode; bench_common), N
random 224x224 images (256) in batches of 64, made before the clock starts.
  ours   engine.mining.top_k_activations(model, conv1..conv5 + lin1 (fc6) + lin2 (fc7), batches,
         k=9, classes=True): every shown depth and the scores from one forward pass per batch
  bare   torch.no_grad() forward of the same model to its scores, outputs thrown away
Each is the median of --repeats passes after one warm-up (bench_common.timed); the figure is the
ratio of the medians. Figures go to benchmarks/results/mining_fc.json, or --out.
"""

import argparse

import torch

from cnn_internals.engine.mining import top_k_activations

from bench_common import CONV_LAYERS, INPUT_SHAPE, RESULTS, alexnet, machine, timed, write_json

K, BATCH, GOAL = 9, 64, 1.2
FC_LAYERS = {"fc6": "lin1", "fc7": "lin2"}       # the deep visualization toolbox's names, AlexNet's modules


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=RESULTS / "mining_fc.json")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    model = alexnet(device=device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(min(BATCH, args.images - i), *INPUT_SHAPE, generator=g) for i in range(0, args.images, BATCH)]
    layers = {**{name: name for name in CONV_LAYERS}, **FC_LAYERS}

    def bare():
        with torch.no_grad():
            for batch in batches:
                model(batch)

    bare_s, _ = timed(bare, args.repeats, device)
    ours_s, top = timed(lambda: top_k_activations(model, layers, batches, K, classes=True), args.repeats, device)
    ratio = ours_s / bare_s
    print(f"{args.images} images: bare forward to the scores {bare_s:.3f} s, mining {', '.join(top)} {ours_s:.3f} s: "
          f"{ratio:.2f}x (goal <= {GOAL}x)")
    write_json(args.out, {"config": {"images": args.images, "batch": BATCH, "k": K, "repeats": args.repeats,
                                     "layers": list(top)},
                          "machine": machine(device), "time_s": {"bare": round(bare_s, 4), "ours": round(ours_s, 4)},
                          "ours_over_bare_time": round(ratio, 4), "goal": GOAL, "goal_met": ratio <= GOAL})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
