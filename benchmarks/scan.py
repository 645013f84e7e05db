"""scan@'s listing of a local folder (``folder_manifest``: every file's path, size and mtime,
sorted and hashed) against a bare ``os.walk`` + ``stat`` of the same files, in one run; and
validate's ``known_classes`` (folder listings only) on the same tree.

    python benchmarks/scan.py [--files N] [--classes C] [--out FILE]

Workload. A temporary tree of N tiny files (default 100,000, 1 byte each, named like ImageNet's
``<class>/<class>_<i>.JPEG``) in C class folders (default 1,000, ImageNet's count), written
before any clock starts, in the system's temporary folder (this machine: ext4 on a virtual
disk). Then, in this order:
  manifest, first   folder_manifest(tree): the first call in this process
  manifest, second  the same again
  bare              os.walk(tree) with os.stat of every file: the floor any lister pays
  known_classes     validate's classes of the same tree as an image folder (val_fraction 0.1):
                    listings of the top folder and of one class folder, no per-file stat
Time: time.perf_counter around each call, one call each. The files were just written, so the
OS page cache holds their directory entries and inodes for every call, the first included:
this is the cost of listing, not of a cold disk (a cold disk adds a read per directory block
and inode, which this does not measure).

The PROJECTION for ImageNet's train + val (1,281,167 + 50,000 files) is the first call's
files/s applied to 1,331,167 files: an extrapolation (one file per entry as here; ImageNet's
1,300 files a folder and longer names differ), not a measurement. Figures go to
benchmarks/results/scan.json (sorted keys) or --out. About 30 s on 2 CPU cores.
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from cnn_internals.data.imagefolder import ImageFolderConfig, known_classes
from cnn_internals.data.manifest import folder_manifest

from bench_common import RESULTS, cpu_name, machine, write_json

IMAGENET_FILES = {"train": 1_281_167, "val": 50_000}


def build_tree(folder: Path, files: int, classes: int) -> None:
    """``files`` one-byte files spread evenly over ``classes`` class folders."""
    names = [f"n{c:08d}" for c in range(classes)]
    for name in names:
        (folder / name).mkdir(parents=True)
    for i in range(files):
        name = names[i % classes]
        (folder / name / f"{name}_{i}.JPEG").write_bytes(b"x")


def bare_listing(folder: Path) -> int:
    """os.walk + os.stat of every file: what listing paths, sizes and mtimes costs at least."""
    count = 0
    for here, _, names in os.walk(folder):
        for name in names:
            os.stat(os.path.join(here, name))
            count += 1
    return count


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="files in the tree (default 100,000)")
    parser.add_argument("--classes", type=int, default=1_000, help="class folders (default 1,000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scan.json")
    args = parser.parse_args()
    info = machine(torch.device("cpu"))
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs")
    with tempfile.TemporaryDirectory(prefix="scan-") as tmp:
        tree = Path(tmp) / "photos"
        build_seconds, _ = timed(lambda: build_tree(tree, args.files, args.classes))
        print(f"wrote {args.files:,} one-byte files in {args.classes:,} class folders in {build_seconds:.1f} s "
              f"under {tmp} (page cache warm from here on)")
        rss_before = peak_rss_mib()
        first, found = timed(lambda: folder_manifest(tree))
        rss_growth = peak_rss_mib() - rss_before
        second, again = timed(lambda: folder_manifest(tree))
        bare, counted = timed(lambda: bare_listing(tree))
        config = ImageFolderConfig.model_validate({"kind": "imagefolder", "source": str(tree), "size": 256,
                                                   "val_fraction": 0.1})
        classes_s, classes = timed(lambda: known_classes(config))
    assert found == again and found["files"] == counted == args.files, (found, counted)
    assert classes is not None and len(classes) == args.classes, classes
    rate = args.files / first
    imagenet = sum(IMAGENET_FILES.values())
    projected = imagenet / rate
    print(f"baseline  os.walk + stat             {bare:6.2f} s  {args.files / bare:10,.0f} files/s")
    print(f"ours      folder_manifest, first     {first:6.2f} s  {rate:10,.0f} files/s  "
          f"(peak RSS +{rss_growth:.0f} MiB)")
    print(f"ours      folder_manifest, second    {second:6.2f} s  {args.files / second:10,.0f} files/s")
    print(f"ratio folder_manifest (first) / bare: {first / bare:.2f}")
    print(f"known_classes (validate): {classes_s * 1000:.1f} ms for {len(classes):,} class folders")
    print(f"PROJECTED (extrapolated, not measured; warm cache) for ImageNet's train + val, {imagenet:,} files: "
          f"{projected:.0f} s")
    write_json(args.out, {
        "what": "scan@'s folder_manifest vs os.walk + stat over a tree of tiny files, page cache warm",
        "command": "python benchmarks/scan.py" + (f" --files {args.files}" if args.files != 100_000 else "")
                   + (f" --classes {args.classes}" if args.classes != 1_000 else ""),
        "machine": info,
        "config": {"files": args.files, "classes": args.classes, "file_bytes": 1,
                   "cache": "warm: the files were just written", "build_s": round(build_seconds, 2)},
        "seconds": {"manifest_first": round(first, 3), "manifest_second": round(second, 3), "bare": round(bare, 3),
                    "known_classes": round(classes_s, 4)},
        "files_per_s": {"manifest_first": round(rate), "manifest_second": round(args.files / second),
                        "bare": round(args.files / bare)},
        "ratio_manifest_first_over_bare": round(first / bare, 3),
        "manifest_peak_rss_growth_mib": round(rss_growth, 1),
        "projected_imagenet": {"files": imagenet, "splits": IMAGENET_FILES, "seconds": round(projected, 1),
                               "note": "extrapolated from the first call's files/s with a warm cache, not measured"},
    })


if __name__ == "__main__":
    main()
