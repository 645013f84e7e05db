"""Imported first by every stage script: the library it runs is this checkout's own.

`dvc exp run --queue` runs each experiment in a copy of the repository under .dvc/tmp/exps,
while `pip install -e .` points Python at the main checkout's src/: without this, a queued
experiment would run the main checkout's code and dvc.lock would credit the copy's. So src/
beside this folder goes first on sys.path, which also lets a stage run where the package is
not installed, as long as what it needs is.

It also imports the package before the stage imports torch: the package pins what the CPU
kernels may use (cnn_internals/runtime/cpu_pin.py), which must be in place before torch computes.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# The distributions the stages import (module name: what pip calls it).
NEEDED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "yaml": "pyyaml",
          "matplotlib": "matplotlib", "tqdm": "tqdm", "PIL": "Pillow"}
missing = [pip_name for module, pip_name in NEEDED.items() if importlib.util.find_spec(module) is None]
if missing:
    print(f"error: {', '.join(missing)} not installed: run `pip install -e .` in {ROOT} "
          "(README, Set up)", file=sys.stderr)
    sys.exit(2)

import cnn_internals  # noqa: E402,F401 -- the CPU pin, before the stage imports torch
