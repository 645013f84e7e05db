"""prepare_imagenette on one core against all cores, and against bare decoding, in one run.

    python benchmarks/imagenette_prepare.py [--images N] [--repeats R] [--out FILE]

Workload. A synthetic imagenette2-320.tgz of N JPEGs (default 300: 21 train + 9 val per class)
in the real layout, built in a temporary folder before any clock starts: short side 320 px,
long side cycling through 320..480 px (mean about 320x395, near the real archive's), quality
90, content = smooth random colour fields plus fine noise, so the entropy decoder has real work
(mean JPEG size is printed; the real archive's is about 25 KB, so ours is if anything slower).
  bare       decode_image (Pillow decode, RGB, resize to 256 on the short side, centre crop)
             over the JPEG bytes held in memory, one core: the floor, no tar, no writing.
  workers=1  prepare_imagenette(archive, out, size=256, workers=1): both streaming passes over
             the .tgz, decoding in this process, rows written to the .npy memory maps.
  workers=C  the same with C = os.cpu_count() decoding processes (the default).
Time: time.perf_counter around the whole call (pool start-up included), median of --repeats
(3) after one warm-up run of each. The output folder is removed between runs.

The ESTIMATE for the real archive (9,469 train + 3,925 val = 13,394 images) is the measured
per-image wall time times 13,394: an extrapolation, not a measurement (the real archive's
JPEGs, disk and page cache differ).

No torch here (benchmarks/bench_common.py imports it): this path never needs it, and a forked
pool would carry it along. Figures go to benchmarks/results/imagenette_prepare.json (sorted
keys) or --out. About 30 s on 2 CPU cores.
"""

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from cnn_internals.data.imagenette import CLASSES, DEFAULT_SIZE, ROOT, decode_image, prepare_imagenette

from bench_common import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
REAL_IMAGES = {"train": 9469, "val": 3925}
REAL_MEAN_JPEG_BYTES = 340 * 10**6 // 13394  # about: the archive's ~340 MB over its images
LONG_SIDES = (427, 320, 480, 400, 360, 384)  # mean 395
QUALITY = 90
SEED = 0


def synthetic_jpeg(rng: np.random.Generator, index: int) -> bytes:
    """A 320-px-short-side JPEG with photo-like entropy: a smooth colour field and fine noise."""
    long_side = LONG_SIDES[index % len(LONG_SIDES)]
    width, height = (long_side, 320) if index % 3 else (320, long_side)  # one in three portrait
    coarse = Image.fromarray(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    pixels = np.clip(field + rng.normal(0, 10, field.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


def build_archive(path: Path, images: int) -> list[bytes]:
    """The .tgz at ``path`` in imagenette2-320's layout; returns the JPEG bytes it holds."""
    rng = np.random.default_rng(SEED)
    jpegs = []
    with tarfile.open(path, "w:gz") as tar:
        for i in range(images):
            split = "val" if i % 10 >= 7 else "train"  # 70 / 30, like the real archive
            wnid = CLASSES[i % len(CLASSES)][0]
            data = synthetic_jpeg(rng, i)
            jpegs.append(data)
            info = tarfile.TarInfo(f"{ROOT}/{split}/{wnid}/{wnid}_{i}.JPEG")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return jpegs


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(archive: Path, jpegs: list[bytes], work: Path, repeats: int, cores: int) -> dict:
    """Median seconds of bare decoding, prepare with one worker and with ``cores`` workers."""
    out = work / "out"

    def prepare(workers):
        def run():
            shutil.rmtree(out, ignore_errors=True)
            prepare_imagenette(archive, out, size=DEFAULT_SIZE, workers=workers)
        return run

    def bare():
        for data in jpegs:
            decode_image(data, DEFAULT_SIZE)

    return {"bare": timed(bare, repeats), "workers_1": timed(prepare(1), repeats),
            f"workers_{cores}": timed(prepare(cores), repeats)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="JPEGs in the synthetic archive (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--out", default=str(RESULTS / "imagenette_prepare.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    info = {"cpu": cpu_name(), "logical_cpus": cores, "python": platform.python_version(),
            "numpy": np.__version__, "pillow": PIL.__version__}
    print(f"machine: {info['cpu']}, {cores} logical CPUs, Python {info['python']}, Pillow {info['pillow']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = work / "imagenette2-320.tgz"
        jpegs = build_archive(archive, args.images)
        mean_bytes = sum(map(len, jpegs)) / len(jpegs)
        print(f"{args.images} synthetic JPEGs, short side 320, quality {QUALITY}, mean {mean_bytes / 1024:.1f} KiB "
              f"(real archive: about {REAL_MEAN_JPEG_BYTES / 1024:.0f} KiB); size {DEFAULT_SIZE}; "
              f"median of {args.repeats} after a warm-up")
        seconds = measure(archive, jpegs, work, args.repeats, cores)
    n = args.images
    per_image_ms = {k: 1000 * s / n for k, s in seconds.items()}
    for key, s in seconds.items():
        print(f"  {key:10} {s:7.3f} s   {per_image_ms[key]:6.2f} ms/image   {n / s:7.1f} images/s")
    all_cores = seconds[f"workers_{cores}"]
    speedup = seconds["workers_1"] / all_cores
    overhead = seconds["workers_1"] / seconds["bare"]
    print(f"  speed-up workers={cores} over workers=1: {speedup:.2f}x   "
          f"prepare(workers=1) / bare decode: {overhead:.2f}")
    real = sum(REAL_IMAGES.values())
    estimate = {k: per_image_ms[k] / 1000 * real for k in ("workers_1", f"workers_{cores}")}
    print(f"ESTIMATE (extrapolated, not measured) for the real archive's {real:,} images: "
          f"{estimate['workers_1'] / 60:.1f} min on 1 worker, {estimate[f'workers_{cores}'] / 60:.1f} min "
          f"on {cores}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": info,
        "config": {"images": n, "size": DEFAULT_SIZE, "jpeg_quality": QUALITY, "short_side": 320,
                   "long_sides": list(LONG_SIDES), "mean_jpeg_bytes": round(mean_bytes),
                   "repeats": args.repeats, "workers_all": cores},
        "time_s": seconds,
        "per_image_ms": per_image_ms,
        "images_per_s": {k: n / s for k, s in seconds.items()},
        "speedup_all_cores_over_1": speedup,
        "prepare_1_worker_over_bare_decode": overhead,
        "estimate_real_archive": {"images": real, "note": "extrapolated from per_image_ms, not measured",
                                  "seconds": estimate},
    }, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
