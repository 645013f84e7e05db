"""Batches from a prepared split: gathered as uint8 from the memory map, moved to the device,
and only there turned into model inputs by the net's transform (nanoGPT's ``get_batch``).

A background thread gathers the next batch while the current one is used, so reading from
disk overlaps the training step; the order is fixed by the caller, so this changes nothing
in the results. Batches are gathered into two reused host buffers (pinned on CUDA, so the copy
to the GPU is asynchronous): a fresh buffer per batch would cost page faults (CPU) or a pinned
allocation (CUDA) every step.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import numpy.typing as npt
import torch


def gather(images: np.ndarray, indices: npt.ArrayLike) -> torch.Tensor:
    """uint8 images[indices] as a CPU tensor (one copy out of the memory map)."""
    return torch.from_numpy(np.ascontiguousarray(images[np.asarray(indices, dtype=np.int64)]))


class _Staging:
    """Two host buffers of one batch each, used in turn. On CUDA a buffer is refilled only
    once the copy out of it, two batches back, has finished (an event per buffer)."""

    def __init__(self, images, batch_size, cuda):
        self.buffers = [torch.empty((batch_size, *images.shape[1:]), dtype=torch.uint8, pin_memory=cuda)
                        for _ in range(2)]
        self.events = [torch.cuda.Event() if cuda else None for _ in range(2)]

    def fill(self, slot, images, indices):
        if self.events[slot] is not None:
            self.events[slot].synchronize()
        out = self.buffers[slot][:len(indices)]
        np.take(images, indices, axis=0, out=out.numpy())
        return out

    def copied(self, slot):
        if self.events[slot] is not None:
            self.events[slot].record()


def batches(images: np.ndarray, labels: np.ndarray, order: npt.ArrayLike, batch_size: int,
            device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, int64 labels) on ``device``, ``batch_size`` at a time, in ``order``
    (indices into the split). A batch's tensors are valid until the next one is asked for."""
    order = np.asarray(order, dtype=np.int64)
    return batches_of(images, labels, [order[start:start + batch_size] for start in range(0, len(order), batch_size)],
                      device)


def batches_of(images: np.ndarray, labels: np.ndarray, chunks: list,
               device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """As ``batches``, one batch per array of indices in ``chunks`` (a rank's shares of the
    global batches, which need not all be the same size)."""
    chunks = [np.asarray(chunk, dtype=np.int64) for chunk in chunks]
    if not chunks:
        return
    cuda = device.type == "cuda"
    staging = _Staging(images, max(map(len, chunks)), cuda)
    labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(staging.fill, 0, images, chunks[0])
        for i, chunk in enumerate(chunks):
            x = pending.result().to(device, non_blocking=cuda)
            staging.copied(i % 2)
            if i + 1 < len(chunks):
                pending = pool.submit(staging.fill, (i + 1) % 2, images, chunks[i + 1])
            yield x, labels[torch.from_numpy(chunk)].to(device, non_blocking=cuda)
