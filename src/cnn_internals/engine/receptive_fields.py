"""Receptive fields followed through the graph a forward pass really runs.

Every tensor that depends on the input carries, per channel c and per axis, a window: unit i
of the map sees input positions [i*stride + lo, i*stride + hi]. ``FieldTrace`` (a
TorchFunctionMode) updates it at every torch call, so the shortcut of a residual block, the
branches of an Inception module, a module called twice and ``F.relu`` or ``+`` inside a custom
``forward`` are all seen as the tensors flow, not in the order modules happen to run:

    conv2d, max/avg/lp pool (k, s, p, d)  lo -= p*S; hi += (d*(k-1) - p)*S; S *= s
                                          (Araujo et al. 2019), a conv first taking the union
                                          over the input channels its kernel reads (of its
                                          group, weights not all zero)
    pointwise ops (relu, +, *, eval-mode batch_norm, dropout, ...)
                                          union over the inputs, channel by channel
    cat along channels                    the inputs' per-channel fields side by side
    narrow, split, chunk, [...], pad      channels picked or added, windows shifted
    local_response_norm                   union over the neighbouring channels it reads

The union of windows of equal stride is the smallest window that covers them all. Maps of
unequal stride have no common window, and flatten, adaptive pools that change the size,
batch statistics and ops the trace does not know leave no spatial field either: such a tensor
carries the reason instead, reported only if a field past it is asked for.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

INF = float("inf")


@dataclass(frozen=True)
class Undefined:
    """Why a tensor has no receptive field."""

    reason: str

    def window(self, channel: int | None = None) -> NoReturn:
        raise ValueError(self.reason)


@dataclass(frozen=True)
class ChannelFields:
    """Per channel c of a (B, C, H, W) map, axis a (0 rows, 1 columns): unit i sees input
    positions [i*stride[c, a] + lo[c, a], i*stride[c, a] + hi[c, a]]. A channel that depends on
    no input (zero padding of the channels) is empty: lo = +inf, hi = -inf, stride = 0."""

    lo: torch.Tensor      # (C, 2) float64: exact for integers, and inf marks empty channels
    hi: torch.Tensor
    stride: torch.Tensor

    @staticmethod
    def of_input(channels: int) -> "ChannelFields":
        zeros = torch.zeros(channels, 2, dtype=torch.float64)
        return ChannelFields(zeros, zeros, torch.ones_like(zeros))

    @staticmethod
    def empty(channels: int) -> "ChannelFields":
        lo = torch.full((channels, 2), INF, dtype=torch.float64)
        return ChannelFields(lo, -lo, torch.zeros_like(lo))

    def __len__(self):
        return self.lo.shape[0]

    def __getitem__(self, index):
        return ChannelFields(self.lo[index], self.hi[index], self.stride[index])

    def window(self, channel: int | None = None) -> tuple[tuple[int, int, int], ...]:
        """((size, stride, padding) per axis) of one channel, or of the union over all channels
        (the smallest window that covers every channel's field) when ``channel`` is None."""
        if channel is not None and not 0 <= channel < len(self):
            raise ValueError(f"channel {channel} out of range: the map has {len(self)} channels")
        fields = self if channel is None else self[channel:channel + 1]
        union = _group_union(fields, 1, 1, f"channels of different strides {self._strides()}; "
                                           "ask for one channel")
        if isinstance(union, Undefined):
            return union.window()
        lo, hi, stride = union.lo[0], union.hi[0], union.stride[0]
        if not bool(torch.isfinite(lo).all()):
            raise ValueError("the unit does not depend on the input")
        return tuple((int(h - l + 1), int(s), int(-l)) for l, h, s in zip(lo, hi, stride))

    def _strides(self):
        return sorted({tuple(int(v) for v in s) for s in self.stride.tolist() if s[0] > 0})


def _cat(fields):
    return ChannelFields(*(torch.cat([getattr(f, k) for f in fields]) for k in ("lo", "hi", "stride")))


def _reduce(lo, hi, stride, dim, conflict):
    """The union along ``dim`` of stacked windows; Undefined(conflict) where two non-empty
    windows have different strides."""
    top = stride.amax(dim)
    if bool(((stride != top.unsqueeze(dim)) & (stride > 0)).any()):
        return Undefined(conflict)
    return ChannelFields(lo.amin(dim), hi.amax(dim), top)


def _union(fields, conflict):
    """Channel by channel union of equally long ChannelFields."""
    return _reduce(*(torch.stack([getattr(f, k) for f in fields]) for k in ("lo", "hi", "stride")), 0, conflict)


def _group_union(fields, groups, out_channels, conflict):
    """Each of ``out_channels`` gets the union over the input channels of its group."""
    grouped = (getattr(fields, k).reshape(groups, -1, 2) for k in ("lo", "hi", "stride"))
    union = _reduce(*grouped, 1, conflict)                              # (groups, 2)
    if isinstance(union, Undefined):
        return union
    return union[torch.arange(out_channels) // (out_channels // groups)]


def _read_union(fields, weight, groups, conflict):
    """Each output channel of a convolution gets the union over the input channels its kernel
    reads: those of its group whose kxk weights are not all zero (all of them for weights
    without values, on the meta device). A partial connection table (LeNet-5's C3, its weight
    times a 0/1 mask) then keeps each channel's own field; a dense kernel reads its group."""
    out_channels, per_group = weight.shape[:2]
    if weight.is_meta:
        return _group_union(fields, groups, out_channels, conflict)
    reads = weight.detach().flatten(2).any(2).cpu()                     # (out, in per group): not all zero
    if bool(reads.all()):       # a dense kernel, the usual case: one union per group, not per output
        return _group_union(fields, groups, out_channels, conflict)
    member = torch.arange(fields.lo.shape[0]) // per_group              # each input channel's group
    mine = torch.arange(out_channels) // (out_channels // groups)       # each output channel's group
    index = torch.arange(fields.lo.shape[0]) % per_group
    reads = (member.view(1, -1) == mine.view(-1, 1)) & reads[:, index]  # (out, in)
    empty = ChannelFields.empty(1)
    stacked = [torch.where(reads.unsqueeze(-1), getattr(fields, k).unsqueeze(0), getattr(empty, k))
               for k in ("lo", "hi", "stride")]                          # (out, in, 2)
    return _reduce(*stacked, 1, conflict)


def _windowed(fields, kernel, stride, padding, dilation):
    """The fields of a sliding window (k, s, p, d) per axis over maps with ``fields``."""
    k, s, p, d = (torch.tensor(v, dtype=torch.float64) for v in (kernel, stride, padding, dilation))
    return ChannelFields(fields.lo - p * fields.stride, fields.hi + (d * (k - 1) - p) * fields.stride,
                         fields.stride * s)


def _shifted(fields, offsets, steps=(1, 1)):
    """Output position i of each axis is input position offsets[a] + i * steps[a]."""
    offset = torch.tensor(offsets, dtype=torch.float64)
    return ChannelFields(fields.lo + offset * fields.stride, fields.hi + offset * fields.stride,
                         fields.stride * torch.tensor(steps, dtype=torch.float64))


def _same_shape(input, *args, **kwargs):
    return torch.empty_like(input)


def _to_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) and not value.is_meta else value


def _pair(value):
    if isinstance(value, (tuple, list)):
        return tuple(value) * 2 if len(value) == 1 else tuple(value)
    return (value, value)


def _arguments(names, defaults, args, kwargs):
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


# Leading arguments of the window functions, as torch.nn.functional and torch take them.
_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = ("input", "kernel_size", "stride", "padding")
_LP_POOL = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
_POOLS = {"max_pool2d": _MAX_POOL, "max_pool2d_with_indices": _MAX_POOL, "avg_pool2d": _AVG_POOL,
          "lp_pool2d": _LP_POOL}

# Same values, same shape: pointwise whatever aten's tags say. batch_norm only in eval mode.
_POINTWISE_EXTRA = {"dropout", "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout",
                    "hardswish", "clone", "contiguous", "detach", "to", "type", "float", "double",
                    "half", "bfloat16", "cpu", "cuda", "requires_grad_", "relu6"}
# Reshapes: fine when they leave the shape as it is.
_RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_DUNDERS = {"__radd__": "add", "__iadd__": "add", "__rsub__": "sub", "__isub__": "sub",
            "__rmul__": "mul", "__imul__": "mul", "__truediv__": "div", "__rdiv__": "div",
            "__itruediv__": "div", "__rpow__": "pow", "__ipow__": "pow", "__neg__": "neg",
            "__abs__": "abs", "__floordiv__": "floor_divide", "__rfloordiv__": "floor_divide"}
_pointwise_cache = {}


def _is_pointwise(name):
    name = _DUNDERS.get(name, name.strip("_") if name.startswith("__") else name)
    name = name[:-1] if name.endswith("_") and name != "requires_grad_" else name   # in place
    if name not in _pointwise_cache:
        packet = getattr(torch.ops.aten, name, None) if name.isidentifier() else None
        tagged = packet is not None and any(
            torch.Tag.pointwise in getattr(packet, overload).tags for overload in packet.overloads())
        _pointwise_cache[name] = tagged or name in _POINTWISE_EXTRA
    return _pointwise_cache[name]


class FieldTrace(TorchFunctionMode):
    """Active during a forward pass, it keeps the ChannelFields (or Undefined) of every tensor
    computed from ``probe``; ``fields(tensor)`` reads them. Fields need only shapes: a probe on
    the meta device skips the arithmetic (the weights it meets are moved there, op by op)."""

    def __init__(self, probe: torch.Tensor) -> None:
        super().__init__()
        self._fields = {}            # id(tensor) -> (tensor, fields); holding it keeps ids unique
        self._modules = [""]         # names of the modules running now, innermost last
        self._set(probe, ChannelFields.of_input(probe.shape[1]))

    def fields(self, tensor: torch.Tensor) -> ChannelFields | Undefined:
        entry = self._fields.get(id(tensor))
        return Undefined("it does not depend on the input") if entry is None else entry[1]

    @contextlib.contextmanager
    def naming(self, model: nn.Module) -> Iterator["FieldTrace"]:
        """Name the running module in the reasons given for undefined fields."""
        def enter(name):
            return lambda module, args: self._modules.append(name)

        def leave(module, args, output):
            self._modules.pop()

        handles = []
        for name, module in model.named_modules():
            if name:
                handles += [module.register_forward_pre_hook(enter(name)),
                            module.register_forward_hook(leave)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _set(self, tensor, fields):
        self._fields[id(tensor)] = (tensor, fields)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        self._given = (args, kwargs)      # before any move to meta: the weights' values
        if any(isinstance(t, torch.Tensor) and t.is_meta for t in tree_leaves((args, kwargs))):
            # A meta probe: its descendants are meta, and so must be the weights they meet.
            args, kwargs = tree_map(_to_meta, (args, kwargs))
            if func is torch.nn.functional.batch_norm:
                # Its meta kernel is a Python decomposition, most of ResNet's trace
                # (docs/benchmarks.md, 'Receptive-field trace'); the output has the input's
                # shape, which is all a field needs.
                func = _same_shape
        out = func(*args, **kwargs)
        traced = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and id(t) in self._fields]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if name == "__setitem__" and id(args[0]) in self._fields:   # x[...] = y changes x in place
            self._set(args[0], self._undefined(name, "assigns into part of the map"))
        if traced and outputs:
            for tensor, fields in zip(outputs, self._propagate(name, args, kwargs, traced, outputs)):
                self._set(tensor, fields)
        return out

    def _undefined(self, name, why):
        where = f"in {self._modules[-1]!r}" if self._modules[-1] else "in the model's forward"
        return Undefined(f"{name} {where} {why}")

    def _propagate(self, name, args, kwargs, traced, outputs):
        """The fields of each tensor in ``outputs`` of torch function ``name``."""
        fields = [self.fields(t) for t in traced]
        for f in fields:
            if isinstance(f, Undefined):
                return [f] * len(outputs)
        shapes = f"{tuple(traced[0].shape)} -> {tuple(outputs[0].shape)}"
        if any(t.dim() != 4 for t in outputs):
            return [self._undefined(name, f"leaves no spatial map ({shapes})")] * len(outputs)
        result = self._rule(name, args, kwargs, traced, fields, outputs)
        if isinstance(result, Undefined):
            result = result.reason
        if isinstance(result, str):
            result = self._undefined(name, f"{result} ({shapes})")
        return result if isinstance(result, list) else [result] * len(outputs)

    def _rule(self, name, args, kwargs, traced, fields, outputs):
        """ChannelFields, a list of them (one per output), or why there are none."""
        out = outputs[0]
        if name == "conv2d" or name in _POOLS:
            return self._window(name, args, kwargs, traced, fields, out)
        if name in ("cat", "concat", "concatenate"):
            return self._concat(args, kwargs, out)
        if name in ("narrow", "split", "chunk", "tensor_split", "__getitem__"):
            return self._slices(name, args, kwargs, traced, fields[0], outputs)
        if name == "pad":
            return self._pad(args, kwargs, fields[0])
        if name == "local_response_norm":
            size = _arguments(("input", "size"), {}, args, kwargs)["size"]
            return self._channel_window(fields[0], size)
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            same = out.shape[-2:] == traced[0].shape[-2:]
            return fields[0] if same else "changes the spatial size without a window"
        if name in _RESHAPES:
            return fields[0] if out.shape == traced[0].shape else "reshapes the map"
        if name == "batch_norm":
            bound = _arguments(("input", "running_mean", "running_var", "weight", "bias", "training"),
                               {"training": False}, args, kwargs)
            if bound["training"]:
                return "normalises with batch statistics: every unit sees the whole input"
            return self._pointwise(traced, fields, out)
        if _is_pointwise(name):
            return self._pointwise(traced, fields, out)
        return "is not a window, pointwise or channel op the receptive field knows"

    def _pointwise(self, traced, fields, out):
        channels = out.shape[1]
        spread = []
        for tensor, f in zip(traced, fields):
            if tensor.dim() != 4 or tensor.shape[-2:] != out.shape[-2:]:
                return "broadcasts a map across space"
            spread.append(f if len(f) == channels else f[torch.zeros(channels, dtype=torch.long)])
        if len(spread) == 1:
            return spread[0]
        return _union(spread, "combines maps of different strides: no single window")

    def _window(self, name, args, kwargs, traced, fields, out):
        if name == "conv2d":
            bound = _arguments(_CONV, {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}, args, kwargs)
            kernel = tuple(bound["weight"].shape[-2:])
        else:
            bound = _arguments(_POOLS[name], {"stride": None, "padding": 0, "dilation": 1}, args, kwargs)
            kernel = _pair(bound["kernel_size"])
        if len(traced) != 1 or traced[0] is not bound["input"]:
            return "computes its window from the input"
        stride = _pair(bound["stride"]) if bound["stride"] not in (None, [], ()) else kernel
        dilation = _pair(bound["dilation"])
        padding = bound["padding"]
        if padding == "valid":
            padding = 0
        elif padding == "same":   # torch pads d*(k-1) in all, the smaller half first
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        field = fields[0]
        if name == "conv2d":
            # The weights as given, before the probe moved them to meta: their zeros say which
            # channels the kernel reads. A model built on meta has no values: all its group then.
            weight = _arguments(_CONV, {}, *self._given)["weight"]
            field = _read_union(field, weight, bound["groups"],
                                "convolves channels of different strides: no single window")
            if isinstance(field, Undefined):
                return field.reason
        return _windowed(field, kernel, stride, _pair(padding), dilation)

    def _concat(self, args, kwargs, out):
        bound = _arguments(("tensors", "dim"), {"dim": 0}, args, kwargs)
        if bound["dim"] not in (1, -3):
            return "concatenates along a dimension other than the channels"
        parts = []
        for tensor in bound["tensors"]:
            if tensor.shape[-2:] != out.shape[-2:]:
                return "concatenates maps of different sizes"
            # A tensor that does not depend on the input (a constant map) adds empty channels.
            traced = id(tensor) in self._fields
            parts.append(self.fields(tensor) if traced else ChannelFields.empty(tensor.shape[1]))
        return _cat(parts)

    def _slices(self, name, args, kwargs, traced, field, outputs):
        source = traced[0]
        if name == "__getitem__":
            return self._getitem(args[1], source, field)
        if name == "narrow":
            bound = _arguments(("input", "dim", "start", "length"), {}, args, kwargs)
            dim, starts = bound["dim"], [bound["start"]]
        else:   # consecutive pieces along dim
            dim = _arguments(("input", "sections", "dim"), {"dim": 0}, args, kwargs)["dim"]
            starts = [sum(o.shape[dim] for o in outputs[:i]) for i in range(len(outputs))]
        dim %= 4
        pieces = []
        for out, start in zip(outputs, starts):
            if dim == 1:
                pieces.append(field[start:start + out.shape[1]])
            elif dim >= 2:
                pieces.append(_shifted(field, (start, 0) if dim == 2 else (0, start)))
            else:
                return "slices the batch"
        return pieces

    def _getitem(self, index, source, field):
        index = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, slice) or i is Ellipsis for i in index) or index.count(Ellipsis) > 1:
            return "indexes with something other than slices"
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (4 - len(index) + 1) + index[at + 1:]
        index = index + (slice(None),) * (4 - len(index))
        ranges = [range(*s.indices(n)) for s, n in zip(index, source.shape)]
        if ranges[0] != range(source.shape[0]):
            return "slices the batch"
        if any(r.step < 0 for r in ranges[2:]):
            return "flips the map"
        field = field[ranges[1].start:ranges[1].stop:ranges[1].step]
        return _shifted(field, (ranges[2].start, ranges[3].start), (ranges[2].step, ranges[3].step))

    def _pad(self, args, kwargs, field):
        bound = _arguments(("input", "pad", "mode"), {"mode": "constant"}, args, kwargs)
        pad = list(bound["pad"]) + [0] * (8 - len(bound["pad"]))
        left, _, top, _, front, back, before_batch, after_batch = pad
        if before_batch or after_batch:
            return "pads the batch"
        if bound["mode"] == "circular":
            return "wraps the map around"
        # Reflect and replicate put copies of units 1..p or 0 where zeros would be: their
        # fields lie inside the window the zero padding gives for any p <= (k - 1) / 2.
        field = _shifted(field, (-top, -left))
        if front or back:
            kept = field[max(0, -front):len(field) - max(0, -back)]
            field = _cat([ChannelFields.empty(max(0, front)), kept, ChannelFields.empty(max(0, back))])
        return field

    def _channel_window(self, field, size):
        """Channel c reads channels c - size//2 .. c + (size-1)//2 (zero outside)."""
        before, after = size // 2, (size - 1) // 2
        padded = _cat([ChannelFields.empty(before), field, ChannelFields.empty(after)])
        shifts = [padded[s:s + len(field)] for s in range(size)]
        return _union(shifts, "mixes channels of different strides: no single window")
