"""Training and mining on several processes with PyTorch's own engine: torchrun starts them,
DDP keeps training's in step.

    train.<net>.nproc: 1   one process (the default)
    train.<net>.nproc: N   `python stages/train.py --net <net>` checks its params, then runs
                           python -m torch.distributed.run --standalone --nproc_per_node=N
                               stages/train.py --net <net>
                           and waits (``launch``)

Each rank joins the process group (``process_group``: NCCL on CUDA, rank r on cuda:LOCAL_RANK;
gloo on the CPU) and trains its share of every global batch (``shard``): the global batch and
the learning rate stay what the params say, whatever N is. DDP averages the gradients over the
ranks, the epoch's metrics are summed over them (``all_reduce_sum``), and rank 0 alone writes
checkpoints, logs and outputs. A failed run ends in one line naming the rank that failed first
and how, torchrun's own report kept in a log file.

Mining (``mine.<net>.nproc``, the same launch) needs no gradients: each rank mines a contiguous
run of whole batches (``batch_share``) and rank 0 gathers the ranks' tables (``gather_to_main``)
to merge them.
"""

import contextlib
import inspect
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from cnn_internals.core.atomic import write_text
from cnn_internals.core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, logs and outputs."""
        return self.rank == 0


SINGLE = World()


class RankFailed(UserError):
    """A rank died or hit a bug (not a user error): one line, exit code 1."""

    exit_code = 1


def under_torchrun() -> bool:
    """True in a process torchrun started (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_processes(nproc: int, device: torch.device, where: str, key: str) -> None:
    """``nproc`` processes (``key``.nproc in the params file ``where``) can run on ``device``
    here. Under torchrun, this machine's share is torchrun's LOCAL_WORLD_SIZE."""
    if nproc == 1:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", nproc)) if under_torchrun() else nproc
    if device.type not in ("cuda", "cpu"):
        raise UserError(f"{where}: {key}.nproc is {nproc}, which runs on CUDA GPUs (NCCL) or the CPU (gloo), not "
                        f"on {device.type}: set {key}.device: cpu, or nproc: 1")
    if device.type == "cuda" and device.index is not None:
        raise UserError(f"{where}: {key}.device names one GPU ({device}) but {key}.nproc is {nproc}: use device: "
                        "cuda (rank r runs on cuda:r; choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if device.type == "cuda" and local > torch.cuda.device_count():
        raise UserError(f"{where}: {key}.nproc asks for {local} processes on this machine but "
                        f"{torch.cuda.device_count()} CUDA GPUs are visible: one GPU per process")


def cpu_count() -> int:
    """The cores this process may run on."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_process(nproc: int) -> int:
    """Intra-op threads of each of ``nproc`` processes on one machine: its share of the cores
    (more would make the ranks fight over them)."""
    return max(1, cpu_count() // nproc)


def rank_threads(nproc: int) -> str:
    """OMP_NUM_THREADS for each rank ``launch`` starts: the user's, else ``threads_per_process``."""
    return os.environ.get("OMP_NUM_THREADS") or str(threads_per_process(nproc))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def describe_processes(nproc: int, device: torch.device) -> str:
    """How a stage computes, for the line it prints first: processes, device, threads, backend."""
    if nproc == 1:
        threads = f", {_count(torch.get_num_threads(), 'thread')}" if device.type == "cpu" else ""
        return f"1 process on {device}{threads}"
    if device.type == "cuda":
        return f"{nproc} processes under torchrun, one GPU each, NCCL"
    threads = rank_threads(nproc)
    return f"{nproc} processes under torchrun on the CPU, {threads} thread{'' if threads == '1' else 's'} each, gloo"


@contextlib.contextmanager
def process_group(device: torch.device, nproc: int, key: str) -> Iterator[tuple[World, torch.device]]:
    """Yield (World, the rank's device). Outside torchrun: (SINGLE, ``device``). Under
    torchrun: joins the process group (NCCL on CUDA, each rank on cuda:LOCAL_RANK; gloo on the
    CPU) after checking that torchrun started the ``nproc`` processes ``key``.nproc says."""
    if not under_torchrun():
        yield SINGLE, device
        return
    world = World(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]),
                  local_rank=int(os.environ["LOCAL_RANK"]))
    if world.size != nproc:
        raise UserError(f"torchrun started {world.size} processes but {key}.nproc is {nproc}: set it to the "
                        "number of processes of the whole run (nodes x processes per node)")
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    yield world, device
    # Not in a `finally`: after a failed collective, tearing down can hang; the process exits.
    dist.destroy_process_group()


def shard(chunk: np.ndarray, world: World) -> tuple:
    """This rank's part of one global batch (indices in the epoch's order) and the weight of
    its mean loss: (indices, len(part) * N / len(chunk)). DDP averages the ranks' gradients, so
    with these weights the average is the gradient of the mean loss over the whole global
    batch, even when it does not split evenly (1.0 when it does). A rank left without images
    (a last batch smaller than N) gets the chunk's first image with weight 0: it must still
    take part in the step's all-reduce."""
    if world.size == 1:
        return chunk, 1.0
    part = np.array_split(chunk, world.size)[world.rank]
    if len(part) == 0:
        return chunk[:1], 0.0
    return part, len(part) * world.size / len(chunk)


def weighted(loss: torch.Tensor, weight: float) -> torch.Tensor:
    """The loss a rank back-propagates (see ``shard``); left untouched at weight 1."""
    return loss if weight == 1.0 else loss * weight


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """``values`` summed over the ranks (in place; no-op for one process)."""
    if world.size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast(obj: T, world: World) -> T:
    """Rank 0's ``obj`` on every rank (a pickled object: the resume checkpoint)."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def batch_share(count: int, batch: int, world: World) -> range:
    """This rank's images of a split of ``count`` images read ``batch`` at a time: a contiguous
    run of whole batches, the ranks' runs as even as whole batches allow, in rank order (rank 0
    first). Each of its batches is one that a single process reads (the same images, the same
    size): only the last batch of the split may be short. Empty for a rank left without a batch."""
    share = np.array_split(np.arange(-(-count // batch)), world.size)[world.rank]    # batch numbers
    if len(share) == 0:
        return range(0)
    return range(int(share[0]) * batch, min(count, (int(share[-1]) + 1) * batch))


def gather_to_main(obj: T, world: World) -> list[T] | None:
    """Every rank's ``obj`` (pickled: CPU tensors), in rank order, on rank 0; None elsewhere."""
    if world.size == 1:
        return [obj]
    found = [None] * world.size if world.main else None
    dist.gather_object(obj, found, dst=0)
    return found


def parallel(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel (itself for one process). Buffers are
    broadcast from rank 0 every step only where a net keeps running statistics; ours hold
    constants (LeNet-5's C3 table, its RBF prototypes), which DDP copies from rank 0 once."""
    if world.size == 1:
        return model
    ddp = torch.nn.parallel.DistributedDataParallel
    running = any("running_" in name for name, _ in model.named_buffers())
    # torch 2.14 renamed broadcast_buffers (the project supports torch >= 2.4)
    renamed = "forward_sync_buffers" in inspect.signature(ddp).parameters
    sync = "forward_sync_buffers" if renamed else "broadcast_buffers"
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **{sync: running})


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def launch(nproc: int, argv: list, cwd: Path, log: Path, what: str = "training") -> None:
    """Run ``argv`` (a script and its arguments) on ``nproc`` processes under torchrun and
    wait. The ranks' stdout passes through (rank 0 logs); their stderr and torchrun's are
    collected: printed after a success, or on a failure written to ``log`` and summed up in
    one RankFailed / UserError line that says what failed (``what``: training, mining). Ctrl-C
    or SIGTERM stops torchrun and its ranks first."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *map(str, argv)]
    # torchrun would set 1 thread per rank (with a warning); each rank gets its share instead.
    env = {**os.environ, "OMP_NUM_THREADS": rank_threads(nproc)}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with open(os.devnull, "rb") as stdin, tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin, stderr=errors)
            try:
                code = proc.wait()
            except BaseException:
                proc.terminate()          # torchrun passes it on to the ranks and waits for them
                proc.wait()
                raise
            errors.seek(0)
            text = errors.read().decode("utf-8", errors="replace")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == 0:
        sys.stderr.write(text)
        return
    write_text(log, text)
    raise failure(text, nproc, code, log, what)


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.DOTALL)


def failure(text: str, nproc: int, code: int, log: Path, what: str = "training") -> UserError:
    """The one-line error for a torchrun run of ``what`` (training, mining) that ended with
    ``code`` and wrote ``text`` on stderr: the failing rank's own error line when it stopped on a user error (bad data, a
    diverging loss, a full disk), else which rank failed first, how, and its last exception."""
    match = _ROOT_CAUSE.search(text)
    rank, exit_code = (int(match.group(1)), int(match.group(2))) if match else (None, code)
    who = f"rank {rank} of {nproc}" if rank is not None else f"one of {nproc} ranks"
    for line in text.splitlines():
        if line.startswith("error: "):
            return UserError(f"{line[len('error: '):]} ({who})")
    how = f"exit code {exit_code}"
    if exit_code < 0:
        with contextlib.suppress(ValueError):
            how = f"killed by {signal.Signals(-exit_code).name} (exit code {exit_code})"
    last = ""
    if rank is not None:
        prefix = f"[rank{rank}]: "
        raised = [line[len(prefix):] for line in text.splitlines()
                  if line.startswith(prefix) and line[len(prefix):][:1] not in ("", " ")
                  and not line[len(prefix):].startswith("Traceback")]
        last = f": {raised[-1]}" if raised else ""
    return RankFailed(f"{what} {who} failed first, {how}{last} (torchrun's report: {log})")
