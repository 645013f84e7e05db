"""Streaming top-k mining: the k dataset images that excite each feature map or unit most.

A map's activation for an image is its spatial maximum (Zeiler & Fergus 2014; DeepVis;
NetDissect), the first position in row-major order on ties. A fully connected layer's unit
(a (B, C) output) has one value per image, the output itself; the classes are the model's
scores as its forward returns them (higher = more the class). Each image enters a channel's
top-k at most once; equal values go to the lower image index. Only (channels, k) numbers per
layer are kept while the data streams past: memory does not grow with the dataset, and every
layer and the classes come from the same forward pass.

On several processes each mines a contiguous part of the data (``start``: the index of its
first image), and ``merge_top_k`` puts their tables together by the same rule: the values,
images and positions one process finds over the whole data.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cnn_internals.engine import CLASSES
from cnn_internals.engine.hooks import StopForward, eval_mode, get_module, removed_after


@dataclass
class TopK:
    """Each field (channels, k), sorted by value descending; rows/cols locate the maximum in
    a map, and are None for units without positions (fully connected layers, the classes)."""

    values: torch.Tensor
    images: torch.Tensor
    rows: torch.Tensor | None
    cols: torch.Tensor | None


class _Running:
    def __init__(self):
        self.values = self.images = self.positions = None

    def update(self, output, first_index, k):
        # output: (B, C, H, W) or (B, C), the module's output as it produced it (read in its
        # hook, before any in-place op after it, an in-place ReLU, can change it: every tensor
        # kept below is a new one, made by cat or gather).
        if output.dim() == 4:
            flat = output.detach().flatten(2)                   # (B, C, H*W)
            batch_values, batch_positions = flat.max(dim=2)     # first maximum on ties
            positions = batch_positions.t()                     # (C, B)
        else:
            batch_values, positions = output.detach(), None     # a unit's value is its output
        values = batch_values.t()                                # (C, B)
        batch_images = torch.arange(first_index, first_index + values.shape[1], device=values.device)
        images = batch_images.expand_as(values)
        if self.values is not None:
            # Kept entries come first and have lower image indices, so a stable sort keeps
            # equal values in image order: ties go to the lower index.
            values = torch.cat([self.values, values], 1)
            images = torch.cat([self.images, images], 1)
            if positions is not None:
                positions = torch.cat([self.positions, positions], 1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
        self.values = values.gather(1, order)
        self.images = images.gather(1, order)
        self.positions = positions.gather(1, order) if positions is not None else None


@torch.no_grad()
def top_k_activations(model: nn.Module, layers: Mapping[str, str] | Iterable[str], batches: Iterable[torch.Tensor],
                      k: int, classes: bool = False, start: int = 0) -> dict[str, TopK]:
    """For each layer in ``layers`` a TopK over all images that ``batches`` yields (image
    tensors in dataset order), keyed by its name. ``layers``: module paths, or a mapping of
    names to module paths (a registry entry's ``layer_paths``: paper name -> path); a layer
    outputs maps (B, C, H, W) or units (B, C). ``classes``: also the model's scores (B,
    classes), under CLASSES. ``start``: the index of the first image in the whole data (a
    rank's part of it), the images are counted from there. One forward pass per batch serves
    every layer and the classes; it stops after the last mined layer has run when the scores
    are not wanted."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    paths = dict(layers) if isinstance(layers, Mapping) else {name: name for name in layers}
    if classes and CLASSES in paths:
        raise ValueError(f"a mined layer may not be named {CLASSES!r}: that name is the model's scores")
    layers = list(paths)
    running = {name: _Running() for name in [*layers, *([CLASSES] if classes else [])]}
    widths = {}
    seen = set()
    state = {"first": start}

    def hook_for(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name!r} outputs {shape}, not maps (B, C, H, W) or units (B, C)")
            widths[name] = output.shape[-1] if output.dim() == 4 else None
            running[name].update(output, state["first"], k)
            seen.add(name)
            if len(seen) == len(layers) and not classes:
                raise StopForward(None)
        return hook

    device = next(model.parameters()).device
    handles = [get_module(model, paths[name]).register_forward_hook(hook_for(name)) for name in layers]
    with removed_after(*handles), eval_mode(model):
        for batch in batches:
            seen.clear()
            try:
                scores = model(batch.to(device))
            except StopForward:
                scores = None
            if classes:
                if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
                    raise ValueError(f"the model's forward returns {getattr(scores, 'shape', type(scores))}, "
                                     "not scores (B, classes)")
                running[CLASSES].update(scores, state["first"], k)
            missing = set(layers) - seen
            if missing:
                raise ValueError(f"layers never ran in the forward pass: {', '.join(sorted(missing))}")
            state["first"] += batch.shape[0]
    result = {}
    for name, r in running.items():
        if r.values is None:
            raise ValueError("no images to mine: the data is empty")
        if r.positions is None:
            result[name] = TopK(values=r.values.cpu(), images=r.images.cpu(), rows=None, cols=None)
        else:
            result[name] = TopK(values=r.values.cpu(), images=r.images.cpu(),
                                rows=(r.positions // widths[name]).cpu(), cols=(r.positions % widths[name]).cpu())
    return result


def merge_top_k(parts: Sequence[TopK], k: int) -> TopK:
    """One layer's TopK over the images of all ``parts``, each a TopK over its own images
    (``images`` indices in the whole data, no image in two parts), as ``top_k_activations``
    finds it over all of them: per channel by value descending, equal values to the lower image
    index, rows and cols following their image. Parts may have fewer than k columns (a part of
    fewer than k images)."""
    if not parts:
        raise ValueError("no parts to merge")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    fields = ("values", "images", *(("rows", "cols") if parts[0].rows is not None else ()))
    table = {f: torch.cat([getattr(part, f) for part in parts], 1) for f in fields}   # (C, all parts' columns)
    # By image first, then a stable sort by value: equal values stay in image order.
    by_image = torch.sort(table["images"], dim=1, stable=True).indices
    table = {f: t.gather(1, by_image) for f, t in table.items()}
    order = torch.sort(table["values"], dim=1, descending=True, stable=True).indices[:, :k]
    table = {f: t.gather(1, order) for f, t in table.items()}
    return TopK(values=table["values"], images=table["images"], rows=table.get("rows"), cols=table.get("cols"))
