"""The projection engine and the miner of this checkout against another commit's, in alternating
rounds on the same cores: a refactor must not change their speed.

    git worktree add /tmp/before <commit>          # the code to compare against
    python benchmarks/engine_ab.py --old /tmp/before [--rounds 7] [--out FILE]

Work (each round: one fresh process per checkout, old and new in turn, the order swapped every
other round; the time is measured inside the process, after a warm-up call):
  project   guided backprop of 18 units at each of a random AlexNet's conv1-conv5
            (engine.projection.project, one call per layer), 224x224 random images
  mine      top-9 of every map of conv1-conv5 over 128 random 224x224 images in batches of 64
            (engine.mining.top_k_activations)

The model is the project's AlexNet with kaiming weights from seed 0 (built by each checkout's
own code); a checkout from before the packages (flat cnn_internals.projection / .mining) and one
after are both understood. Each figure is the median over the rounds; the ratio new/old is the
median of the per-round ratios (1 = the same speed). Figures go to
benchmarks/results/engine_ab.json, or --out.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench_common import describe_rounds, paired_rounds, write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "engine_ab.json"

WORK = r"""
import sys, time, torch
try:
    from cnn_internals.engine.mining import top_k_activations
    from cnn_internals.engine.projection import project
except ImportError:                       # the flat layout before the packages
    from cnn_internals.mining import top_k_activations
    from cnn_internals.projection import project
from cnn_internals.models.alexnet import build_alexnet

torch.set_num_threads(2)
torch.manual_seed(0)
model = build_alexnet(10, "kaiming").eval()
layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
units = 18

def do_project():
    for layer in layers:
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(units, 3, 224, 224, generator=generator)
        channels = torch.arange(units)
        rows = torch.full((units,), 2)
        project(model, layer, images, channels, rows, rows.clone(), "guided_backprop")

batches = [torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(2)]

def do_mine():
    top_k_activations(model, layers, batches, 9)

work = {"project": do_project, "mine": do_mine}[sys.argv[1]]
work()                                    # warm-up: kernel selection, first allocations
start = time.perf_counter()
work()
print(time.perf_counter() - start)
"""


def seconds(checkout: Path, work: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    done = subprocess.run([sys.executable, "-c", WORK, work], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{work} failed in {checkout}: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="a checkout (git worktree) of the code to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.old / "src" / "cnn_internals").is_dir():
        parser.error(f"--old {args.old}: no src/cnn_internals there")

    checkouts = {"old": args.old.resolve(), "new": REPO}
    times = {work: {"old": [], "new": []} for work in ("project", "mine")}
    for round_ in range(args.rounds):
        order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
        for work in times:
            for which in order:
                times[work][which].append(seconds(checkouts[which], work))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{w} old {t['old'][-1]:.2f} s new {t['new'][-1]:.2f} s" for w, t in times.items()), flush=True)

    results = {"old": str(args.old), "rounds": args.rounds}
    for work, t in times.items():
        results[work] = paired_rounds(t["new"], t["old"], "new", "old")
        print(describe_rounds(work, results[work], "new", "old"))
    write_json(args.out, results)


if __name__ == "__main__":
    main()
