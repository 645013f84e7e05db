"""Does AlexNet's mixed-precision training on CUDA stay finite, and under which settings?
One short training (the real path) per case, on random data; prints each case's loss or the
error that stopped it.

    python benchmarks/amp_check.py [--images N] [--out FILE]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cnn_internals.core.errors import UserError
from cnn_internals.data.prepared import Split
from cnn_internals.data.statistics import image_statistics
from cnn_internals.models import NETS
from cnn_internals.runtime.device import make_deterministic
from cnn_internals.training.loop import Checkpoint, train
from cnn_internals.training.recipe import Recipe

from bench_common import describe, machine, write_json


def case(split, stats, amp, deterministic, fill, fp16):
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.utils.deterministic.fill_uninitialized_memory = fill
    bf16 = torch.cuda.is_bf16_supported
    if fp16:
        torch.cuda.is_bf16_supported = lambda *a, **k: False
    p = {"weight_init": "kaiming", "normalize": "standardize", "augment": True, "lighting_std": 0.1}
    net = NETS["alexnet"]
    torch.manual_seed(0)
    model = net.build(p).cuda()
    recipe = Recipe(epochs=2, batch_size=32, lr=0.01, seed=0, optimizer="sgd", weight_decay=5e-4,
                    schedule="constant", amp=amp)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            history = train(model, net.loss(p), net.inputs(stats, p, "cuda"), split, split, recipe,
                            Checkpoint(tmp, "amp"), log=lambda s: None)
        return {"train_loss": [h["train_loss"] for h in history]}
    except UserError as err:
        return {"error": str(err)}
    finally:
        torch.cuda.is_bf16_supported = bf16


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "amp_check_cuda.json")
    args = parser.parse_args()
    make_deterministic()
    info = machine(torch.device("cuda"))
    print(describe(info))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 256, 256, 3), dtype=np.uint8)
    split = Split(images=images, labels=rng.integers(0, 10, args.images).astype(np.int64), classes=tuple("0123456789"))
    stats = image_statistics(images)
    results = {"machine": info, "cases": {}}
    for name, kw in {"fp32_deterministic": dict(amp=False, deterministic=True, fill=True, fp16=False),
                     "bf16_deterministic": dict(amp=True, deterministic=True, fill=True, fp16=False),
                     "bf16_deterministic_nofill": dict(amp=True, deterministic=True, fill=False, fp16=False),
                     "bf16_free": dict(amp=True, deterministic=False, fill=False, fp16=False),
                     "fp16_deterministic": dict(amp=True, deterministic=True, fill=True, fp16=True),
                     "fp16_free": dict(amp=True, deterministic=False, fill=False, fp16=True)}.items():
        results["cases"][name] = case(split, stats, **kw)
        print(f"{name:28s} {results['cases'][name]}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
