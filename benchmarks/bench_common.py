"""Shared by the benchmarks: the random-weight AlexNet projection.py and mining.py run (the
project's own model), device choice, a median-of-repeats timer, the machine description and JSON output.

Not a benchmark itself. Both scripts import it as a sibling module (``python benchmarks/X.py``
puts benchmarks/ first on sys.path).
"""

import json
import os
import platform
import statistics
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from cnn_internals.models.alexnet import build_alexnet
from cnn_internals.models.transforms import IMAGENET_MEAN, IMAGENET_STD

RESULTS = Path(__file__).resolve().parent / "results"
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
INPUT_SHAPE = (3, 224, 224)


def alexnet(seed=0, device="cpu"):
    """The project's AlexNet (cnn_internals.models.alexnet: in-place ReLUs, LRN, overlapping
    pools, the classifier head), kaiming weights from ``seed``, float32, eval mode."""
    torch.manual_seed(seed)
    return build_alexnet(10, "kaiming").float().to(device).eval()


def truncated(model, layer):
    """A plain nn.Sequential of ``model``'s modules up to and including ``layer`` (the same
    module objects, so the same weights): the baseline forward, no hooks, none of our code.
    AlexNet's children run in definition order up to pool3, where its forward flattens."""
    children = list(model.named_children())
    names = [name for name, _ in children]
    return nn.Sequential(OrderedDict(children[: names.index(layer) + 1]))


def imagenet_normalized(pixels):
    """[0, 1] pixels (B, 3, H, W) -> ImageNet-normalised inputs (torchvision's), differentiably."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def rel_err(ours, ref):
    """||ours - ref|| / ||ref||, a float."""
    return float((ours - ref).norm() / ref.norm().clamp_min(1e-30))


def pick_device(choice):
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(choice)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats, device):
    """(median seconds over ``repeats`` calls after one warm-up call, the last call's result)."""
    def once():
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        return time.perf_counter() - start, result

    once()  # warm-up: first-call allocations, kernel selection, lazy initialisation
    times, result = [], None
    for _ in range(repeats):
        seconds, result = once()
        times.append(seconds)
    return statistics.median(times), result


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device):
    """What the figures were measured on."""
    info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "logical_cpus": os.cpu_count(), "cpu": cpu_name(), "device": device.type}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
    return info


def proc_status(field):
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def describe(info):
    return (f"machine: {info['device_name']} ({info['device']}), torch {info['torch']}, "
            f"{info['torch_threads']} torch threads, {info['logical_cpus']} logical CPUs")


def paired_rounds(first: list, second: list, first_name: str, second_name: str) -> dict:
    """Two settings timed in alternating rounds: each one's median seconds, and the ratio
    first/second as the median of the per-round ratios with their range (machines here are
    noisy: a ratio taken round by round cancels what drifts between rounds)."""
    ratios = [f / s for f, s in zip(first, second)]
    return {f"{first_name}_s": round(statistics.median(first), 3), f"{second_name}_s": round(statistics.median(second), 3),
            f"ratio_{first_name}_over_{second_name}": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def describe_rounds(work: str, result: dict, first_name: str, second_name: str) -> str:
    return (f"{work}: {first_name} {result[f'{first_name}_s']} s, {second_name} {result[f'{second_name}_s']} s, "
            f"{first_name}/{second_name} {result[f'ratio_{first_name}_over_{second_name}']} "
            f"(rounds {result['ratio_range'][0]}-{result['ratio_range'][1]})")


def write_json(path, results):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
