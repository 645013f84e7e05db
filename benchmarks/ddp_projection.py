"""What N GPUs would give a net's training under DDP: a projection from one GPU's measured step.

    python benchmarks/ddp_projection.py [--busbw NAME=GB/s ...] [--latency-ms 0.05]

Inputs, and which of them were measured:
- one GPU's training step, measured: ``ours_no_checkpoint_images_per_s`` at its batch in
  ``benchmarks/results/training_cuda.json`` (benchmarks/gpu.sh; the card is named there);
- the gradient DDP all-reduces each step, counted: every trainable parameter of the net as
  params.yaml builds it, in float32 (DDP reduces the parameters' dtype, float32 under
  autocast too), in DDP's 25 MB buckets;
- the links' all-reduce bus bandwidth, ASSUMED (nothing here has several GPUs): NCCL's
  large-message figures are of the order of 400 GB/s on NVLink/NVSwitch (H100/H200 SXM) and
  40 GB/s over PCIe without NVLink; measure yours with nccl-tests' all_reduce_perf and pass it.

The model: params keep the global batch (train.<net>.batch_size), so each of N GPUs computes
batch/N images a step. compute(N) = step(1) / N -- an upper bound on the gain, since a GPU
is less efficient on a smaller batch -- and a ring all-reduce of G bytes takes
2 (N - 1) / N * G / busbw + latency per bucket. DDP overlaps the all-reduce with the backward
pass, so a step takes between max(compute, allreduce) (all of it hidden) and
compute + allreduce (none). Printed: the speedup over one GPU at both ends.

AlexNet only by default (``--nets``): LeNet-5's step on one GPU is launch-bound (5.6 ms for
64 images of a 60,000-parameter net on the H200, slower than the textbook LeNet's plain loop),
so splitting its batch would not shorten it, and compute = step / N does not hold for it.
"""

import argparse
import json
import math
from pathlib import Path

import torch
import yaml

from cnn_internals.models import NETS

from bench_common import RESULTS, write_json

BUCKET_BYTES = 25 * 2**20          # DDP's default bucket_cap_mb
DEFAULT_LINKS = {"nvlink": 400.0, "pcie": 40.0}


def gradient_bytes(name, p):
    """Bytes of float32 gradient one step all-reduces: the trainable parameters, counted on
    the meta device (no memory)."""
    with torch.device("meta"):
        model = NETS[name].build(p)
    return 4 * sum(q.numel() for q in model.parameters() if q.requires_grad)


def allreduce_ms(nbytes, ranks, busbw_gb_s, latency_ms):
    """Ring all-reduce of ``nbytes`` on ``ranks`` GPUs: each sends and receives 2 (N-1)/N of
    it (NCCL's bus-bandwidth convention), plus a fixed latency per DDP bucket."""
    if ranks == 1:
        return 0.0
    buckets = math.ceil(nbytes / BUCKET_BYTES)
    return 2 * (ranks - 1) / ranks * nbytes / (busbw_gb_s * 1e9) * 1e3 + buckets * latency_ms


def project(step_ms, nbytes, ranks, busbw_gb_s, latency_ms):
    """(lower, upper) speedup of ``ranks`` GPUs over one: none of the all-reduce hidden
    behind the backward pass, and all of it."""
    compute = step_ms / ranks
    comm = allreduce_ms(nbytes, ranks, busbw_gb_s, latency_ms)
    return step_ms / (compute + comm), step_ms / max(compute, comm)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, default=RESULTS / "training_cuda.json")
    parser.add_argument("--busbw", nargs="*", default=[f"{k}={v:g}" for k, v in DEFAULT_LINKS.items()],
                        help="link=GB/s all-reduce bus bandwidths (assumed unless you measured them)")
    parser.add_argument("--latency-ms", type=float, default=0.05, help="per-bucket all-reduce latency (assumed)")
    parser.add_argument("--ranks", type=int, nargs="*", default=[2, 4, 8])
    parser.add_argument("--nets", nargs="*", default=["alexnet"])
    parser.add_argument("--out", type=Path, default=RESULTS / "ddp_projection.json")
    args = parser.parse_args()
    try:
        links = {k: float(v) for k, v in (item.split("=", 1) for item in args.busbw)}
    except ValueError:
        parser.error(f"--busbw takes link=GB/s pairs, e.g. nvlink=400 (got {' '.join(args.busbw)})")
    if not args.measured.is_file():
        parser.error(f"{args.measured} not found: run benchmarks/gpu.sh (or training.py --device cuda) first")
    measured = json.loads(args.measured.read_text())
    missing = [name for name in args.nets if name not in measured["nets"]]
    if missing:
        parser.error(f"{args.measured} has no figures for {', '.join(missing)}")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["train"]
    card = measured["machine"]["device_name"]
    results = {"measured_on": card, "torch": measured["machine"]["torch"], "assumed_busbw_gb_s": links,
               "assumed_latency_ms_per_bucket": args.latency_ms, "nets": {}}
    for name in args.nets:
        figures = measured["nets"][name]
        batch, rate = figures["batch"], figures["ours_no_checkpoint_images_per_s"]
        step_ms = batch / rate * 1e3
        nbytes = gradient_bytes(name, params[name])
        entry = {"batch": batch, "step_ms_one_gpu": round(step_ms, 2), "gradient_mb": round(nbytes / 2**20, 1),
                 "speedup": {}}
        print(f"{name}: one {card} {step_ms:.1f} ms a step of {batch} (measured); "
              f"{nbytes / 2**20:.1f} MiB of float32 gradient a step")
        for link, busbw in links.items():
            for ranks in args.ranks:
                low, high = project(step_ms, nbytes, ranks, busbw, args.latency_ms)
                comm = allreduce_ms(nbytes, ranks, busbw, args.latency_ms)
                entry["speedup"][f"{link}_{ranks}"] = [round(low, 2), round(high, 2)]
                print(f"  {link:7s} {busbw:6.0f} GB/s  {ranks} GPUs: all-reduce {comm:6.2f} ms vs compute "
                      f"{step_ms / ranks:6.2f} ms -> {low:.2f}x-{high:.2f}x one GPU (at most {ranks}x)")
        results["nets"][name] = entry
    write_json(args.out, results)


if __name__ == "__main__":
    main()
