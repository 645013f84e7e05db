"""Peak memory of each stage at N and 4N images: it must not grow with the dataset beyond the
memory map of the prepared arrays.

    python benchmarks/stage_memory.py [--quick] [--out benchmarks/results/stage_memory.json]

For each dataset shape it writes a synthetic prepared dataset (random uint8 images) of N and of
4N training and held-out images into a scratch project folder, then runs the real stage
scripts there, each in a fresh process, and reads that process's peak resident set size
(ru_maxrss). LeNet-5 on MNIST-shaped data (28x28): stats, train (one epoch), mine, render.
AlexNet on Imagenette-shaped data (256x256x3): stats, mine and render with random weights
(training AlexNet on a CPU here takes minutes per epoch; its input path's memory is measured by
benchmarks/alexnet_input.py). Resident pages of the memory map count in RSS, so the table
also gives the size of the arrays a stage reads: growth beyond it would be a leak.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from cnn_internals.data.prepared import write_classes, write_split
from cnn_internals.models import NETS

from bench_common import write_json

REPO = Path(__file__).resolve().parents[1]
MEASURE = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    if stop.code not in (None, 0):
        raise
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
CASES = {  # net: (dataset, image shape, splits, stages)
    "lenet5": ("mnist", (28, 28), ("train", "test"), ("stats", "train", "mine", "render")),
    "alexnet": ("imagenette", (256, 256, 3), ("train", "val"), ("stats", "mine", "render")),
}


def write_dataset(project, dataset, shape, splits, n):
    rng = np.random.default_rng(0)
    folder = project / "data" / "prepared" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        write_split(folder, split, rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                    rng.integers(0, 10, n).astype(np.int64))
    write_classes(folder, [{"name": str(c)} for c in range(10)])
    return sum(f.stat().st_size for f in folder.glob("*_images.npy"))


def run_stage(project, stage, args):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(REPO / "stages" / f"{stage}.py"), *args],
                            cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{stage} {' '.join(args)} failed:\n{result.stderr}")
    return int(result.stdout.split("PEAK_KIB")[-1]) / 1024          # MiB


def measure(net, n):
    dataset, shape, splits, stages = CASES[net]
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["train"][net].update(epochs=1, device="cpu")
        params["mine"][net]["k"] = 9
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        array_mib = write_dataset(project, dataset, shape, splits, n) / 2 ** 20
        if "train" not in stages:           # random weights stand in for training
            torch.manual_seed(0)
            (project / "models").mkdir()
            torch.save(NETS[net].build(params["train"][net]).state_dict(), project / "models" / f"{net}.pt")
        peaks = {}
        for stage in stages:
            args = ["--dataset", dataset] if stage == "stats" else ["--net", net]
            peaks[stage] = round(run_stage(project, stage, args), 1)
        return {"images_per_split": n, "array_mib": round(array_mib, 1), "peak_rss_mib": peaks}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 64 for both")
    parser.add_argument("--net", choices=("lenet5", "alexnet", "all"), default="all")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stage_memory.json")
    args = parser.parse_args()
    sizes = {"lenet5": 64 if args.quick else 2000, "alexnet": 64 if args.quick else 256}
    results = json.loads(args.out.read_text()) if args.net != "all" and args.out.is_file() else {}
    for net, n in sizes.items():
        if args.net not in ("all", net):
            continue
        small, large = measure(net, n), measure(net, 4 * n)
        results[net] = {"N": small, "4N": large}
        print(f"{net}: arrays {small['array_mib']} MiB at N={n}, {large['array_mib']} MiB at 4N")
        for stage, peak in small["peak_rss_mib"].items():
            big = large["peak_rss_mib"][stage]
            print(f"  {stage:7s} peak RSS {peak:8.1f} MiB at N, {big:8.1f} MiB at 4N: growth {big - peak:7.1f} MiB "
                  f"(the arrays grew {large['array_mib'] - small['array_mib']:.1f} MiB)")
    if not args.quick:
        write_json(args.out, results)
    print(json.dumps(results, sort_keys=True) if args.quick else "")


if __name__ == "__main__":
    main()
