"""What the CPU kernels may use, pinned so that results are the same bytes on every x86-64 CPU
with AVX2 or more: their instruction set (AVX2) and the intra-op threads (2).

The instruction set. torch picks its CPU kernels by what the processor offers: oneDNN
(convolutions, pooling) and ATen's own vectorised kernels (elementwise ops, reductions) have
AVX-512 versions that add in another order than the AVX2 ones, so the last bits differ. Seen:
on an AVX-512 machine a fresh clone's `dvc repro` rewrote the committed LeNet-5 model, metrics,
mined file and pictures; with oneDNN capped at AVX2 they were the committed bytes again. ATen is
capped too, and so is MKL (the linear layers' matrix products), as a precaution: no AVX-512
machine was at hand to show whether they matter. MKL is capped by the instructions it may use
(MKL_ENABLE_INSTRUCTIONS), not by its reproducible mode (MKL_CBWR=AVX2): that mode made a row's
product depend on how many rows are computed with it, which the projection engine's chunks and
the miner's batches rely on not happening (docs/reproducibility.md).

Each library reads its variable once, when it first runs a kernel, so the pin must be in the
environment before torch computes anything: ``cnn_internals/__init__.py`` applies it, and every
stage and ``python -m cnn_internals.<tool>`` imports the package before torch. A variable the
user set is left as it is.

The threads. oneDNN splits a convolution's sums over the intra-op threads, differently for
different counts: LeNet-5 trained at 1 thread has other weights than at 2, and a random
AlexNet's conv maps differ in the last bits between 1 and 3 threads. torch starts one thread per
core, so every stage that computes with torch on the CPU (train, mine, render, report, and
explain) runs THREADS intra-op threads: the count the committed dvc.lock was made with, on
2-core machines. Ranks under torchrun keep the share of the cores the launcher gives them.
docs/reproducibility.md has the measurements and what the pin costs.

``CNN_INTERNALS_CPU_PIN=off`` turns both off: the CPU's widest kernels and all its cores, which
is faster on a large AVX-512 machine and gives other last bits than dvc.lock's.
"""

import os

SWITCH = "CNN_INTERNALS_CPU_PIN"
CHOICES = ("on", "off")
THREADS = 2

# The variable each library reads, and the value that caps it at AVX2.
ISA_PIN = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",       # oneDNN (torch.backends.mkldnn): convolutions, pooling
    "ATEN_CPU_CAPABILITY": "avx2",      # ATen's vectorised CPU kernels
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL: the linear layers' matrix products
}


def pinned(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> bool:
    """Whether ``CNN_INTERNALS_CPU_PIN`` leaves the pin on (the default); ValueError if it is
    neither on nor off."""
    choice = environ.get(SWITCH, "on").strip().lower() or "on"
    if choice not in CHOICES:
        raise ValueError(f"{SWITCH}={environ[SWITCH]!r} is not one of {', '.join(CHOICES)} (on: the same "
                         f"bytes on every x86-64 CPU with AVX2; off: the CPU's widest kernels and all its cores)")
    return choice == "on"


def pin_cpu_isa(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> dict[str, str]:
    """Put the AVX2 cap in ``environ`` where the user has not set a variable; return what was set."""
    if not pinned(environ):
        return {}
    added = {name: value for name, value in ISA_PIN.items() if name not in environ}
    environ.update(added)
    return added


def pin_threads() -> int:
    """torch's intra-op threads: THREADS while the pin is on, else left as they are (by default
    one per core). Returns the count now in force."""
    import torch

    if pinned():
        torch.set_num_threads(THREADS)
    return torch.get_num_threads()
