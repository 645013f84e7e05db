"""One projection engine for every net: receptive fields, patches, and unit activations
projected into pixel space (gradient, deconvnet, guided backprop) plus Grad-CAM.

The three projections are one backward pass that differs only at the nonlinearities
(Springenberg et al. 2015, fig. 1). For a ReLU with input x and incoming gradient g:
    gradient         g * 1[x > 0]
    deconvnet        relu(g)                 (Zeiler & Fergus: the forward mask is ignored)
    guided_backprop  relu(g) * 1[x > 0]
Everything else -- convolutions (transposed conv with the same weights, bias never enters),
max-pool switches (autograd sums where overlapping windows share an argmax), avg-pool, LRN --
uses its true gradient. The scaled tanh of LeNet, f(x) = A tanh(S x), has no published rule;
ours carries the ReLU rules over term by term:
    gradient         g * f'(x)
    deconvnet        relu(g) * f'(0)         (input-independent, like deconvnet's ReLU)
    guided_backprop  relu(g) * f'(x)         (the true local slope, gated by relu(g))
For ReLU f'(x) = 1[x > 0] and f'(0) = 1 on the linear side, so the ReLU rules are this rule.

Rules are installed by swapping each activation module's ``forward`` for the duration of the
call (in-place ReLUs then run out of place, so a captured activation is never overwritten) and
always restored in ``finally``. Forward passes stop at the requested layer.
"""

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnn_internals.engine.activations import ScaledTanh
from cnn_internals.engine.hooks import eval_mode, forward_to, replaced_forwards
from cnn_internals.engine.receptive_fields import ChannelFields, FieldTrace, Undefined

METHODS = ("gradient", "deconvnet", "guided_backprop")

# One index per image row (a unit's channel, row or column, a class): anything torch.as_tensor
# turns into a 1-d long tensor.
Indices = torch.Tensor | np.ndarray | Sequence[int]


# CPU: chunks of 8 AlexNet rows (3x224x224 floats each) beat both one row at a time and all 54
# at once, and edged out 16 (benchmarks/projection.py sweep on 2 cores). Smaller inputs get as
# many rows as fit in the same bytes: 1,176 of LeNet-5's 32x32 digits, where chunks of 8 spent
# nearly all their time in per-pass overhead (same bits, a fraction of the time in one chunk:
# docs/benchmarks.md, 'Projection chunks').
CPU_CHUNK = 8


CPU_CHUNK_BYTES = CPU_CHUNK * 3 * 224 * 224 * 4


class _ReLURule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, guided):
        out = x.clamp_min(0)
        ctx.guided = guided
        ctx.save_for_backward(out if guided else None)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clamp_min(0)
        if ctx.guided:
            (out,) = ctx.saved_tensors
            grad = grad * (out > 0)
        return grad, None


class _TanhRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, s, guided):
        t = torch.tanh(s * x)
        ctx.a, ctx.s, ctx.guided = a, s, guided
        ctx.save_for_backward(t if guided else None)
        return a * t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clamp_min(0)
        if ctx.guided:
            (t,) = ctx.saved_tensors
            slope = ctx.a * ctx.s * (1 - t * t)   # f'(x)
        else:
            slope = ctx.a * ctx.s                 # f'(0)
        return grad * slope, None, None, None


def _rule_forward(module, method):
    guided = method == "guided_backprop"
    if isinstance(module, nn.ReLU):
        return lambda x: _ReLURule.apply(x, guided)
    if isinstance(module, ScaledTanh):
        return lambda x: _TanhRule.apply(x, module.a, module.s, guided)
    if isinstance(module, nn.Tanh):
        return lambda x: _TanhRule.apply(x, 1.0, 1.0, guided)
    if type(module).__module__ == nn.modules.activation.__name__:
        def refuse(*args, **kwargs):
            raise ValueError(f"{method} has no rule for {type(module).__name__}; use 'gradient'")
        return refuse
    return None


@contextlib.contextmanager
def backward_rules(model: nn.Module, method: str) -> Iterator[None]:
    """Install ``method``'s backward rule on every activation module, restore on exit."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "gradient":
        yield
        return
    with replaced_forwards(model, lambda module: _rule_forward(module, method)):
        yield


def default_chunk(images: torch.Tensor, rows: int) -> int:
    """Rows per forward/backward pass. CPU: CPU_CHUNK_BYTES of inputs, at least CPU_CHUNK rows
    (larger batches lose cache locality). GPU: as many as a quarter of the free memory holds,
    at ~4 bytes x 8 per input value (activations of a conv net to its middle layers are a few
    times the input)."""
    if images.device.type != "cuda":
        per_row = images[0].numel() * images.element_size()
        return max(1, min(rows, max(CPU_CHUNK, CPU_CHUNK_BYTES // per_row)))
    free, _ = torch.cuda.mem_get_info(images.device)
    per_row = images[0].numel() * images.element_size() * 64
    return max(1, min(rows, int(free // 4 // per_row)))


def _as_index(values, device):
    return torch.as_tensor(values, dtype=torch.long, device=device).reshape(-1)


def _unit_selector(images, channels, rows=None, cols=None):
    """select(acts, part): the units of ``acts`` picked for the rows in ``part``. Maps (b, C,
    H, W) take a channel and a position; units without positions (b, C) -- a fully connected
    layer's output, the model's scores -- take only the channel (``rows``/``cols`` None)."""
    channels = _as_index(channels, images.device)
    if (rows is None) != (cols is None):
        raise ValueError("rows and cols go together: both positions, or both None for units without positions")
    if rows is not None:
        rows, cols = _as_index(rows, images.device), _as_index(cols, images.device)
        if not len(rows) == len(cols) == len(channels):
            raise ValueError("images, channels, rows and cols must have the same length")
    if len(channels) != images.shape[0]:
        raise ValueError("images and channels must have the same length")

    def select(acts, part):
        b = torch.arange(acts.shape[0], device=acts.device)
        if rows is None:
            if acts.dim() != 2:
                raise ValueError(f"the layer outputs maps {tuple(acts.shape[1:])}: give each unit's rows and cols")
            return acts[b, channels[part]]
        if acts.dim() != 4:
            raise ValueError(f"the layer outputs units {tuple(acts.shape[1:])} without positions: "
                             "rows and cols must be None")
        return acts[b, channels[part], rows[part], cols[part]]

    return select


def _class_selector(images, classes):
    classes = _as_index(classes, images.device)

    def select(scores, part):  # scores: (b, classes)
        return scores[torch.arange(scores.shape[0], device=scores.device), classes[part]]

    return select


def _input_gradients(model, images, method, stop_layer, select, chunk):
    """d select(forward_to(stop_layer)) / d images under ``method``'s rules, chunk by chunk."""
    chunk = chunk or default_chunk(images, images.shape[0])
    out = torch.empty_like(images)
    with eval_mode(model), backward_rules(model, method), torch.enable_grad():
        for start in range(0, images.shape[0], chunk):
            part = slice(start, start + chunk)
            x = images[part].detach().requires_grad_(True)
            target, _ = forward_to(model, stop_layer, x)
            (out[part],) = torch.autograd.grad(select(target, part).sum(), x)
    return out


def project(model: nn.Module, layer: str | None, images: torch.Tensor, channels: Indices,
            rows: Indices | None = None, cols: Indices | None = None, method: str = "gradient",
            chunk: int | None = None) -> torch.Tensor:
    """Project unit activations into pixel space.

    Row b of the result (shaped like ``images``) is the backward pass under ``method`` of the
    activation at (channels[b], rows[b], cols[b]) of module ``layer``'s output for images[b],
    seeded with a unit gradient there. A layer of units without positions (a Linear's (B, C)
    output) takes ``rows``/``cols`` None, and so do the model's own scores, ``layer`` None
    (channels[b] is then a class). Rows are independent (eval mode), so any number are pushed
    through in chunks of ``chunk`` rows (default: ``default_chunk``).
    """
    select = _unit_selector(images, channels, rows, cols)
    return _input_gradients(model, images, method, layer, select, chunk)


def class_saliency(model: nn.Module, images: torch.Tensor, classes: Indices, chunk: int | None = None) -> torch.Tensor:
    """(B, H, W): Simonyan et al. 2013, section 3.1: the magnitude of the gradient of class
    classes[b]'s score (as the model's forward returns it) with respect to images[b], its
    largest value over the colour channels."""
    return project(model, None, images, classes, method="gradient", chunk=chunk).abs().amax(dim=1)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _trace_fields(model, layer, probe):
    trace = FieldTrace(probe)
    with eval_mode(model), torch.no_grad(), trace.naming(model), trace:
        output, _ = forward_to(model, layer, probe)
    return trace, output


def _layer_fields(model, layer, input_size):
    """The ChannelFields (or Undefined) of module ``layer``'s output for an input of ``input_size``."""
    param = next(model.parameters())
    try:   # shapes are all a field needs: on the meta device nothing is computed
        trace, output = _trace_fields(model, layer, torch.zeros(1, *input_size, dtype=param.dtype, device="meta"))
    except (RuntimeError, NotImplementedError):   # a forward that reads values: run it for real
        trace, output = _trace_fields(model, layer, torch.zeros(1, *input_size, dtype=param.dtype, device=param.device))
    return trace.fields(output) if isinstance(output, torch.Tensor) else Undefined("it is not a tensor")


def field_sizes(model: nn.Module, layer: str, input_size: tuple) -> list[int]:
    """The distinct receptive field sizes (rows) of ``layer``'s channels, smallest first: one
    size for a plain conv layer, one per kind of branch after a concatenation (GoogLeNet's
    inception3a: [27, 43]); [] where the layer has no spatial field."""
    fields = _layer_fields(model, layer, input_size)
    if not isinstance(fields, ChannelFields):
        return []
    sizes = (fields.hi - fields.lo + 1)[:, 0]
    return sorted({int(v) for v in sizes[torch.isfinite(sizes)].tolist()})


def receptive_field(model: nn.Module, layer: str, input_size: tuple, channel: int | None = None) -> tuple:
    """(size, stride, padding) of a unit of ``layer``: unit (i, j) sees input rows
    [i*stride - padding, i*stride - padding + size - 1] (and the same for columns).

    Computed from the graph the forward pass runs up to ``layer`` (its first call), following
    tensors rather than modules (``receptive_fields.FieldTrace``): a window composes as in
    Araujo et al. 2019 (r += (k-1)*d*S; P += p*S; S *= s), and where paths meet (a residual
    ``+``, a conv over concatenated branches) the field is the union over all paths, the
    smallest window covering each. After a concatenation the field differs from channel to
    channel: ``channel`` picks one; None gives the union over the layer's channels, which is
    every channel's field where they agree. Asking past something with no spatial field
    (flatten, an adaptive pool that changes the size, an op the trace does not know) raises
    ValueError naming it. ``input_size`` is (C, H, W). Returns ints, or (row, col) pairs where
    the two axes differ.
    """
    fields = _layer_fields(model, layer, input_size)
    try:
        size, stride, padding = zip(*fields.window(channel))
    except ValueError as undefined:
        raise ValueError(f"receptive field of {layer!r} undefined: {undefined}") from None
    if size[0] == size[1] and stride[0] == stride[1] and padding[0] == padding[1]:
        return size[0], stride[0], padding[0]
    return size, stride, padding


def crop_patches(images: torch.Tensor, layer_rf: Sequence[int | Sequence[int]], rows: Indices,
                 cols: Indices) -> torch.Tensor:
    """(B, C, size, size): the input window unit (rows[b], cols[b]) sees in images[b],
    zero where the window leaves the image (the zero padding the convolutions saw)."""
    size, stride, padding = (_pair(v) for v in layer_rf)
    rows, cols = _as_index(rows, images.device), _as_index(cols, images.device)
    top = rows * stride[0] - padding[0]
    left = cols * stride[1] - padding[1]
    height, width = images.shape[-2:]
    lo_r, lo_c = max(0, -int(top.min())), max(0, -int(left.min()))
    hi_r = max(0, int(top.max()) + size[0] - height)
    hi_c = max(0, int(left.max()) + size[1] - width)
    padded = F.pad(images, (lo_c, hi_c, lo_r, hi_r))
    r = (top + lo_r)[:, None] + torch.arange(size[0], device=images.device)  # (B, size)
    c = (left + lo_c)[:, None] + torch.arange(size[1], device=images.device)
    b = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    ch = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[b, ch, r[:, None, :, None], c[:, None, None, :]]


def _cam(activations, gradients, size):
    """Selvaraju et al. 2017: channel weights = spatial mean of the gradient; ReLU of the
    weighted sum of maps; bilinear upsampling to the input."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False).squeeze(1)


def _grad_cam_rows(model, cam_layer, stop_layer, images, select, chunk):
    chunk = chunk or default_chunk(images, images.shape[0])
    out = images.new_empty(images.shape[0], *images.shape[-2:])
    with eval_mode(model), torch.enable_grad():
        for start in range(0, images.shape[0], chunk):
            part = slice(start, start + chunk)
            target, captured = forward_to(model, stop_layer, images[part].detach(), capture=(cam_layer,))
            if cam_layer not in captured:
                raise ValueError(f"cam_layer {cam_layer!r} did not run before {stop_layer!r} in the forward pass")
            acts = captured[cam_layer]
            (grads,) = torch.autograd.grad(select(target, part).sum(), acts)
            out[part] = _cam(acts.detach(), grads, images.shape[-2:])
    return out


def grad_cam(model: nn.Module, layer: str, images: torch.Tensor, classes: Indices,
             chunk: int | None = None) -> torch.Tensor:
    """(B, H, W) Grad-CAM heatmaps of class classes[b] at module ``layer`` for images[b]."""
    return _grad_cam_rows(model, layer, None, images, _class_selector(images, classes), chunk)


def unit_grad_cam(model: nn.Module, layer: str | None, images: torch.Tensor, channels: Indices,
                  rows: Indices | None = None, cols: Indices | None = None, cam_layer: str | None = None,
                  chunk: int | None = None) -> torch.Tensor:
    """(B, H, W) Grad-CAM whose target is the unit (channels[b], rows[b], cols[b]) of
    ``layer`` instead of a class score, taken at ``cam_layer`` (default: ``layer`` itself,
    where it is the unit's own map, rectified and upsampled). A unit without positions (rows
    and cols None: a fully connected layer, or the scores, ``layer`` None) has no map of its
    own: ``cam_layer`` names the conv layer the heat is taken at."""
    if cam_layer is None and (layer is None or rows is None):
        raise ValueError("a unit without positions (a fully connected layer's, a class) has no map of its own: "
                         "name the cam_layer; a unit of maps needs its rows and cols")
    select = _unit_selector(images, channels, rows, cols)
    return _grad_cam_rows(model, cam_layer or layer, layer, images, select, chunk)


def guided_grad_cam(model: nn.Module, layer: str, images: torch.Tensor, classes: Indices,
                    chunk: int | None = None) -> torch.Tensor:
    """(B, C, H, W): Grad-CAM times the guided backprop of the class score (Selvaraju et al.)."""
    select = _class_selector(images, classes)
    guided = _input_gradients(model, images, "guided_backprop", None, select, chunk)
    return guided * grad_cam(model, layer, images, classes, chunk).unsqueeze(1)
