"""Running a model only as far as a layer, and hooks that are always removed."""

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class StopForward(Exception):
    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def get_module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        names = ", ".join(n for n in modules if n)
        raise ValueError(f"unknown layer {layer!r}; the model has: {names}")
    return modules[layer]


@contextlib.contextmanager
def replaced_forwards(model: nn.Module, rule: Callable[[nn.Module], Callable | None]) -> Iterator[None]:
    """Each module m of ``model`` for which ``rule(m)`` gives a function runs that function as
    its ``forward`` inside the block (an instance attribute, so ``m(x)`` and its hooks call it);
    the modules' own forwards are restored on exit, whatever happens."""
    patched = []
    try:
        for module in model.modules():
            forward = rule(module)
            if forward is not None:
                patched.append((module, module.__dict__.get("forward")))
                module.forward = forward
        yield
    finally:
        for module, previous in patched:
            del module.forward
            if previous is not None:
                module.forward = previous


@contextlib.contextmanager
def removed_after(*handles: RemovableHandle) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_to(model: nn.Module, layer: str | None, images: torch.Tensor,
               capture: Iterable[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``images`` only as far as module ``layer`` (None: the whole model);
    return that output and a dict of the outputs of the modules named in ``capture``."""
    captured = {}

    def keep(name):
        def hook(module, args, output):
            captured[name] = output
            # Later in-place ops would overwrite what we keep: give them a copy instead.
            return output.clone()
        return hook

    def halt(module, args, output):
        raise StopForward(output)

    handles = [get_module(model, n).register_forward_hook(keep(n)) for n in capture if n != layer]
    if layer is not None:
        handles.append(get_module(model, layer).register_forward_hook(halt))
    with removed_after(*handles):
        try:
            output = model(images)
        except StopForward as done:
            captured[layer] = done.output
            return done.output, captured
    if layer is not None:
        raise ValueError(f"layer {layer!r} never ran in the model's forward pass")
    return output, captured


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """model.eval() for the duration, then every module's own training flag back."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag
