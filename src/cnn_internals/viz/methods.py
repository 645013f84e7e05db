"""The projection methods, one row each: render, the report and explain iterate this table.

A method is composed from the engine's passes over the same units: a projection pass
(``engine.projection.project`` with ``gradient``, ``deconvnet`` or ``guided_backprop``: one
backward pass that differs only at the nonlinearities) or the ``grad_cam`` pass (the unit's
Grad-CAM heat, ``engine.projection.unit_grad_cam``). Methods that need the same pass share it:
guided Grad-CAM is guided backprop's picture times Grad-CAM's heat (Selvaraju et al. 2017).
Adding a method is one row here, plus its rule in the engine if it needs a new pass.

``signed``: the picture holds signed values, drawn with zero at mid grey, each tile scaled by
its own largest magnitude (its sign kept); otherwise it is a magnitude: a heat map over the
patch (Grad-CAM), or grey levels (saliency).

Saliency is Simonyan et al. 2013's class saliency map (section 3.1: the absolute gradient, its
largest value over the colour channels) for any unit: made from the gradient pass, so it costs
no pass of its own. For a class it is their map exactly; for a conv unit, the same magnitude of
the unit's gradient over its receptive field.
"""

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

GRAD_CAM_PASS = "grad_cam"


def signed_to_unit(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) signed values -> [0, 1] per tile, zero at mid grey (tiles keep their sign)."""
    scale = x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return 0.5 + 0.5 * x / scale


def saliency(gradient: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) gradients -> (B, 1, h, w) in [0, 1]: the largest |gradient| over the
    channels, each tile scaled to its own largest value (white = most salient)."""
    magnitude = gradient.abs().amax(dim=1, keepdim=True)
    return magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def heat_overlay(heat: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Grad-CAM heat (B, 1, h, w) per tile in [0, 1] through a colormap, over grey patches."""
    heat = heat / heat.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    coloured = torch.as_tensor(plt.get_cmap("inferno")(heat[:, 0].numpy())[..., :3]).permute(0, 3, 1, 2)
    grey = patches.mean(1, keepdim=True).expand_as(coloured)
    return (0.55 * coloured + 0.45 * grey).to(patches.dtype)


@dataclass(frozen=True)
class Method:
    name: str                      # params value (render.<net>.method, explain --method), sprite file name
    label: str                     # what the report's buttons say
    signed: bool                   # zero at mid grey (True) or a heat map over the patch
    passes: tuple[str, ...]        # the engine's passes it is made from
    compose: Callable[[dict, torch.Tensor], torch.Tensor]   # ({pass: (B, C, h, w) on the CPU}, patches) -> [0, 1]


METHODS = (
    Method("gradient", "gradient", True, ("gradient",),
           lambda done, patches: signed_to_unit(done["gradient"])),
    Method("deconvnet", "deconvnet", True, ("deconvnet",),
           lambda done, patches: signed_to_unit(done["deconvnet"])),
    Method("guided_backprop", "guided backprop", True, ("guided_backprop",),
           lambda done, patches: signed_to_unit(done["guided_backprop"])),
    Method("grad_cam", "Grad-CAM", False, (GRAD_CAM_PASS,),
           lambda done, patches: heat_overlay(done[GRAD_CAM_PASS], patches)),
    Method("guided_grad_cam", "guided Grad-CAM", True, ("guided_backprop", GRAD_CAM_PASS),
           lambda done, patches: signed_to_unit(done["guided_backprop"] * done[GRAD_CAM_PASS])),
    Method("saliency", "saliency", False, ("gradient",),
           lambda done, patches: saliency(done["gradient"])),
)


def all_methods() -> tuple[Method, ...]:
    """The table, in its order (the order of the report's buttons)."""
    return METHODS


def method_names() -> tuple[str, ...]:
    return tuple(method.name for method in all_methods())


def get_method(name: str) -> Method:
    for method in all_methods():
        if method.name == name:
            return method
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
