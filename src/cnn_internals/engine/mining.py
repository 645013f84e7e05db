"""Streaming top-k mining: the k dataset images that excite each feature map most.

A map's activation for an image is its spatial maximum (Zeiler & Fergus 2014; DeepVis;
NetDissect), the first position in row-major order on ties. Each image enters a channel's
top-k at most once; equal values go to the lower image index. Only (channels, k) numbers per
layer are kept while the data streams past: memory does not grow with the dataset.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from cnn_internals.engine.hooks import StopForward, eval_mode, get_module, removed_after


@dataclass
class TopK:
    """Each field (channels, k), sorted by value descending; rows/cols locate the maximum."""

    values: torch.Tensor
    images: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor


class _Running:
    def __init__(self):
        self.values = self.images = self.positions = None

    def update(self, output, first_index, k):
        # output: (B, C, H, W), the module's output as it produced it (read in its hook,
        # before any in-place op after it can change it).
        flat = output.detach().flatten(2)                       # (B, C, H*W)
        batch_values, batch_positions = flat.max(dim=2)         # first maximum on ties
        batch_images = torch.arange(first_index, first_index + flat.shape[0], device=flat.device)
        values = batch_values.t()                                # (C, B)
        images = batch_images.expand_as(values)
        positions = batch_positions.t()
        if self.values is not None:
            # Kept entries come first and have lower image indices, so a stable sort keeps
            # equal values in image order: ties go to the lower index.
            values = torch.cat([self.values, values], 1)
            images = torch.cat([self.images, images], 1)
            positions = torch.cat([self.positions, positions], 1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
        self.values = values.gather(1, order)
        self.images = images.gather(1, order)
        self.positions = positions.gather(1, order)


@torch.no_grad()
def top_k_activations(model: nn.Module, layers: Mapping[str, str] | Iterable[str], batches: Iterable[torch.Tensor],
                      k: int) -> dict[str, TopK]:
    """For each layer in ``layers`` a TopK over all images that ``batches`` yields (image
    tensors in dataset order), keyed by its name. ``layers``: module paths, or a mapping of
    names to module paths (a registry entry's ``layer_paths``: paper name -> path). One forward
    pass per batch serves every layer, and it stops after the last of them has run."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    paths = dict(layers) if isinstance(layers, Mapping) else {name: name for name in layers}
    layers = list(paths)
    running = {name: _Running() for name in layers}
    widths = {}
    seen = set()
    state = {"first": 0}

    def hook_for(name):
        def hook(module, args, output):
            if output.dim() != 4:
                raise ValueError(f"layer {name!r} outputs shape {tuple(output.shape)}, not (B, C, H, W)")
            widths[name] = output.shape[-1]
            running[name].update(output, state["first"], k)
            seen.add(name)
            if len(seen) == len(layers):
                raise StopForward(None)
        return hook

    device = next(model.parameters()).device
    handles = [get_module(model, paths[name]).register_forward_hook(hook_for(name)) for name in layers]
    with removed_after(*handles), eval_mode(model):
        for batch in batches:
            seen.clear()
            try:
                model(batch.to(device))
            except StopForward:
                pass
            missing = set(layers) - seen
            if missing:
                raise ValueError(f"layers never ran in the forward pass: {', '.join(sorted(missing))}")
            state["first"] += batch.shape[0]
    result = {}
    for name in layers:
        r = running[name]
        if r.values is None:
            raise ValueError("no images to mine: the data is empty")
        result[name] = TopK(values=r.values.cpu(), images=r.images.cpu(),
                            rows=(r.positions // widths[name]).cpu(), cols=(r.positions % widths[name]).cpu())
    return result
