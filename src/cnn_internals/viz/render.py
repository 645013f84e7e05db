"""Pictures: per layer, each feature map's top-k projections beside the input patches they
came from (the layout of Zeiler & Fergus 2014, fig. 2). PNGs carry no metadata, so equal
inputs give equal bytes."""

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnn_internals.core.params import get  # noqa: E402
from cnn_internals.engine.projection import crop_patches, project, receptive_field, unit_grad_cam  # noqa: E402

RENDER_METHODS = ("gradient", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam")


def render_params(params, net) -> dict:
    """``render.<net>``: how many maps per layer, and the projection method."""
    return {"channels": get(params, f"render.{net.name}.channels", kind=int, minimum=1),
            "method": get(params, f"render.{net.name}.method", kind=str, choices=RENDER_METHODS)}


def signed_to_unit(x):
    """(B, C, h, w) signed values -> [0, 1] per tile, zero at mid grey (tiles keep their sign)."""
    scale = x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return 0.5 + 0.5 * x / scale


def heat_overlay(heat, patches):
    """Grad-CAM heat (B, 1, h, w) per tile in [0, 1] through a colormap, over grey patches."""
    heat = heat / heat.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    coloured = torch.as_tensor(plt.get_cmap("inferno")(heat[:, 0].numpy())[..., :3]).permute(0, 3, 1, 2)
    grey = patches.mean(1, keepdim=True).expand_as(coloured)
    return (0.55 * coloured + 0.45 * grey).to(patches.dtype)


def unit_pictures(model, layer, inputs, channels, rows, cols, method, input_size, to_display):
    """(pictures, patches, receptive field): for each unit, what ``method`` shows of it and
    the input patch it sees, both cropped to its receptive field, (B, C', size, size) on the
    CPU in [0, 1]. ``to_display`` maps whole model inputs to [0, 1] pixels (AlexNet's adds the
    mean image back, so it needs the whole view); patches are cut from that, black where the
    field leaves the image."""
    pictures, patches, rf = unit_pictures_by_method(model, layer, inputs, channels, rows, cols, (method,),
                                                    input_size, to_display)
    return pictures[method], patches, rf


def unit_pictures_by_method(model, layer, inputs, channels, rows, cols, methods, input_size, to_display):
    """``unit_pictures`` for several methods at once: ({method: pictures}, patches, receptive
    field). The methods share their passes through the engine: Grad-CAM's heat serves both
    Grad-CAM methods and guided backprop's gradients both guided ones, so the five methods
    cost four passes instead of six."""
    rf = receptive_field(model, layer, input_size)
    patches = crop_patches(to_display(inputs), rf, rows, cols).cpu()
    heat = None
    if {"grad_cam", "guided_grad_cam"} & set(methods):
        heat = crop_patches(unit_grad_cam(model, layer, inputs, channels, rows, cols).unsqueeze(1), rf, rows, cols)
    wanted = {"guided_backprop" if m == "guided_grad_cam" else m for m in methods} - {"grad_cam"}
    grads = {m: crop_patches(project(model, layer, inputs, channels, rows, cols, m), rf, rows, cols)
             for m in sorted(wanted)}
    pictures = {}
    for method in methods:
        if method == "grad_cam":
            pictures[method] = heat_overlay(heat.cpu(), patches)
        elif method == "guided_grad_cam":
            pictures[method] = signed_to_unit((grads["guided_backprop"] * heat).cpu())
        else:
            pictures[method] = signed_to_unit(grads[method].cpu())
    return pictures, patches, rf


def mosaic(tiles, side):
    """(k, C, h, w) in [0, 1] -> (H, W, 3) array: tiles in a side x side grid, white gaps."""
    k, c, h, w = tiles.shape
    grid = np.ones((side * (h + 1) - 1, side * (w + 1) - 1, 3))
    for i in range(k):
        r, col = divmod(i, side)
        tile = tiles[i].permute(1, 2, 0).numpy()
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = tile if c == 3 else tile[..., :1]
    return grid


def layer_figure(pictures, patches, channel_ids, values, title):
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


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes without metadata (equal figures, equal bytes); closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
