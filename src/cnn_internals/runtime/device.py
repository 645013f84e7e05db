"""Where a stage computes: the device, deterministic kernels, and host memory kept on the CPU."""

import os

import torch

from cnn_internals.core.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA, else Apple's MPS, else the CPU; or a torch device string."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is visible: use auto or cpu")
    return device


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_host_memory() -> bool:
    """Keep freed host memory in this process for the next step (glibc's malloc only; True if set).

    glibc serves every allocation over its mmap threshold (32 MB at most) with a fresh mmap and
    unmaps it on free, and trims the heap's free top: AlexNet's maps on the CPU (a 128-image
    batch's conv1 output is 148 MB) came back as new zeroed pages every step, about a million
    page faults and 4 s of system time in a 12 s step. With mmap off for large blocks and no
    trimming (mallopt(3): M_MMAP_MAX 0, M_TRIM_THRESHOLD -1) the heap grows to the step's peak
    once and is reused: a 128-image step went from 12.7 to 10.6 s (benchmarks/training.py has it
    against a plain loop). What this costs: the process keeps its peak memory until it exits,
    which a training process reaches every step anyway. PyTorch's CPU tuning guide gets the
    same from jemalloc or tcmalloc; this needs no extra library. Call it once, before
    training; it changes no result.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):    # glibc only: other libcs' mallopt differ
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


def make_deterministic() -> None:
    # cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
