"""The training loop every net shares: seeded, resumable to the same bytes, quiet in logs.

Randomness is re-seeded from (seed, epoch) at the start of every epoch -- the shuffle order
and any dropout masks -- so a run resumed from the checkpoint of epoch N continues exactly as
the uninterrupted run would have. The checkpoint (model, optimizer, scheduler, history) is
written atomically after every epoch under a tag that hashes the params shaping training.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .atomic import write_torch
from .errors import UserError
from .params import get


def pick_device(name="auto"):
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
        raise UserError(f"params.yaml: device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"params.yaml: device {name!r} asked for, but no CUDA GPU is visible: use auto or cpu")
    return device


def make_deterministic():
    # cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def params_tag(params):
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    optimizer: str = "adamw"     # adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9        # sgd only
    schedule: str = "cosine"     # cosine | constant


def read_recipe(params, net):
    """The ``train.<net>`` block, validated; every bad value is a UserError naming its key."""
    key = f"train.{net}"
    get(params, key, kind=dict)
    if get(params, f"{key}.nproc", kind=int, minimum=1) != 1:
        raise UserError(f"params.yaml: {key}.nproc > 1 (several GPUs through torchrun) is not available yet: use 1")
    get(params, f"{key}.device", kind=str)
    return Recipe(
        epochs=get(params, f"{key}.epochs", kind=int, minimum=1),
        batch_size=get(params, f"{key}.batch_size", kind=int, minimum=1),
        lr=get(params, f"{key}.lr", kind=(int, float), above=0),
        seed=get(params, f"{key}.seed", kind=int, minimum=0),
        optimizer=get(params, f"{key}.optimizer", kind=str, choices=("adamw", "sgd")),
        weight_decay=get(params, f"{key}.weight_decay", kind=(int, float), minimum=0),
        momentum=get(params, f"{key}.momentum", kind=(int, float), minimum=0, default=0.9),
        schedule=get(params, f"{key}.schedule", kind=str, choices=("cosine", "constant")),
    )


def make_optimizer(model, recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt, sched


@torch.no_grad()
def evaluate(model, loss_fn, x, y, batch_size=1000):
    """(mean loss, accuracy, predictions) over (x, y), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    total, predictions = 0.0, []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        scores = model(xb)
        total += loss_fn(scores, yb).item() * len(xb)
        predictions.append(scores.argmax(1).cpu())
    predictions = torch.cat(predictions)
    return total / len(x), (predictions == y).double().mean().item(), predictions


class Checkpoint:
    """``directory``/last.pt: the state after the last completed epoch, tagged."""

    def __init__(self, directory, tag):
        self.path, self.tag = Path(directory) / "last.pt", tag

    def load(self):
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a checkpoint we cannot read is one we do not have
            return None
        return state if state.get("tag") == self.tag else None

    def save(self, state):
        write_torch(self.path, {**state, "tag": self.tag})

    def remove(self):
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


def train(model, loss_fn, train_data, test_data, recipe, checkpoint, log=print):
    """Train ``model`` in place; return the per-epoch history (list of dicts).

    ``train_data``/``test_data``: (inputs, labels) tensors on the CPU; batches move to the
    model's device. Resumes from ``checkpoint`` when it holds a run with the same tag."""
    device = next(model.parameters()).device
    opt, sched = make_optimizer(model, recipe)
    history, start = [], 0
    state = checkpoint.load()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
        log(f"resuming from epoch {start}")
    x, y = train_data
    for epoch in range(start, recipe.epochs):
        torch.manual_seed(recipe.seed * 100003 + epoch)   # dropout and any other global draws
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(recipe.seed * 100003 + epoch))
        model.train()
        loss_sum, correct = 0.0, 0
        bar = tqdm(range(0, len(x), recipe.batch_size), desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   disable=None, leave=False)
        for first in bar:
            idx = order[first:first + recipe.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            scores = model(xb)
            loss = loss_fn(scores, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (scores.argmax(1) == yb).sum().item()
        sched.step()
        test_loss, test_acc, _ = evaluate(model, loss_fn, *test_data)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x), "train_accuracy": correct / len(x),
                        "test_loss": test_loss, "test_accuracy": test_acc})
        log(f"epoch {epoch + 1}/{recipe.epochs}: train loss {loss_sum / len(x):.4f}, "
            f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f}")
        checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "history": history, "epoch": epoch + 1})
    return history
