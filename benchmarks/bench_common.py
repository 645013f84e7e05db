"""Shared by benchmarks/projection.py and benchmarks/mining.py: the random-weight AlexNet they
both run, device choice, a median-of-repeats timer, the machine description and JSON output.

Not a benchmark itself. Both scripts import it as a sibling module (``python benchmarks/X.py``
puts benchmarks/ first on sys.path).
"""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
INPUT_SHAPE = (3, 224, 224)


def alexnet(seed=0, device="cpu"):
    """Krizhevsky et al. 2012 as one nn.Sequential with named modules (the conv stack of
    tests/test_projection.py, in-place ReLUs, plus the classifier head), random weights from
    ``seed``, float32, eval mode."""
    torch.manual_seed(seed)
    layers = [
        ("conv1", nn.Conv2d(3, 96, 11, 4, 2)), ("relu1", nn.ReLU(True)), ("lrn1", nn.LocalResponseNorm(5)),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(96, 256, 5, padding=2)), ("relu2", nn.ReLU(True)), ("lrn2", nn.LocalResponseNorm(5)),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU(True)),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU(True)),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU(True)), ("pool3", nn.MaxPool2d(3, 2)),
        ("flatten", nn.Flatten()),
        ("lin1", nn.Linear(9216, 4096)), ("relu6", nn.ReLU(True)), ("drop1", nn.Dropout()),
        ("lin2", nn.Linear(4096, 4096)), ("relu7", nn.ReLU(True)), ("drop2", nn.Dropout()),
        ("lin3", nn.Linear(4096, 10)),
    ]
    net = nn.Sequential()
    for name, module in layers:
        net.add_module(name, module)
    return net.float().to(device).eval()


def truncated(model, layer):
    """A plain nn.Sequential slice of ``model`` up to and including module ``layer`` (shares
    the modules, so the same weights): the baseline forward, no hooks, none of our code."""
    names = [name for name, _ in model.named_children()]
    return model[: names.index(layer) + 1]


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


def _cpu_name():
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
            "logical_cpus": os.cpu_count(), "cpu": _cpu_name(), "device": device.type}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
    return info


def describe(info):
    return (f"machine: {info['device_name']} ({info['device']}), torch {info['torch']}, "
            f"{info['torch_threads']} torch threads, {info['logical_cpus']} logical CPUs")


def write_json(path, results):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
