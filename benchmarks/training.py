"""Training throughput of our LeNet-5 (C3 table, subsampling coefficients, RBF output, eq. 9
loss, through cnn_internals.training.train) against a plain PyTorch LeNet-5 (Conv/Tanh/AvgPool/
Linear, cross-entropy, the same optimizer) on the same images, in one run.

    python benchmarks/training.py [--quick] [--images N] [--out benchmarks/results/training.json]

Prints images/s for each batch size, their ratio, and what the default schedule
(train.lenet5 in params.yaml) costs on full MNIST (60,000 images) at that speed.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from cnn_internals.models import NETS
from cnn_internals.training import Checkpoint, Recipe, train


def plain_lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def plain_epoch(model, x, y, batch_size):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    model.train()
    for first in range(0, len(x), batch_size):
        idx = order[first:first + batch_size]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def ours_epoch(x, y, batch_size, p):
    net = NETS["lenet5"]
    model = net.build(p)
    recipe = Recipe(epochs=1, batch_size=batch_size, lr=1e-3, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        # a one-image "test set": the figure is the training loop, evaluation aside
        train(model, net.loss(p), (x, y), (x[:1], y[:1]), recipe, Checkpoint(tmp, "bench"), log=lambda s: None)


def timed(fn, repeats):
    fn()  # warm-up: first-call allocations and kernel selection are not throughput
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    n, repeats = (1024, 1) if args.quick else (args.images, 3)
    p = yaml.safe_load(Path("params.yaml").read_text())["train"]["lenet5"]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 32, 32, generator=g), torch.randint(10, (n,), generator=g)
    results = {"threads": torch.get_num_threads(), "images": n, "batch": {}}
    print(f"{n} images, {torch.get_num_threads()} threads, median of {repeats} after a warm-up")
    for batch_size in sorted({p["batch_size"], 256}):
        torch.manual_seed(0)
        base = timed(lambda: plain_epoch(plain_lenet5(), x, y, batch_size), repeats)
        ours = timed(lambda: ours_epoch(x, y, batch_size, p), repeats)
        results["batch"][str(batch_size)] = {"plain_images_per_s": round(n / base), "ours_images_per_s": round(n / ours),
                                             "ours_over_plain_time": round(ours / base, 3)}
        print(f"batch {batch_size:4d}: plain {n / base:8.0f} img/s   ours {n / ours:8.0f} img/s   "
              f"time ratio ours/plain {ours / base:.2f}")
    default = results["batch"][str(p["batch_size"])]["ours_images_per_s"]
    minutes = p["epochs"] * 60000 / default / 60
    results["default_schedule_full_mnist_minutes"] = round(minutes, 1)
    print(f"default schedule ({p['epochs']} epochs at batch {p['batch_size']}) on 60,000 images: "
          f"about {minutes:.1f} min of training on this machine")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
