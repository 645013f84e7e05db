"""Cost of checking ImageNet weights on every load: load_pretrained against a plain torch.load.

    python benchmarks/pretrained_load.py [--repeats 5] [--out benchmarks/results/pretrained_load.json]

Workload: a VGG-16 state dict (torchvision's vgg16(weights=None): the published file's 32
tensors, 138,357,544 numbers, 553 MB) saved as torchvision saves its .pth files, in a temporary
folder. Baseline: ``torch.load(path, map_location="cpu", weights_only=True)``, what loading the
file costs without the check. Ours: ``load_pretrained(path, sha256)``: the streamed sha256 of the
whole file (1 MiB blocks), then the same torch.load. Also the hash alone, as MB/s. The file
stays in the page cache between calls (it was just written): the figures are the hash's and the
loader's own, not the disk's. Timing: median of --repeats calls after one warm-up.
"""

import argparse
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torchvision.models import vgg16

from cnn_internals.data.download import sha256sum
from cnn_internals.data.pretrained import load_pretrained

from bench_common import RESULTS, describe, machine, timed, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "pretrained_load.json")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    info = machine(cpu)
    print(describe(info))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vgg16.pth"
        torch.save(OrderedDict(vgg16(weights=None).state_dict()), path)
        size = path.stat().st_size
        sha256 = sha256sum(path)
        hash_s, _ = timed(lambda: sha256sum(path), args.repeats, cpu)
        baseline_s, _ = timed(lambda: torch.load(path, map_location="cpu", weights_only=True), args.repeats, cpu)
        ours_s, state = timed(lambda: load_pretrained(path, sha256), args.repeats, cpu)
    numbers = sum(t.numel() for t in state.values())
    results = {
        "command": f"python benchmarks/pretrained_load.py --repeats {args.repeats}",
        "machine": info, "file_bytes": size, "tensors": len(state), "numbers": numbers,
        "sha256_s": round(hash_s, 4), "sha256_mb_per_s": round(size / 1e6 / hash_s, 1),
        "baseline_torch_load_s": round(baseline_s, 4), "load_pretrained_s": round(ours_s, 4),
        "ratio_load_pretrained_to_torch_load": round(ours_s / baseline_s, 3),
    }
    print(f"VGG-16 state dict: {size:,} bytes, {len(state)} tensors, {numbers:,} numbers")
    print(f"sha256 alone:             {hash_s:.3f} s ({size / 1e6 / hash_s:,.0f} MB/s)")
    print(f"baseline torch.load:      {baseline_s:.3f} s")
    print(f"load_pretrained (checks): {ours_s:.3f} s = {ours_s / baseline_s:.2f}x the baseline")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
