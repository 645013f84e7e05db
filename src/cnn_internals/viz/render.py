"""Pictures: per layer, each feature map's top-k projections beside the input patches they
came from (the layout of Zeiler & Fergus 2014, fig. 2). PNGs carry no metadata, so equal
inputs give equal bytes."""

import io
import math
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
from cnn_internals.engine.projection import Indices, crop_patches, project, receptive_field, unit_grad_cam  # noqa: E402
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


def unit_pictures(model: nn.Module, layer: str, inputs: torch.Tensor, channels: Indices, rows: Indices, cols: Indices,
                  method: str, input_size: tuple[int, int, int],
                  to_display: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(pictures, patches, receptive field): for each unit, what ``method`` shows of it and
    the input patch it sees, both cropped to its receptive field, (B, C', size, size) on the
    CPU in [0, 1]. ``to_display`` maps whole model inputs to [0, 1] pixels (AlexNet's adds the
    mean image back, so it needs the whole view); patches are cut from that, black where the
    field leaves the image."""
    pictures, patches, rf = unit_pictures_by_method(model, layer, inputs, channels, rows, cols, (method,),
                                                    input_size, to_display)
    return pictures[method], patches, rf


def unit_pictures_by_method(model: nn.Module, layer: str, inputs: torch.Tensor, channels: Indices, rows: Indices,
                            cols: Indices, methods: Iterable[str], input_size: tuple[int, int, int],
                            to_display: Callable[[torch.Tensor], torch.Tensor]
                            ) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple]:
    """``unit_pictures`` for several methods at once: ({method: pictures}, patches, receptive
    field). Each of the engine's passes runs once for all the methods made from it (the table
    in methods.py): the five methods cost four passes instead of six."""
    rf = receptive_field(model, layer, input_size)
    patches = crop_patches(to_display(inputs), rf, rows, cols).cpu()
    table = [get_method(name) for name in methods]
    done = {}
    for name in sorted({p for method in table for p in method.passes}):
        if name == GRAD_CAM_PASS:
            result = unit_grad_cam(model, layer, inputs, channels, rows, cols).unsqueeze(1)
        else:
            result = project(model, layer, inputs, channels, rows, cols, name)
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


def layer_figure(pictures: torch.Tensor, patches: torch.Tensor, channel_ids: Sequence[int], values: Sequence[float],
                 title: str) -> bytes:
    """PNG bytes. ``pictures``/``patches``: (N, k, C, h, w) in [0, 1] for N channels."""
    n, k = pictures.shape[:2]
    side = math.ceil(math.sqrt(k))
    per_row = 1 if n == 1 else 2
    nrows = math.ceil(n / per_row)
    fig, axes = plt.subplots(nrows, 2 * per_row, figsize=(4.4 * per_row, 2.5 * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, per_row)
        for j, (what, tiles) in enumerate((("projections", pictures[i]), ("patches", patches[i]))):
            ax = axes[r, 2 * c + j]
            ax.imshow(mosaic(tiles, side), interpolation="nearest")
            ax.set_title(f"map {channel_ids[i]} {what}" + (f"\nmax {values[i]:.3g}" if j == 0 else "\n"),
                         fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes without metadata (equal figures, equal bytes); closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
