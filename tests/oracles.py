"""Independent computations the tests hold the engine to (importable: tests/ is on sys.path
under pytest): relative error, brute-force top-k, and a net with ordinary ReLUs for Captum."""

import contextlib

import numpy as np
import torch
from torch import nn


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """||ours - ref|| / ||ref||."""
    return ((ours - ref).norm() / ref.norm()).item()


def brute_force_top_k(acts: torch.Tensor, k: int) -> dict:
    """(N, C, H, W) -> values/images/rows/cols as (C, k) arrays: each image's spatial maximum (the
    first in row-major order), images ranked by it, ties to the lower image index (np.lexsort).
    (N, C) units (fc6, fc7, the scores): values/images, each image's value its output."""
    if acts.dim() == 2:
        table = brute_force_top_k(acts[:, :, None, None], k)
        return {"values": table["values"], "images": table["images"]}
    n, c, h, w = acts.shape
    best, pos = acts.flatten(2).max(2)                                    # (N, C): the first maximum
    best, pos = best.double().numpy(), pos.numpy()
    table = {f: np.empty((c, k), dtype=np.float64 if f == "values" else np.int64) for f in ("values", "images", "rows", "cols")}
    for ch in range(c):
        ranked = np.lexsort((np.arange(n), -best[:, ch]))[:k]             # by value descending, then index
        table["values"][ch], table["images"][ch] = best[ranked, ch], ranked
        table["rows"][ch], table["cols"][ch] = pos[ranked, ch] // w, pos[ranked, ch] % w
    return table


@contextlib.contextmanager
def out_of_place(net):
    """Captum runs on ordinary ReLUs (its hooks on in-place ones are not what we test): the same
    net, every ReLU out of place for the duration."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    flags = [m.inplace for m in relus]
    try:
        for m in relus:
            m.inplace = False
        yield net
    finally:
        for m, flag in zip(relus, flags):
            m.inplace = flag
