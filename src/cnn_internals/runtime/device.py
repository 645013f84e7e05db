"""Where a stage computes: the device, deterministic kernels, and host memory kept on the CPU."""

import os
import re
from typing import Annotated

import torch
from pydantic import AfterValidator

from cnn_internals.core.errors import UserError

# What train.<net>.device may say: the devices this pipeline trains on. meta has no data, and
# the CPU is one device (torch accepts "cpu:3" and ignores the index).
DEVICE_FORMS = "auto, cpu, cuda, cuda:N, mps"


def device_name(name: str) -> str:
    """``name`` if it is one of DEVICE_FORMS (the params schema's check: whether the device is
    there is ``pick_device``'s)."""
    if name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ValueError(f"must be one of {DEVICE_FORMS}; got {name!r}")


Device = Annotated[str, AfterValidator(device_name)]


def pick_device(name: str = "auto", key: str = "device") -> torch.device:
    """"auto": CUDA, else Apple's MPS, else the CPU; or one of DEVICE_FORMS, which must be
    there (``key``: the setting's name, for the message)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device_name(name))
    except (RuntimeError, ValueError):
        raise UserError(f"{key} must be one of {DEVICE_FORMS}; got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key} is {name!r}, but no CUDA GPU is visible: use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{key} is {name!r}, but {torch.cuda.device_count()} CUDA GPUs are visible "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"{key} is 'mps', but Apple's Metal (MPS) is not available here: use auto or cpu")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_host_memory() -> bool:
    """Keep freed host memory in this process for the next step (glibc's malloc only; True if set).

    glibc serves every allocation over its mmap threshold (32 MB at most) with a fresh mmap and
    unmaps it on free, and trims the heap's free top: AlexNet's maps on the CPU (a 128-image
    batch's conv1 output is 148 MB) came back as new zeroed pages every step, paid for in page
    faults and system time. With mmap off for large blocks and no trimming (mallopt(3):
    M_MMAP_MAX 0, M_TRIM_THRESHOLD -1) the heap grows to the step's peak once and is reused (the
    figures: docs/benchmarks.md, 'Host memory'; benchmarks/training.py has it against a plain
    loop). What this costs: the process keeps its peak memory until it exits,
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
