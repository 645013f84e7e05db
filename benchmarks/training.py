"""Training throughput of our loop against a plain PyTorch loop, in one run, per net.

    python benchmarks/training.py [--net lenet5|alexnet|all] [--device auto|cpu|cuda] [--quick]

Ours: cnn_internals.training.train for one epoch over a uint8 split (the real data path:
batches gathered as uint8, moved to the device, turned into inputs there by the net's own
transform; AlexNet's random crops, flips and PCA lighting included), the net's own model and
loss. On CUDA it runs twice: as the pipeline does (mixed precision, channels-last) and with
``amp: false`` (float32, NCHW), so the gain of each is visible.

``ours_no_checkpoint`` is the same without the per-epoch checkpoint write (AlexNet's weights
and momentum are 466 MB), to show what the steps themselves cost.

Plain: the loop a tutorial writes, fixed: inputs already as float tensors in memory (NCHW),
default threads, no compile, cross-entropy, the same optimizer; for LeNet-5 a plain
Conv/Tanh/AvgPool net, for AlexNet the same AlexNet model (so the ratio is the cost of our
data path and loop). Each figure is the median of --repeats epochs after a warm-up epoch.

Also prints what a full run of the default schedule in params.yaml costs at the measured speed
(an estimate from timed steps, labelled as such): LeNet-5 on full MNIST (60,000 images) and
AlexNet on Imagenette (9,469 training images; evaluation of the 3,925 val images aside).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from bench_common import describe, machine, pick_device, synchronize, write_json
from cnn_internals.data.prepared import Split
from cnn_internals.models import NETS
from cnn_internals.stats import image_statistics
from cnn_internals.training import Checkpoint, Recipe, make_optimizer, train

FULL_TRAIN_IMAGES = {"lenet5": 60000, "alexnet": 9469}
SHAPES = {"lenet5": (28, 28), "alexnet": (256, 256, 3)}


def plain_model(name, p):
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
    return NETS[name].build(p)


def plain_epoch(model, x, y, recipe, device):
    opt, _ = make_optimizer(model, recipe)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    model.train()
    for first in range(0, len(x), recipe.batch_size):
        idx = order[first:first + recipe.batch_size]
        loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class NoCheckpoint(Checkpoint):
    """Saves nothing: isolates the per-epoch checkpoint write from the steps."""

    def save(self, state):
        pass


def ours_epoch(name, model, split, stats, p, recipe, device, checkpoint=Checkpoint):
    net = NETS[name]
    inputs = net.inputs(stats, p, device)
    one = Split(images=split.images[:1], labels=split.labels[:1], classes=split.classes)
    with tempfile.TemporaryDirectory() as tmp:   # a one-image test split: the figure is training
        train(model, net.loss(p), inputs, split, one, recipe, checkpoint(tmp, "bench"), log=lambda s: None)


def timed(fn, repeats, device):
    fn()  # warm-up: first-call allocations and kernel selection are not throughput
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_net(name, p, n, repeats, device):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *SHAPES[name]), dtype=np.uint8)
    split = Split(images=images, labels=rng.integers(0, 10, n).astype(np.int64), classes=tuple("0123456789"))
    stats = image_statistics(images)
    net = NETS[name]
    plain_inputs = net.inputs(stats, p, torch.device("cpu"))
    x = plain_inputs.eval(torch.from_numpy(images))                   # (n, C, H, W) float, in memory
    y = torch.from_numpy(split.labels)
    recipe = Recipe(epochs=1, batch_size=p["batch_size"], lr=p["lr"], seed=0, optimizer=p["optimizer"],
                    weight_decay=p["weight_decay"], momentum=p.get("momentum", 0.9), schedule="constant")
    torch.manual_seed(0)
    plain = plain_model(name, p).to(device)
    result = {"images": n, "batch": recipe.batch_size}
    base = timed(lambda: plain_epoch(plain, x, y, recipe, device), repeats, device)
    result["plain_images_per_s"] = round(n / base, 1)
    configs = {"ours": (True, Checkpoint), "ours_fp32": (False, Checkpoint), "ours_no_checkpoint": (True, NoCheckpoint)}
    if device.type != "cuda":
        configs = {"ours": (False, Checkpoint), "ours_no_checkpoint": (False, NoCheckpoint)}
    torch.manual_seed(0)
    model = net.build(p).to(device)          # built once, as the plain loop's model is
    for label, (amp, checkpoint) in configs.items():
        recipe.amp = amp
        seconds = timed(lambda: ours_epoch(name, model, split, stats, p, recipe, device, checkpoint), repeats, device)
        result[f"{label}_images_per_s"] = round(n / seconds, 1)
        result[f"{label}_over_plain_time"] = round(seconds / base, 3)
    line = f"{name} batch {recipe.batch_size}: plain {n / base:9.1f} img/s"
    for label in configs:
        rate, ratio = result[f"{label}_images_per_s"], result[f"{label}_over_plain_time"]
        line += f"   {label} {rate:9.1f} img/s (time x{ratio:.2f})"
    print(line)
    hours = p["epochs"] * FULL_TRAIN_IMAGES[name] / result["ours_images_per_s"] / 3600
    result["default_schedule_hours_estimate"] = round(hours, 3)
    print(f"  estimate: the default schedule ({p['epochs']} epochs over {FULL_TRAIN_IMAGES[name]:,} images) "
          f"takes about {hours:.2f} h of training steps on this device")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=("lenet5", "alexnet", "all"), default="all")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--images", type=int, default=None,
                        help="images per epoch (default: LeNet-5 16384; AlexNet 256 on CPU, 4096 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default benchmarks/results/training.json, training_cuda.json on CUDA)")
    args = parser.parse_args()
    device = pick_device(args.device)
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["train"]
    info = machine(device)
    print(describe(info))
    results = {"machine": info, "nets": {}}
    for name in (("lenet5", "alexnet") if args.net == "all" else (args.net,)):
        default = 16384 if name == "lenet5" else (4096 if device.type == "cuda" else 256)
        n = 2 * params[name]["batch_size"] if args.quick else (args.images or default)
        results["nets"][name] = bench_net(name, params[name], n, 1 if args.quick else args.repeats, device)
    if not args.quick:
        suffix = "" if device.type == "cpu" else f"_{device.type}"
        write_json(args.out or Path(__file__).parent / "results" / f"training{suffix}.json", results)


if __name__ == "__main__":
    main()
