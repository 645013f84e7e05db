"""Training throughput of our loop against a plain PyTorch loop, in one run, per net.

    python benchmarks/training.py [--net lenet5|alexnet|all] [--device auto|cpu|cuda] [--ranks 2] [--quick]

Ours: cnn_internals.training.loop.train for one epoch over a uint8 split (the real data path:
batches gathered as uint8, moved to the device, turned into inputs there by the net's own
transform; AlexNet's random crops, flips and PCA lighting included), the net's own model and
loss, channels-last (CPU and CUDA). On CUDA it runs three times: as the pipeline does (mixed
precision, channels-last), with ``amp: false`` (``ours_fp32``: float32, channels-last) and
also without channels-last (``ours_fp32_nchw``), so the gain of each is visible; on the CPU
(float32) as the pipeline does, in NCHW (``ours_nchw``) and, for LeNet-5, with its scaled tanh
in the reference form A * tanh(S * x) instead of the fused one the loop uses on the CPU
(``ours_reference_activation``).

``ours_no_checkpoint`` is the same without the per-epoch checkpoint write (AlexNet's weights
and momentum are 466 MB), to show what the steps themselves cost.

``ours_<N>_ranks`` (``--ranks N``): the same epoch on N processes, as `train.<net>.nproc: N`
runs it: a process group (gloo on the CPU, NCCL on CUDA, one GPU a rank), DDP, each rank its
share of every global batch, rank 0 checkpointing; on the CPU each rank gets cores / N threads.
The epoch is timed on rank 0 between two barriers. On CUDA it needs N GPUs (skipped otherwise).

Plain: the loop a tutorial writes, fixed: the same model, loss and optimizer (algorithm and
settings; torch's default implementation of it, where ours asks for the fused kernel) at the
same (global) batch, inputs already as float tensors in memory (NCHW), default threads, glibc's
default malloc, the model's reference forward (LeNet-5's scaled tanh as A * tanh(S * x)), no
compile; so the ratio is what our data path and loop cost or save. For
LeNet-5 the figure of a textbook Conv/Tanh/AvgPool LeNet with cross-entropy is printed beside
it (``textbook_lenet``), lighter math than the paper's (no C3 table, RBF output or eq. 9 loss).

The plain loops run in one process and ours in another, as the train stage does (ours on the
CPU calls ``keep_host_memory`` first, as stages/train.py does: a process-wide malloc setting
the plain loop must not get). The loops take turns, one epoch each per round, so that other
jobs on a shared machine slow them alike; each figure is the median of --repeats rounds after a
warm-up epoch, and each ratio to the plain loop the median of the rounds' own ratios (epochs
seconds apart: a shared machine's slow drift cancels out of them).

Also prints what a full run of the default schedule in params.yaml costs at the measured speed
(an estimate from timed steps, labelled as such): LeNet-5 on full MNIST (60,000 images) and
AlexNet on Imagenette (9,469 training images; evaluation of the 3,925 val images aside).
"""

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from cnn_internals.data.prepared import Split
from cnn_internals.data.statistics import image_statistics
from cnn_internals.models import NETS
from cnn_internals.runtime.device import keep_host_memory
from cnn_internals.runtime.distributed import SINGLE, process_group, threads_per_process
from cnn_internals.training import loop as training
from cnn_internals.training.loop import Checkpoint, train
from cnn_internals.training.recipe import Recipe

from bench_common import describe, machine, pick_device, synchronize, write_json

FULL_TRAIN_IMAGES = {"lenet5": 60000, "alexnet": 9469}
SHAPES = {"lenet5": (28, 28), "alexnet": (256, 256, 3)}


def textbook_lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def plain_optimizer(model, recipe):
    """The recipe's optimizer as a tutorial builds it (torch's default implementation)."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def plain_epoch(model, x, y, recipe, device, loss_fn):
    opt = plain_optimizer(model, recipe)
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


@contextlib.contextmanager
def loop_choices(channels_last, fused):
    """Ours with channels-last and the fused scaled tanh as the pipeline has them (True), or
    either off, by narrowing what ``training.Precision`` chooses. (make_loop's epoch puts the
    model back to NCHW first: train() converts it in place, and a channels-last weight would
    keep the convolutions channels-last.)"""
    init = training.Precision.__init__

    def chosen(self, device, amp):
        init(self, device, amp)
        self.channels_last = self.channels_last and channels_last
        self.fused_activations = self.fused_activations and fused

    training.Precision.__init__ = chosen
    try:
        yield
    finally:
        training.Precision.__init__ = init


def ours_epoch(name, model, split, stats, p, recipe, device, checkpoint=Checkpoint, world=SINGLE):
    net = NETS[name]
    inputs = net.inputs(stats, p, device)
    one = Split(images=split.images[:1], labels=split.labels[:1], classes=split.classes)
    with tempfile.TemporaryDirectory() as tmp:   # a one-image test split: the figure is training
        train(model, net.loss(p), inputs, split, one, recipe, checkpoint(tmp, "bench"), log=lambda s: None,
              world=world)


def timed(fn, repeats, device):
    """Median seconds of ``repeats`` calls of fn after a warm-up call (one process's loop)."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def loop_process(conn, labels, name, p, n, batch, device_type):
    """Loops ``labels`` in a process of their own: builds their data and models, then runs one
    timed epoch of the loop it is asked for and answers the seconds."""
    device = torch.device(device_type)
    epochs = {label: make_loop(label, name, p, n, batch, device) for label in labels}
    while (label := conn.recv()) is not None:
        synchronize(device)
        start = time.perf_counter()
        epochs[label]()
        synchronize(device)
        conn.send(time.perf_counter() - start)


def in_turns(groups, name, p, n, batch, repeats, device):
    """{label: [seconds of its epoch in each round]}: each group of loops in a process of its
    own (the plain loops with glibc's default malloc, ours with ``keep_host_memory``; one each,
    not one per loop, so that AlexNet's heaps are not held several times over); one warm-up
    epoch per loop (first-call allocations and kernel selection are not throughput), then
    ``repeats`` rounds in which every loop runs one epoch, in turn (one process works at a time)."""
    context = mp.get_context("spawn")
    workers, owner = [], {}
    try:
        for labels in groups:
            here, there = context.Pipe()
            process = context.Process(target=loop_process, args=(there, labels, name, p, n, batch, device.type))
            process.start()
            workers.append((process, here))
            owner.update({label: here for label in labels})
        times = {label: [] for label in owner}
        for round_ in range(repeats + 1):
            for label, conn in owner.items():
                conn.send(label)
                try:
                    seconds = conn.recv()
                except EOFError:
                    raise SystemExit(f"the process running {label!r} died (out of memory?)") from None
                if round_:
                    times[label].append(seconds)
        return times
    finally:
        for process, conn in workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(timeout=60)
            if process.is_alive():
                process.kill()


def random_split(name, n):
    """``n`` random uint8 images of the net's dataset shape and their statistics (seeded)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *SHAPES[name]), dtype=np.uint8)
    split = Split(images=images, labels=rng.integers(0, 10, n).astype(np.int64), classes=tuple("0123456789"))
    return split, image_statistics(images)


def make_recipe(p, batch):
    return Recipe(epochs=1, batch_size=batch, lr=p["lr"], seed=0, optimizer=p["optimizer"],
                  weight_decay=p["weight_decay"], momentum=p.get("momentum", 0.9), schedule="constant")


def rank_epochs(rank, ranks, port, name, p, n, batch, repeats, device_type, out):
    """One rank of ``ours_<N>_ranks``: joins the group as torchrun's ranks do (from its
    environment), runs the warm-up and timed epochs; rank 0 writes the median to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks))
    torch.set_num_threads(threads_per_process(ranks))          # what launch gives each rank
    if device_type == "cpu":
        keep_host_memory()                                     # as stages/train.py does
    with process_group(torch.device(device_type), ranks, "benchmark") as (world, device):
        split, stats = random_split(name, n)
        torch.manual_seed(0)
        model = NETS[name].build(p).to(device)
        recipe = make_recipe(p, batch)

        def epoch():
            dist.barrier()
            ours_epoch(name, model, split, stats, p, recipe, device, Checkpoint, world)
            synchronize(device)
            dist.barrier()

        seconds = timed(epoch, repeats, device)
        if world.main:
            Path(out).write_text(json.dumps(seconds))


def ranks_seconds(ranks, name, p, n, batch, repeats, device):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds.json"
        mp.spawn(rank_epochs, args=(ranks, port, name, p, n, batch, repeats, device.type, str(out)), nprocs=ranks)
        return json.loads(out.read_text())


# label: (amp, channels-last, fused scaled tanh where the net has one, checkpoint class)
CUDA_CONFIGS = {"ours": (True, True, True, Checkpoint), "ours_fp32": (False, True, True, Checkpoint),
                "ours_fp32_nchw": (False, False, True, Checkpoint),
                "ours_no_checkpoint": (True, True, True, NoCheckpoint)}
CPU_CONFIGS = {"ours": (False, True, True, Checkpoint), "ours_nchw": (False, False, True, Checkpoint),
               "ours_reference_activation": (False, True, False, Checkpoint),
               "ours_no_checkpoint": (False, True, True, NoCheckpoint)}


def loop_configs(name, device):
    """Ours' configs for this net and device (the fused activation's ablation where it has one)."""
    configs = dict(CUDA_CONFIGS if device.type == "cuda" else CPU_CONFIGS)
    if name != "lenet5":
        configs.pop("ours_reference_activation", None)
    return configs


def make_loop(label, name, p, n, batch, device):
    """A function running one epoch of loop ``label`` (plain, textbook_lenet or one of the
    configs of ours) on its own copy of the same seeded data and model."""
    split, stats = random_split(name, n)
    net = NETS[name]
    recipe = make_recipe(p, batch)
    torch.manual_seed(0)
    if label in ("plain", "textbook_lenet"):
        x = net.inputs(stats, p, torch.device("cpu")).eval(torch.from_numpy(split.images))  # (n, C, H, W) float
        y = torch.from_numpy(split.labels)
        if label == "plain":
            model, loss_fn = net.build(p).to(device), net.loss(p)
        else:
            model, loss_fn = textbook_lenet().to(device), nn.CrossEntropyLoss()
        return lambda: plain_epoch(model, x, y, recipe, device, loss_fn)
    amp, channels_last, fused, checkpoint = loop_configs(name, device)[label]
    if device.type == "cpu":
        keep_host_memory()                       # as stages/train.py does
    model = net.build(p).to(device)              # built once, as the plain loop's model is
    recipe.amp = amp

    def epoch():
        model.to(memory_format=torch.contiguous_format)
        with loop_choices(channels_last, fused):
            ours_epoch(name, model, split, stats, p, recipe, device, checkpoint)

    return epoch


def bench_net(name, p, n, batch, repeats, device, ranks=()):
    recipe = make_recipe(p, batch)
    configs = loop_configs(name, device)
    plain = ["plain", *(["textbook_lenet"] if name == "lenet5" else [])]
    rounds = in_turns([plain, list(configs)], name, p, n, batch, repeats, device)
    seconds = {label: median(times) for label, times in rounds.items()}
    # Each ratio is the median over rounds of the two loops' times in the same round: epochs
    # seconds apart, so the slow drift of a shared machine's speed cancels out of it.
    ratio = {label: median([t / base for t, base in zip(times, rounds["plain"])]) for label, times in rounds.items()}
    base = seconds["plain"]
    result = {"images": n, "batch": recipe.batch_size, "plain_images_per_s": round(n / base, 1)}
    if "textbook_lenet" in seconds:
        result["textbook_lenet_images_per_s"] = round(n / seconds["textbook_lenet"], 1)
    for label in configs:
        result[f"{label}_images_per_s"] = round(n / seconds[label], 1)
        result[f"{label}_over_plain_time"] = round(ratio[label], 3)
        per_round = [t / base for t, base in zip(rounds[label], rounds["plain"])]
        result[f"{label}_over_plain_time_range"] = [round(min(per_round), 3), round(max(per_round), 3)]
    labels = list(configs)
    for count in ranks:
        if device.type == "cuda" and torch.cuda.device_count() < count:
            print(f"  ours_{count}_ranks skipped: {torch.cuda.device_count()} GPU(s) here")
            continue
        label = f"ours_{count}_ranks"
        seconds = ranks_seconds(count, name, p, n, recipe.batch_size, repeats, device)
        labels.append(label)
        result[f"{label}_images_per_s"] = round(n / seconds, 1)
        result[f"{label}_over_plain_time"] = round(seconds / base, 3)
    line = f"{name} batch {recipe.batch_size}: plain {n / base:9.1f} img/s"
    if "textbook_lenet_images_per_s" in result:
        line += f"   (textbook LeNet {result['textbook_lenet_images_per_s']:9.1f} img/s)"
    for label in labels:
        rate, ratio = result[f"{label}_images_per_s"], result[f"{label}_over_plain_time"]
        line += f"\n  {label:26s} {rate:9.1f} img/s (time x{ratio:.2f}: {1 / ratio:.2f}x the plain loop's speed"
        if f"{label}_over_plain_time_range" in result:
            low, high = result[f"{label}_over_plain_time_range"]
            line += f"; rounds {1 / high:.2f}-{1 / low:.2f}x"
        line += ")"
    print(line)
    hours = p["epochs"] * FULL_TRAIN_IMAGES[name] / result["ours_images_per_s"] / 3600
    result["default_schedule_hours_estimate"] = round(hours, 3)
    print(f"  estimate: the default schedule ({p['epochs']} epochs over {FULL_TRAIN_IMAGES[name]:,} images) "
          f"takes about {hours:.2f} h of training steps at batch {recipe.batch_size} on this device")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=("lenet5", "alexnet", "all"), default="all")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--images", type=int, default=None,
                        help="images per epoch (default: LeNet-5 16384; AlexNet 512 on CPU, 4096 on CUDA)")
    parser.add_argument("--batch", type=int, default=256, help="the (global) batch of every loop (default 256)")
    parser.add_argument("--ranks", type=int, nargs="*", default=None,
                        help="also time ours on these numbers of processes (default: 2 on the CPU, none on CUDA)")
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
    ranks = args.ranks if args.ranks is not None else ([2] if device.type == "cpu" else [])
    for name in (("lenet5", "alexnet") if args.net == "all" else (args.net,)):
        default = 16384 if name == "lenet5" else (4096 if device.type == "cuda" else 512)
        n = 2 * args.batch if args.quick else (args.images or default)
        results["nets"][name] = bench_net(name, params[name], n, args.batch, 1 if args.quick else args.repeats, device,
                                          ranks)
    if not args.quick:
        suffix = "" if device.type == "cpu" else f"_{device.type}"
        out = args.out or Path(__file__).parent / "results" / f"training{suffix}.json"
        if args.net != "all" and out.is_file():       # one net's run replaces that net's figures only
            kept = json.loads(out.read_text())
            if kept.get("machine") == info:
                results["nets"] = {**kept["nets"], **results["nets"]}
        write_json(out, results)


if __name__ == "__main__":
    main()
