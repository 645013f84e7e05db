"""Pictures: per layer, each feature map's top-k projections beside the input patches they
came from (the layout of Zeiler & Fergus 2014, fig. 2); per fully connected layer the same for
its units, whose patch is the whole image; per class its top images, their class saliency
(Simonyan et al. 2013) and Grad-CAM. PNGs carry no metadata, so equal inputs give equal bytes."""

import io
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydantic import field_validator  # noqa: E402
from torch import nn  # noqa: E402

from cnn_internals.core.config import Count, Section, read_section  # noqa: E402
from cnn_internals.engine.projection import Indices, crop_patches, field_sizes, project, receptive_field, unit_grad_cam  # noqa: E402
from cnn_internals.viz.methods import GRAD_CAM_PASS, get_method, method_names  # noqa: E402

if TYPE_CHECKING:
    from cnn_internals.models import Net


class RenderConfig(Section):
    """``render.<net>``: how many maps per layer, and the projection method (viz/methods.py)."""

    channels: Count
    method: str

    @field_validator("method")
    @classmethod
    def _a_method(cls, method: str) -> str:
        if method not in method_names():
            raise ValueError(f"must be one of {', '.join(method_names())}; got {method!r}")
        return method


def render_params(params: Mapping, net: "Net") -> RenderConfig:
    """``render.<net>``, checked."""
    return read_section(params, f"render.{net.name}", RenderConfig)


def whole_input(input_size: tuple[int, int, int]) -> tuple:
    """The receptive field of a unit without positions (a fully connected layer's, a class
    score): the whole input, as crop_patches reads a field, with the one unit at (0, 0)."""
    height, width = input_size[1:]
    return (height, 1, 0) if height == width else ((height, width), (1, 1), (0, 0))


def sees_whole_input(rf: tuple, map_size: Sequence[int], input_size: Sequence[int]) -> bool:
    """Whether every unit of maps of ``map_size`` (h, w) with receptive field ``rf`` ((size,
    stride, padding), each an int or a (rows, cols) pair, as receptive_field gives it) reads the
    whole input (LeNet-5's C5: 1x1 maps, a 32-px field): the last unit's window starts at or
    before the first pixel and the first unit's ends at or after the last."""
    fields = tuple(zip(*rf)) if isinstance(rf[0], (tuple, list)) else (rf, rf)   # per axis
    return all((n - 1) * stride - pad <= 0 and size - 1 - pad >= side - 1
               for (size, stride, pad), n, side in zip(fields, map_size, input_size))


def cam_layer(net: "Net", shapes: Mapping[str, tuple]) -> str:
    """Grad-CAM's layer (its paper name) for a unit without a map of its own and for the
    classes: the deepest layer the net shows whose maps are larger than 1x1 (at 1x1 the heat is
    one value spread over the image). ``shapes``: artifacts.layer_shapes, by paper name."""
    spatial = [layer for layer in net.layers if len(shapes[layer]) == 3 and math.prod(shapes[layer][1:]) > 1]
    if not spatial:
        raise ValueError(f"{net.title} shows no layer with maps larger than 1x1 for Grad-CAM")
    return spatial[-1]


def unit_pictures(model: nn.Module, layer: str | None, inputs: torch.Tensor, channels: Indices,
                  rows: Indices | None, cols: Indices | None, method: str, input_size: tuple[int, int, int],
                  to_display: Callable[[torch.Tensor], torch.Tensor],
                  cam_layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(pictures, patches, receptive field): for each unit, what ``method`` shows of it and
    the input patch it sees, both cropped to its receptive field, (B, C', size, size) on the
    CPU in [0, 1]. ``to_display`` maps whole model inputs to [0, 1] pixels (AlexNet's adds the
    mean image back, so it needs the whole view); patches are cut from that, black where the
    field leaves the image. A unit without positions (``rows``/``cols`` None: a fully connected
    layer's, or a class of the scores, ``layer`` None) sees the whole input: its patch is the
    whole image; its Grad-CAM is taken at ``cam_layer`` (a module path)."""
    pictures, patches, rf = unit_pictures_by_method(model, layer, inputs, channels, rows, cols, (method,),
                                                    input_size, to_display, cam_layer)
    return pictures[method], patches, rf


def unit_pictures_by_method(model: nn.Module, layer: str | None, inputs: torch.Tensor, channels: Indices,
                            rows: Indices | None, cols: Indices | None, methods: Iterable[str],
                            input_size: tuple[int, int, int], to_display: Callable[[torch.Tensor], torch.Tensor],
                            cam_layer: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple]:
    """``unit_pictures`` for several methods at once: ({method: pictures}, patches, receptive
    field). Each of the engine's passes runs once for all the methods made from it (the table
    in methods.py): the six methods cost four passes instead of seven."""
    if rows is None:
        rf = whole_input(input_size)
        rows = cols = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        positions = {}
    else:
        rf = receptive_field(model, layer, input_size)
        positions = {"rows": rows, "cols": cols}
    patches = crop_patches(to_display(inputs), rf, rows, cols).cpu()
    table = [get_method(name) for name in methods]
    done = {}
    for name in sorted({p for method in table for p in method.passes}):
        if name == GRAD_CAM_PASS:
            # a map's Grad-CAM is its own layer's (the unit's map, rectified); ``cam_layer`` is
            # for units that have no map
            at = cam_layer if not positions else None
            result = unit_grad_cam(model, layer, inputs, channels, **positions, cam_layer=at).unsqueeze(1)
        else:
            result = project(model, layer, inputs, channels, **positions, method=name)
        done[name] = crop_patches(result, rf, rows, cols).cpu()
    return {method.name: method.compose(done, patches) for method in table}, patches, rf


def mosaic(tiles: torch.Tensor, side: int) -> np.ndarray:
    """(k, C, h, w) in [0, 1] -> (H, W, 3) array: tiles in a side x side grid, white gaps."""
    k, c, h, w = tiles.shape
    grid = np.ones((side * (h + 1) - 1, side * (w + 1) - 1, 3))
    for i in range(k):
        r, col = divmod(i, side)
        tile = tiles[i].permute(1, 2, 0).numpy()
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = tile if c == 3 else tile[..., :1]
    return grid


def unit_grid(units: Sequence[Sequence[tuple[np.ndarray, str]]], title: str) -> bytes:
    """PNG bytes: one block of panels per unit, two units a row, each panel a picture (H, W, 3)
    with its caption; the layout every picture of the render stage shares."""
    n, panels = len(units), len(units[0])
    per_row = 1 if n == 1 else 2
    nrows = math.ceil(n / per_row)
    fig, axes = plt.subplots(nrows, panels * per_row, figsize=(2.2 * panels * per_row, 2.5 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, unit in enumerate(units):
        r, c = divmod(i, per_row)
        for j, (picture, caption) in enumerate(unit):
            ax = axes[r, panels * c + j]
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(caption, fontsize=8)
    suptitle(fig, title)
    fig.tight_layout()
    return figure_png(fig)


# Width of an average character of the 9-pt titles at 100 dpi, with a margin (a 632-px line of
# 86 characters measured 7.35 px each).
TITLE_CHAR_PX = 7.6


def suptitle(fig: Figure, title: str, fontsize: int = 9) -> None:
    """``title`` over ``fig``, wrapped at spaces to the figure's width instead of running off both
    sides (a one-row picture is 440 px wide)."""
    width = max(20, int(fig.get_figwidth() * fig.dpi / TITLE_CHAR_PX * 9 / fontsize))
    fig.suptitle(textwrap.fill(title, width), fontsize=fontsize)


def branch_note(model: nn.Module, path: str, input_size: tuple) -> str:
    """'' for a layer whose maps share one field; else which sizes its branches' maps see (the
    field shown, and the patches cut, are their union: GoogLeNet's inception modules)."""
    sizes = field_sizes(model, path, input_size)
    return f" (the union of its branches' fields: its maps see {', '.join(map(str, sizes))} px)" if len(sizes) > 1 else ""


def layer_figure(pictures: torch.Tensor, patches: torch.Tensor, channel_ids: Sequence[int], values: Sequence[float],
                 title: str, unit: str = "map", seen: str = "patches") -> bytes:
    """PNG bytes. ``pictures``/``patches``: (N, k, C, h, w) in [0, 1] for N channels, each
    called ``unit`` (map; unit for a fully connected layer), its inputs ``seen`` (patches; the
    whole images for a unit that sees the whole input)."""
    side = math.ceil(math.sqrt(pictures.shape[1]))
    return unit_grid([[(mosaic(pictures[i], side), f"{unit} {channel_ids[i]} projections\nmax {values[i]:.3g}"),
                       (mosaic(patches[i], side), f"{unit} {channel_ids[i]} {seen}\n")]
                      for i in range(len(pictures))], title)


def classes_figure(images: torch.Tensor, saliency: torch.Tensor, heat: torch.Tensor, classes: Sequence[str],
                   values: Sequence[float], title: str) -> bytes:
    """PNG bytes, for each class (two a row): its top images, their class saliency maps, their
    Grad-CAM for the class. Each argument (N, k, C, h, w) in [0, 1] for N classes."""
    side = math.ceil(math.sqrt(images.shape[1]))
    return unit_grid([[(mosaic(images[i], side), f"{classes[i]}: top images\nbest score {values[i]:.3g}"),
                       (mosaic(saliency[i], side), f"{classes[i]}: saliency\n"),
                       (mosaic(heat[i], side), f"{classes[i]}: Grad-CAM\n")]
                      for i in range(len(images))], title)


def optimized_figure(optimized: torch.Tensor, patches: torch.Tensor, labels: Sequence[str], title: str,
                     seen: str = "top patches") -> bytes:
    """PNG bytes, one unit a row (issue 21's layout): its optimized image (feature visualization,
    the visualize stage's), then its k mined patches in a line, each at the same height.
    ``optimized`` (N, C, H, W) and ``patches`` (N, k, C, h, w) in [0, 1]; ``labels`` name the N
    units (map 3, unit 3, a class)."""
    n, k = patches.shape[:2]
    strips = [mosaic(patches[i], k) for i in range(n)]           # side k: one line of k tiles
    line = strips[0][:patches.shape[3]]                          # mosaic pads to k lines; keep the first
    ratio = line.shape[1] / line.shape[0]                        # the line's width per unit of height
    # inches a row: 32-px pictures at 4 px a pixel, 224-px ones at their own size
    height = min(2.24, max(1.25, max(optimized.shape[-1], patches.shape[-1]) / 100))
    caption, top = 0.25, 0.7                                     # inches: a caption, the title
    width = height * (1 + ratio) * 1.04 + 0.2
    fig = plt.figure(figsize=(width, (height + caption) * n + top))
    grid = fig.add_gridspec(n, 2, width_ratios=[1, ratio], wspace=0.04 * 2 / (1 + ratio),
                            hspace=caption / height, left=0.1 / width, right=1 - 0.1 / width,
                            bottom=0.05 / fig.get_figheight(), top=1 - top / fig.get_figheight())
    for i in range(n):
        for j, (picture, caption) in enumerate(((mosaic(optimized[i][None], 1), f"{labels[i]}: optimized"),
                                                (strips[i][:patches.shape[3]], f"{labels[i]}: {seen}"))):
            ax = fig.add_subplot(grid[i, j])
            ax.set_anchor("E" if j == 0 else "W")               # the two panels close together
            ax.set_axis_off()
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(caption, fontsize=8)
    suptitle(fig, title)
    return figure_png(fig)


def figure_png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes without metadata (equal figures, equal bytes); closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
