"""What the CPU pin costs (cnn_internals/runtime/cpu_pin.py): the same work with the pin on (the default:
AVX2 kernels, 2 intra-op threads) and off (CNN_INTERNALS_CPU_PIN=off: the CPU's widest kernels,
one thread per core), in alternating rounds on this machine, each in a fresh process.

    python benchmarks/cpu_pin.py [--rounds 3] [--epochs 5] [--images 256] [--out FILE]

Work (each a fresh Python process, as the stages run):
  train_lenet5   `python stages/train.py --net lenet5` with train.lenet5.epochs = --epochs, on
                 the prepared MNIST sample (wall time of the whole stage, imports included)
  mine_lenet5    `python stages/mine.py --net lenet5` over its 1,000 held-out digits (wall time)
  mine_alexnet   top-k mining of a random-weight AlexNet at conv1-conv5 over --images random
                 224x224 images in batches of 64, as the mine stage sets the CPU up (timed
                 inside the process: the mining alone)

The stages run in a temporary copy of this checkout's stages/, src/, params.yaml, data/ and
models/ (they need `dvc repro` to have run here once), so the committed outputs are not
touched. Each round runs pinned then unpinned, or the other way round every other round; each
figure is the median of its rounds and the ratio (pinned / unpinned seconds, above 1 = the pin
costs time) the median of the per-round ratios. On a CPU with AVX2 and no AVX-512 and 2 cores
both settings choose the same kernels and threads, so a ratio near 1 there says only that the
pin adds no overhead of its own; the cost it exists to show is on AVX-512 machines and machines
with more cores. Figures go to benchmarks/results/cpu_pin.json.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench_common import cpu_name, describe_rounds, paired_rounds, write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cpu_pin.json"

ALEXNET_MINING = """
import sys, time, torch
from cnn_internals.runtime.cpu_pin import pin_threads
from cnn_internals.engine.mining import top_k_activations
from cnn_internals.models.alexnet import build_alexnet
pin_threads()                                   # what the mine stage's device_for does on the CPU
torch.manual_seed(0)
model = build_alexnet(10, "kaiming").eval()
layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
batches = [torch.randn(64, 3, 224, 224) for _ in range({images} // 64)]
top_k_activations(model, layers, batches[:1], 9)          # warm-up: kernel selection
start = time.perf_counter()
top_k_activations(model, layers, batches, 9)
print(time.perf_counter() - start, torch.get_num_threads())
"""


def copy_checkout(epochs: int) -> Path:
    """A scratch copy holding what the stages read; its params.yaml trains for ``epochs``."""
    for needed in ("data/prepared/mnist", "data/stats/mnist", "models/lenet5.pt"):
        if not (REPO / needed).exists():
            raise SystemExit(f"{needed} missing: run `dvc repro` in {REPO} first")
    root = Path(tempfile.mkdtemp(prefix="cpu_pin_"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    for name in ("stages", "src", "data", "models"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["lenet5"]["epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def environment(pin: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")}
    env["CNN_INTERNALS_CPU_PIN"] = "on" if pin else "off"
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def run_stage(root: Path, stage: str, pin: bool) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, f"stages/{stage}.py", "--net", "lenet5"], cwd=root, env=environment(pin),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} failed in {root}: {done.stderr.strip()}")
    return time.perf_counter() - start


def run_alexnet(images: int, pin: bool) -> tuple:
    out = subprocess.run([sys.executable, "-c", ALEXNET_MINING.format(images=images)], env=environment(pin),
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="LeNet-5 training epochs (default 5)")
    parser.add_argument("--images", type=int, default=256, help="AlexNet mining images, a multiple of 64")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    root = copy_checkout(args.epochs)
    times = {work: {"pinned": [], "unpinned": []} for work in ("train_lenet5", "mine_lenet5", "mine_alexnet")}
    threads = {}
    try:
        for round_ in range(args.rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for pin in order:
                key = "pinned" if pin else "unpinned"
                times["train_lenet5"][key].append(run_stage(root, "train", pin))
                times["mine_lenet5"][key].append(run_stage(root, "mine", pin))
                seconds, threads[key] = run_alexnet(args.images, pin)
                times["mine_alexnet"][key].append(seconds)
            print(f"round {round_ + 1}: " + ", ".join(
                f"{work} {t['pinned'][-1]:.1f}/{t['unpinned'][-1]:.1f} s" for work, t in times.items()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    results = {"machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "avx512": has_avx512(),
                           "torch_threads": threads},
               "settings": {"rounds": args.rounds, "lenet5_epochs": args.epochs, "alexnet_images": args.images}}
    for work, t in times.items():
        results[work] = paired_rounds(t["pinned"], t["unpinned"], "pinned", "unpinned")
        print(describe_rounds(work, results[work], "pinned", "unpinned"))
    write_json(args.out, results)


def cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_avx512() -> bool:
    return "avx512f" in cpu_flags()


if __name__ == "__main__":
    main()
