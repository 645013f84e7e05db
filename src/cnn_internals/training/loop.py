"""The training loop every net shares: seeded, resumable to the same bytes, quiet in logs.

Data come as uint8 splits (``data.prepared.Split``, memory-mapped); each batch is gathered as
uint8, moved to the device and turned into model inputs there by the net's ``Inputs``
(augmented in training). Randomness is re-seeded from (seed, epoch) at the start of every
epoch -- the shuffle order, the augmentation draws and dropout -- so a run resumed from the
checkpoint of epoch N continues exactly as the uninterrupted run would have. The checkpoint
(model, optimizer, scheduler, grad scaler, history) is written atomically after every epoch
under a tag that hashes the params, the data and the code shaping training.

On CUDA the step runs in mixed precision (bfloat16 where the GPU has it, else float16 with a
gradient scaler) and channels-last memory; on the CPU in float32, channels-last too, with
LeNet-5's scaled tanh in a fused form (``engine.activations.ScaledTanhFunction``), bit-reproducible
(benchmarks/training.py measures each against a plain loop).

On several processes (``distributed``: torchrun, DDP) every rank takes the same seeded epoch
order, trains its share of each global batch, and evaluates its share of the held-out split;
the metrics are summed over the ranks, and rank 0 alone checkpoints and logs. A resumed run
loads rank 0's checkpoint on every rank.
"""

import contextlib
import copy
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cnn_internals.core.atomic import write_torch
from cnn_internals.core.errors import UserError, first_line
from cnn_internals.data.loader import batches, batches_of
from cnn_internals.engine.activations import ScaledTanh
from cnn_internals.runtime.distributed import SINGLE, World, all_reduce_sum, broadcast, parallel, shard, weighted
from cnn_internals.training.recipe import Recipe

if TYPE_CHECKING:
    from cnn_internals.data.prepared import Split
    from cnn_internals.models.registry import Inputs

# loss(scores, targets): a net's loss (models.registry.Net.loss), a 0-dim mean over the batch.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def params_tag(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def code_fingerprint(*roots: Path) -> str:
    """sha256 of every .py file under ``roots``: a checkpoint written by other code is not
    resumed (its epochs would mix with the new code's while dvc.lock credits the new code)."""
    digest = hashlib.sha256()
    for root in roots:
        files = [Path(root)] if Path(root).is_file() else sorted(Path(root).rglob("*.py"))
        for path in files:
            digest.update(path.as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def make_optimizer(model: nn.Module, recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    params = [p for p in model.parameters() if p.requires_grad]
    # torch's fused kernels, one per step, on the devices that have them: faster on the CPU
    # (docs/benchmarks.md, 'torch's fused optimizer kernels'); the same algorithm (SGD's values
    # bit for bit, AdamW's within 2e-8 after 50 steps), deterministic, and GradScaler-aware on CUDA.
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                              fused=fused or None)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused or None)
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    elif recipe.schedule == "plateau":
        # The paper: "divide the learning rate by 10 when the validation error rate stopped
        # improving with the current learning rate".
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=recipe.patience)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt, sched


class Precision:
    """One code path for float32 and mixed precision (nanoGPT's ``ctx`` + ``GradScaler``)."""

    def __init__(self, device: torch.device, amp: bool) -> None:
        self.enabled = amp and device.type == "cuda"
        bf16 = self.enabled and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.channels_last = device.type in ("cuda", "cpu")   # MPS: not measured
        # The scaled tanh (LeNet-5) fused for training where torch.tanh is slow: on the CPU
        # (engine.activations.ScaledTanhFunction); on CUDA its reference form (not measured there).
        self.fused_activations = device.type == "cpu"
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled and not bf16)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, ScaledTanh):
                module.fused = self.fused_activations
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def eval_batch_size(image_shape: Sequence[int]) -> int:
    """Evaluation batch: 1,000 small images (MNIST), fewer large ones (16 MB of uint8 a batch)."""
    return max(1, min(1000, 2 ** 24 // int(np.prod(image_shape))))


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, inputs: "Inputs", split: "Split", device: torch.device,
             batch_size: int = 1000, precision: Precision | None = None, views: bool = False,
             world: World = SINGLE) -> dict:
    """Mean loss, top-1 and top-5 accuracy and predictions over ``split`` (eval mode, the
    eval view); with ``views``, also the top-1 of the softmax averaged over inputs.views()
    (``views_accuracy``, for nets with more than one test view: AlexNet's 10 crops).

    On several ranks each evaluates its contiguous share of ``split`` and the loss and counts
    are summed over them; ``predictions`` and ``views_accuracy`` are then the rank's share's."""
    precision = precision or Precision(device, amp=False)
    model.eval()
    total, correct1, correct5, predictions, view_predictions = 0.0, 0, 0, [], []
    order = np.array_split(np.arange(len(split)), world.size)[world.rank]
    for x, y in batches(split.images, split.labels, order, batch_size, device):
        with precision.autocast():
            scores = model(precision.inputs(inputs.eval(x))).float()
            test_views = inputs.views(x) if views else []
            if len(test_views) > 1:
                probs = sum(model(precision.inputs(v)).float().softmax(1) for v in test_views)
                view_predictions.append(probs.argmax(1).cpu())
        total += loss_fn(scores, y).item() * len(y)
        top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
        correct5 += (top5 == y[:, None]).any(1).sum().item()
        predictions.append(scores.argmax(1))
        correct1 += (predictions[-1] == y).sum().item()
    if world.size > 1:
        sums = all_reduce_sum(torch.tensor([total, correct1, correct5], dtype=torch.float64, device=device), world)
        total, correct1, correct5 = sums[0].item(), int(sums[1].item()), int(sums[2].item())
    labels = torch.from_numpy(np.asarray(split.labels)[order])
    result = {"loss": total / len(split), "accuracy": correct1 / len(split), "top5_accuracy": correct5 / len(split),
              "predictions": torch.cat(predictions).cpu() if predictions else torch.zeros(0, dtype=torch.int64)}
    if view_predictions:
        result["views_accuracy"] = (torch.cat(view_predictions) == labels).double().mean().item()
    return result


def _to_host(state):
    """A copy of ``state`` (nested dicts/lists of tensors) on the CPU that later in-place
    updates of the live tensors (optimizer steps) cannot reach."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _to_host(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_host(v) for v in state)
    return copy.deepcopy(state)


class Checkpoint:
    """``directory``/last.pt: the state after the last completed epoch, tagged.

    ``save_in_background`` copies the state to the host at once and writes it from a thread
    while the next epoch trains (AlexNet's weights and momentum are 466 MB: written in line,
    the checkpoint held up training on a GPU; docs/benchmarks.md,
    'Checkpoint in the background'). ``wait`` returns once the last write is on disk."""

    def __init__(self, directory: str | Path, tag: str) -> None:
        self.directory = Path(directory)
        self.path, self.tag = self.directory / "last.pt", tag
        self._writer = None

    def save_in_background(self, state: dict) -> None:
        self.wait()
        snapshot = _to_host(state)
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._pending = self._writer.submit(self.save, snapshot)

    def wait(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.shutdown(wait=True)
            self._pending.result()   # a failed write raises here

    def load(self, log: Callable[[str], object] = print) -> dict | None:
        """The saved state, or None; a checkpoint that is unreadable or of other params, data or
        code is discarded with a one-line notice."""
        if not self.path.is_file():
            return None
        try:
            with warnings.catch_warnings():   # torch warns about garbage before failing on it
                warnings.simplefilter("ignore")
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 -- a checkpoint we cannot read is one we do not have
            log(f"notice: {self.path} is unreadable; starting over")
            return None
        if not isinstance(state, dict) or state.get("tag") != self.tag:
            log(f"notice: {self.path} is from other params, data or code; starting over")
            return None
        return state

    def save(self, state: dict) -> None:
        write_torch(self.path, {**state, "tag": self.tag})

    def remove(self) -> None:
        self.wait()
        self.path.unlink(missing_ok=True)
        (self.directory / "history.tsv").unlink(missing_ok=True)   # the run's progress, see train.py
        (self.directory / "torchrun.log").unlink(missing_ok=True)  # a failed multi-process run's report
        for stray in self.directory.glob(".*.tmp"):   # a write a killed run left half done
            stray.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def _resume(state, model, opt, sched, scaler, log):
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        return state["history"], state["epoch"]
    except (KeyError, RuntimeError, ValueError) as err:
        log(f"notice: the checkpoint does not fit this model ({first_line(err)}); starting over")
        return None


RANK_SEED_STEP = 0x9E3779B1      # 2**32 / the golden ratio, odd: rank r's seed offset is r times it

def _train_epoch(model, loss_fn, inputs, split, recipe, epoch, opt, precision, device, world=SINGLE):
    """One pass over ``split`` in the epoch's seeded order, this rank's share of each global
    batch; (summed loss, correct) over every rank's images, as float64 and int."""
    seed = recipe.seed * 100003 + epoch
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed)).numpy()   # every rank's
    # Dropout masks and augmentation draws: each rank its own (rank 0 the ones a single process
    # draws). The offset must differ in the low 32 bits: torch's CPU generator keeps only those
    # (rank << 40, as this was, gave every rank the same draws). An odd constant times the rank
    # is distinct mod 2**32 for every rank, and far from the next epochs' seeds.
    rank_seed = seed + world.rank * RANK_SEED_STEP
    torch.manual_seed(rank_seed)
    augment = torch.Generator(device=device).manual_seed(rank_seed)
    shares = [shard(order[start:start + recipe.batch_size], world) for start in range(0, len(order), recipe.batch_size)]
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    steps = tqdm(batches_of(split.images, split.labels, [indices for indices, _ in shares], device),
                 total=len(shares), desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=None if world.main else True,
                 leave=False)
    for (x, y), (_, weight) in zip(steps, shares):
        with precision.autocast():
            scores = model(precision.inputs(inputs.train(x, augment))).float()
        loss = loss_fn(scores, y)
        opt.zero_grad(set_to_none=True)
        precision.scaler.scale(weighted(loss, weight)).backward()     # DDP averages the ranks' gradients
        precision.scaler.step(opt)
        precision.scaler.update()
        if weight:            # a rank's stand-in image (weight 0, see shard) counts for nothing
            # Summed on the device: no host sync per step.
            loss_sum += loss.detach().double() * len(y)
            correct += (scores.argmax(1) == y).sum()
    if world.size > 1:
        totals = all_reduce_sum(torch.stack([loss_sum, correct.double()]), world)
        return totals[0].item(), int(totals[1].item())
    return loss_sum.item(), correct.item()


def initial_evaluation(model: nn.Module, loss_fn: LossFn, inputs: "Inputs", test_split: "Split", device: torch.device,
                       precision: Precision, batch_size: int, world: World = SINGLE) -> dict:
    """The history row of a run with no training (``epochs: 0``, e.g. ImageNet weights scored
    as they are): epoch 0, the held-out figures of the model as it starts, and NaN for what
    only training measures (lr, train loss and accuracy). One row rather than none: `dvc plots`
    and the report draw from the held-out columns, and a header alone has no points."""
    test = evaluate(model, loss_fn, inputs, test_split, device, batch_size, precision, world=world)
    nan = float("nan")
    return {"epoch": 0, "lr": nan, "train_loss": nan, "train_accuracy": nan, "test_loss": test["loss"],
            "test_accuracy": test["accuracy"], "test_top5_accuracy": test["top5_accuracy"]}


def train(model: nn.Module, loss_fn: LossFn, inputs: "Inputs", train_split: "Split", test_split: "Split", recipe: Recipe,
          checkpoint: Checkpoint, log: Callable[[str], object] = print, on_epoch: Callable[[list], object] | None = None,
          world: World = SINGLE) -> list:
    """Train ``model`` (already on its device) in place; return the per-epoch history.

    ``train_split``/``test_split``: uint8 splits; ``inputs`` the net's batch transform.
    Resumes from ``checkpoint`` when it holds a run with the same tag. ``on_epoch(history)``
    runs after every epoch (the stage writes the history file there, so a long run shows it).
    A loss that stops being finite ends training with a UserError; the last good checkpoint stays.
    On several ranks (``world``) every rank calls this; only rank 0 reads and writes
    ``checkpoint``, logs and calls ``on_epoch``. With ``recipe.epochs`` 0 nothing is trained:
    the history is initial_evaluation's one row.
    """
    device = next(model.parameters()).device
    precision = Precision(device, recipe.amp)
    model = precision.prepare(model)
    if recipe.epochs == 0:
        return [initial_evaluation(model, loss_fn, inputs, test_split, device, precision,
                                   eval_batch_size(train_split.images.shape[1:]), world)]
    opt, sched = make_optimizer(model, recipe)
    if not world.main:
        log, on_epoch = (lambda line: None), None
    history, start = [], 0
    state = broadcast(checkpoint.load(log) if world.main else None, world)
    resumed = state is not None and _resume(state, model, opt, sched, precision.scaler, log)
    if resumed:
        history, start = resumed
        log(f"resuming from epoch {start}")
    ranks = parallel(model, world, device)      # DDP: all-reduces the gradients in backward
    eval_batch = eval_batch_size(train_split.images.shape[1:])
    try:
        for epoch in range(start, recipe.epochs):
            lr = opt.param_groups[0]["lr"]
            loss_sum, correct = _train_epoch(ranks, loss_fn, inputs, train_split, recipe, epoch, opt, precision,
                                             device, world)
            test = evaluate(model, loss_fn, inputs, test_split, device, eval_batch, precision, world=world)
            for what, value in (("loss", loss_sum), ("test loss", test["loss"])):
                if not math.isfinite(value):
                    raise UserError(f"training diverged: the {what} became {value} in epoch {epoch + 1} "
                                    f"(the checkpoint of epoch {epoch} is kept): lower the learning rate")
            if recipe.schedule == "plateau":
                sched.step(1.0 - test["accuracy"])
            else:
                sched.step()
            history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / len(train_split),
                            "train_accuracy": correct / len(train_split), "test_loss": test["loss"],
                            "test_accuracy": test["accuracy"], "test_top5_accuracy": test["top5_accuracy"]})
            log(f"epoch {epoch + 1}/{recipe.epochs}: lr {lr:.3g}, train loss {history[-1]['train_loss']:.4f}, "
                f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.4f}")
            if world.main:
                checkpoint.save_in_background({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                               "scheduler": sched.state_dict(), "history": history,
                                               "scaler": precision.scaler.state_dict(), "epoch": epoch + 1})
            if on_epoch is not None:
                on_epoch(history)
    finally:
        checkpoint.wait()     # the last good checkpoint is on disk before anything else happens
    return history
