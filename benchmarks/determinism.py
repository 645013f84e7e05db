"""Is training bit-reproducible on this device? Two runs of the same short AlexNet training
(the real path: uint8 split, random crops, flips, lighting, dropout, the project's loop), from
the same seed, compared weight by weight.

    python benchmarks/determinism.py [--device auto|cpu|cuda] [--images N] [--out FILE]

On CUDA it checks float32 and mixed precision; with torch's own LocalResponseNorm (whose CUDA
backward, avg_pool3d, adds with atomics) the runs differ, with ours (shifted channel sums,
src/cnn_internals/models/alexnet.py) they should not. Prints the largest weight difference.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cnn_internals.core.errors import UserError
from cnn_internals.data.prepared import Split
from cnn_internals.data.statistics import image_statistics
from cnn_internals.models import NETS
from cnn_internals.runtime.device import make_deterministic
from cnn_internals.training.loop import Checkpoint, train
from cnn_internals.training.recipe import Recipe

from bench_common import describe, machine, pick_device, write_json


def run_once(split, stats, p, recipe, device, torch_lrn):
    net = NETS["alexnet"]
    torch.manual_seed(0)
    model = net.build(p)
    if torch_lrn:    # swap in torch's LRN, same math, nondeterministic CUDA backward
        for name in ("lrn1", "lrn2"):
            setattr(model, name, torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
    model = model.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, net.loss(p), net.inputs(stats, p, device), split, split, recipe, Checkpoint(tmp, "det"),
              log=lambda s: None)
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def max_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--images", type=int, default=None, help="default 64 on CPU, 1024 on CUDA")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    make_deterministic()
    info = machine(device)
    print(describe(info))
    n = args.images or (1024 if device.type == "cuda" else 64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    split = Split(images=images, labels=rng.integers(0, 10, n).astype(np.int64), classes=tuple("0123456789"))
    stats = image_statistics(images)
    p = {"weight_init": "kaiming", "normalize": "standardize", "augment": True, "lighting_std": 0.1}
    results = {"machine": info, "images": n, "runs": {}}
    cases = [("ours", False, False)] + ([("ours", True, False), ("torch_lrn", False, True)]
                                         if device.type == "cuda" else [])
    for label, amp, torch_lrn in cases:
        recipe = Recipe(epochs=1, batch_size=32, lr=0.01, seed=0, optimizer="sgd", weight_decay=5e-4,
                        schedule="constant", amp=amp)
        key = f"{label}_{'amp' if amp else 'fp32'}"
        try:
            first, second = (run_once(split, stats, p, recipe, device, torch_lrn) for _ in range(2))
        except UserError as err:     # e.g. a loss that diverged on this random data
            results["runs"][key] = {"error": str(err)}
            print(f"{key:16s} {err}")
            continue
        diff = max_difference(first, second)
        results["runs"][key] = {"bit_identical": diff == 0.0, "max_weight_difference": diff}
        print(f"{key:16s} two runs bit-identical: {diff == 0.0}  (largest weight difference {diff:.3g})")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write_json(args.out or Path(__file__).parent / "results" / f"determinism{suffix}.json", results)


if __name__ == "__main__":
    main()
