"""AlexNet's training-time input path against a per-image pipeline, and against a training step,
in one run: images/s, their ratio, and peak memory at N and 4N images.

    python benchmarks/alexnet_input.py [--quick] [--device auto|cpu|cuda] [--images N] [--out FILE]

Workload. N synthetic 256x256x3 uint8 images (random pixels; N = 1024, or --images) written to a
temporary .npy and opened as a np.memmap, as prepared Imagenette is. Each timed call draws a
random batch of 128 indices and turns those images into (128, 3, 224, 224) float32 model inputs
on the device (random crop, mirror, PCA lighting, mean image, standardised):
  naive    mm[idx] (numpy fancy index), then naive_alexnet_train_inputs: image by image in
           float64 numpy, the way a per-image torchvision-style pipeline does it.
  ours     mm[idx], torch.from_numpy, .to(device), AlexNetInputs.train: fresh arrays each call.
  ours, reused buffers
           np.take(mm, idx, out=staging, mode="clip") into one (pinned, on CUDA) uint8 buffer, and
           AlexNetInputs.train(..., out=buffer): what a training loop that consumes each batch
           before asking for the next can do. On CPU a fresh 77 MB output costs first-touch page
           faults; the run measures that cost directly (torch.empty + fill vs fill) and, in a
           child process, ours with PyTorch's THP_MEM_ALLOC_ENABLE=1 (2 MB pages for big tensors).
  transform only
           AlexNetInputs.train on one uint8 batch already on the device (no memmap gather, no
           copy to the device): the batched transform's own cost, with a fresh output and with
           out= a reused buffer.
  training step
           forward + backward + SGD (momentum 0.9, weight decay 5e-4) of AlexNet
           (cnn_internals.models.alexnet, kaiming init) on batches of 128 from ours: what the
           input path has to keep up with. A few steps only on CPU (about 7 s each on 2 cores).

Time: bench_common.timed, the median of --repeats calls (15) after one warm-up call,
torch.cuda.synchronize on CUDA. Goal: ours >= 2,500 images/s on 2 CPU cores.

Memory: the input path (ours, fresh arrays) run in a fresh Python process over the first N and
then all 4N images of the map: the process first reads every image of its map once (so the
map is resident and counted before the clock), resets its peak RSS (/proc/self/clear_refs),
runs 16 batches and reports the growth of the peak resident set (VmHWM) over the RSS before.
The map itself grows with N; the growth during the run should not. On CUDA the child also
reports torch.cuda.max_memory_allocated.

Figures go to benchmarks/results/alexnet_input.json (sorted keys) or --out. The full run takes
about 2 minutes on 2 CPU cores. --quick (smoke test, ~20 s): N = 256, 3 repeats, 1 training
step of 16 images; its figures are written only where --out says.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnn_internals.models.alexnet import build_alexnet
from cnn_internals.models.transforms import AlexNetInputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))     # the image-by-image reference
from reference_transforms import naive_alexnet_train_inputs  # noqa: E402

from bench_common import RESULTS, describe, machine, pick_device, proc_status, synchronize, timed, write_json

BATCH = 128
SIDE = 256
GOAL_IMAGES_PER_S = 2500
MEMORY_BATCHES = 16
SEED = 0


# ---------------------------------------------------------------------- data

def write_images(path, count):
    """``count`` random uint8 (256, 256, 3) images as a .npy, written in chunks."""
    rng = np.random.default_rng(SEED)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, SIDE, SIDE, 3))
    for first in range(0, count, 256):
        part = array[first:first + 256]
        part[...] = rng.integers(0, 256, part.shape, dtype=np.uint8)
    array.flush()
    del array


def statistics(images):
    """Mean image, RGB eigen-decomposition and pooled std in [0, 1] units, from a sample."""
    sample = np.asarray(images[:64], dtype=np.float64) / 255.0
    pixels = sample.reshape(-1, 3)
    eigvals, eigvecs = np.linalg.eigh(np.cov(pixels, rowvar=False))
    order = np.argsort(eigvals)[::-1]
    return {"mean_image": sample.mean(0), "eigvals": eigvals[order], "eigvecs": eigvecs[:, order],
            "pixel_std": float(pixels.std())}


def make_inputs(stats, device):
    return AlexNetInputs(stats["mean_image"], stats["eigvals"], stats["eigvecs"], stats["pixel_std"], device)


# ---------------------------------------------------------------------- the three paths

class Paths:
    """The callables timed, sharing one memmap, one index stream and the device."""

    def __init__(self, images, stats, device, batch):
        self.images, self.stats, self.device, self.batch = images, stats, device, batch
        self.inputs = make_inputs(stats, device)
        self.rng = np.random.default_rng(SEED)
        self.generator = torch.Generator(device=device).manual_seed(SEED)
        self.staging = torch.empty((batch, SIDE, SIDE, 3), dtype=torch.uint8, pin_memory=device.type == "cuda")
        self.buffer = torch.empty((batch, 3, 224, 224), dtype=torch.float32, device=device)

    def indices(self):
        return np.sort(self.rng.choice(len(self.images), self.batch, replace=False))

    def naive(self):
        s = self.stats
        return naive_alexnet_train_inputs(self.images[self.indices()], s["mean_image"], s["eigvals"], s["eigvecs"],
                                          s["pixel_std"], self.rng)

    def ours(self):
        batch = torch.from_numpy(self.images[self.indices()]).to(self.device)
        return self.inputs.train(batch, self.generator)

    def ours_reused(self):
        # mode="clip": with the default "raise", numpy copies through a temporary buffer when
        # out= is given (its docs), 3x slower here; the indices are valid anyway.
        np.take(self.images, self.indices(), axis=0, out=self.staging.numpy(), mode="clip")
        batch = self.staging.to(self.device, non_blocking=True)
        return self.inputs.train(batch, self.generator, out=self.buffer)

    def transform_only(self, reuse):
        """A callable running the transform alone on one batch already on the device."""
        batch = torch.from_numpy(self.images[self.indices()]).to(self.device)
        out = self.buffer if reuse else None
        return lambda: self.inputs.train(batch, self.generator, out=out)


def training_step_rate(paths, batch, steps, device):
    """Images/s of forward + backward + SGD step of AlexNet on batches from ours."""
    torch.manual_seed(SEED)
    model = build_alexnet().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.randint(0, 10, (batch,), device=device)
    x = paths.ours()[:batch]

    def step():
        loss = loss_fn(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds, _ = timed(step, steps, device)
    return batch / seconds


def page_fault_cost(device, repeats):
    """(seconds to allocate and fill a fresh output-sized tensor, seconds to fill an existing one)."""
    shape = (BATCH, 3, 224, 224)
    existing = torch.empty(shape, device=device)
    fresh_s, _ = timed(lambda: torch.empty(shape, device=device).fill_(0.0), repeats, device)
    reuse_s, _ = timed(lambda: existing.fill_(0.0), repeats, device)
    return fresh_s, reuse_s


# ---------------------------------------------------------------------- child processes

def child_memory(path, count, device):
    """In this fresh process: RSS with the first ``count`` images of the map resident, and the
    peak RSS growth over MEMORY_BATCHES batches of ours."""
    images = np.load(path, mmap_mode="r")[:count]
    for first in range(0, count, 256):                     # make the whole map resident
        np.asarray(images[first:first + 256]).max()
    paths = Paths(images, statistics(images), device, BATCH)
    paths.ours()                                           # warm-up: lazy initialisation
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")           # VmHWM := VmRSS
    before = proc_status("VmRSS")
    for _ in range(MEMORY_BATCHES):
        paths.ours()
    synchronize(device)
    result = {"images": count, "rss_before_bytes": before, "peak_rss_bytes": proc_status("VmHWM")}
    result["peak_growth_bytes"] = result["peak_rss_bytes"] - before
    if device.type == "cuda":
        result["cuda_peak_growth_bytes"] = torch.cuda.max_memory_allocated(device) - cuda_before
    return result


def child_time_fresh(path, count, device, repeats):
    images = np.load(path, mmap_mode="r")[:count]
    paths = Paths(images, statistics(images), device, BATCH)
    seconds, _ = timed(paths.ours, repeats, device)
    return {"images_per_s": BATCH / seconds}


def run_child(args, mode, count, env=None):
    command = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--_path", str(args._path),
               "--images", str(count), "--device", args.device, "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"child {mode} N={count} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- main

def mib(value):
    return value / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=256, 3 repeats, one 16-image training step")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--images", type=int, default=None, help="N images in the map (default 1024, quick 256)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 15, quick 3)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/alexnet_input.json; "
                                                    "--quick writes only where --out says)")
    parser.add_argument("--_child", choices=("memory", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--_path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = pick_device(args.device)
    args.repeats = args.repeats or (3 if args.quick else 15)

    if args._child == "memory":
        print(json.dumps(child_memory(args._path, args.images, device)))
        return
    if args._child == "time":
        print(json.dumps(child_time_fresh(args._path, args.images, device, args.repeats)))
        return

    n = args.images or (256 if args.quick else 1024)
    if n < BATCH:
        raise SystemExit(f"--images must be at least the batch size {BATCH}")
    info = machine(device)
    print(describe(info))
    print(f"input path: batches of {BATCH} random indices into a uint8 memmap of N = {n} (and 4N) "
          f"{SIDE}x{SIDE}x3 images -> ({BATCH}, 3, 224, 224) float32; median of {args.repeats} after a warm-up"
          f"{', QUICK' if args.quick else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        args._path = Path(tmp) / "images.npy"
        write_images(args._path, 4 * n)
        images = np.load(args._path, mmap_mode="r")[:n]
        paths = Paths(images, statistics(images), device, BATCH)
        rates = {}
        timed_paths = (("naive", paths.naive), ("ours", paths.ours), ("ours_reused_buffers", paths.ours_reused),
                       ("transform_only", paths.transform_only(False)),
                       ("transform_only_reused_out", paths.transform_only(True)))
        for name, fn in timed_paths:
            seconds, _ = timed(fn, args.repeats, device)
            rates[name] = BATCH / seconds
        if device.type == "cpu":
            rates["ours_thp"] = run_child(args, "time", n, {"THP_MEM_ALLOC_ENABLE": "1"})["images_per_s"]
        fresh_s, reuse_s = page_fault_cost(device, args.repeats)
        step_batch, steps = (16, 1) if args.quick else (BATCH, 3 if device.type == "cpu" else 20)
        step_rate = training_step_rate(paths, step_batch, steps, device)
        memory = {str(count): run_child(args, "memory", count) for count in (n, 4 * n)}

    print(f"\nimages/s   naive (per image, float64 numpy) {rates['naive']:8.0f}")
    print(f"           ours (fresh arrays each call)     {rates['ours']:8.0f}   x{rates['ours'] / rates['naive']:.1f} naive")
    print(f"           ours (reused staging + out)       {rates['ours_reused_buffers']:8.0f}   "
          f"x{rates['ours_reused_buffers'] / rates['naive']:.1f} naive")
    if "ours_thp" in rates:
        print(f"           ours (fresh, THP_MEM_ALLOC_ENABLE=1) {rates['ours_thp']:5.0f}   "
              f"x{rates['ours_thp'] / rates['naive']:.1f} naive")
    print(f"           transform only (batch on device)  {rates['transform_only']:8.0f}   "
          f"with out= reused {rates['transform_only_reused_out']:.0f}")
    print(f"           AlexNet training step (batch {step_batch})   {step_rate:8.1f}")
    print(f"a fresh ({BATCH}, 3, 224, 224) float32 tensor: allocate + fill {fresh_s * 1e3:.1f} ms, "
          f"fill an existing one {reuse_s * 1e3:.1f} ms (first-touch page faults: {(fresh_s - reuse_s) * 1e3:.1f} ms/batch)")
    paths_end_to_end = {k: v for k, v in rates.items() if k.startswith("ours")}
    verdict = {k: v >= GOAL_IMAGES_PER_S for k, v in paths_end_to_end.items()}
    print(f"goal: ours >= {GOAL_IMAGES_PER_S} images/s on 2 CPU cores"
          + (" (this run is on CUDA)" if device.type == "cuda" else "") + ": "
          + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in verdict.items()))
    print(f"input path (ours, fresh) / training step: {rates['ours'] / step_rate:.1f}x the rate of the step it feeds")
    print(f"\npeak RSS growth over {MEMORY_BATCHES} batches of ours, fresh process, whole map resident first:")
    for count, m in memory.items():
        cuda = f", CUDA peak growth {mib(m['cuda_peak_growth_bytes']):.1f} MiB" if "cuda_peak_growth_bytes" in m else ""
        print(f"  N = {int(count):5d}: RSS with the map {mib(m['rss_before_bytes']):7.1f} MiB, "
              f"growth during the run {mib(m['peak_growth_bytes']):6.1f} MiB{cuda}")
    growth_ratio = memory[str(4 * n)]["peak_growth_bytes"] / max(1, memory[str(n)]["peak_growth_bytes"])
    print(f"  growth at 4N / growth at N: {growth_ratio:.2f}")

    out = args.out or (None if args.quick else RESULTS / "alexnet_input.json")
    if out is not None:
        write_json(out, {
            "machine": info,
            "config": {"quick": args.quick, "images": n, "batch": BATCH, "crop": 224, "repeats": args.repeats,
                       "normalize": "standardize", "lighting_std": 0.1, "training_step_batch": step_batch,
                       "training_steps": steps, "memory_batches": MEMORY_BATCHES},
            "images_per_s": {**rates, "training_step": step_rate},
            "ours_over_naive": {k: v / rates["naive"] for k, v in rates.items() if k != "naive"},
            "fresh_output_alloc_fill_s": fresh_s, "existing_output_fill_s": reuse_s,
            "goal_images_per_s": GOAL_IMAGES_PER_S, "goal_met": verdict,
            "memory": memory, "memory_growth_4n_over_n": growth_ratio,
        })


if __name__ == "__main__":
    main()
