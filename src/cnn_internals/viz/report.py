"""The report of a net: one static page, reports/<net>/index.html, with its images beside it.
It opens from disk (no server, no network): every image is referenced relatively, so the folder
can be copied or published as it is.

    index.html             the page (report_page.TEMPLATE): the run, one tab per shown layer
                           (conv maps; fully connected units, the first report.<net>.fc_units),
                           one for the classes, the held-out images the net gets most wrong
    curves.png             loss and accuracy per epoch
    filters.<ext>          the first convolution's filters themselves
    <layer>/<method>.<ext> one sprite sheet per layer (and classes/) and method: row = map,
                           column = unit (its top-k order), each tile the unit's projection
                           cropped to its receptive field (a fully connected unit's and a
                           class's: the whole image)
    <layer>/patches.<ext>  the input patches those units see, in the same grid
    wrong.<ext>            per most-wrong image: the image, Grad-CAM of the predicted class, of
                           the true class

Tiles are the projection engine's pictures (render.unit_pictures_by_method, the function the
render stage's pictures come from) for every map of every layer the net shows, pushed through
in batches; larger than ``thumb`` pixels they are shrunk by area averaging. PNG and JPEG come
from Pillow without metadata and the page carries no timestamp: equal inputs, equal bytes.
"""

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Literal

import matplotlib

matplotlib.use("Agg")
import jinja2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import Field  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from cnn_internals.core.config import AllOrCount, Count, Natural, Section, first, read_section  # noqa: E402
from cnn_internals.data.loader import batches, gather  # noqa: E402
from cnn_internals.engine import CLASSES  # noqa: E402
from cnn_internals.engine.hooks import eval_mode  # noqa: E402
from cnn_internals.engine.projection import grad_cam, receptive_field  # noqa: E402
from cnn_internals.viz.methods import all_methods, get_method, heat_overlay, method_names, signed_to_unit  # noqa: E402
from cnn_internals.viz.render import branch_note, cam_layer, figure_png, sees_whole_input, unit_pictures_by_method  # noqa: E402
from cnn_internals.viz.report_page import TEMPLATE  # noqa: E402

if TYPE_CHECKING:
    from cnn_internals.data.prepared import Split
    from cnn_internals.models import Inputs, Net, NetConfig

DEFAULT_METHOD = "guided_backprop"     # render's default too: LeNet-5's deconvnet ignores the input
FORMATS = ("png", "jpeg")
JPEG_QUALITY = 90
# JPEG codes 8x8 blocks (16x16 with its colour subsampling): a sprite's cells are padded to
# multiples of 16 so no block mixes two tiles.
JPEG_CELL = 16
WRONG_PX = 112         # largest side of a most-wrong image and its Grad-CAMs
ROWS_PER_CALL = 2 ** 26  # bytes of float model inputs handed to the engine at once (64 MiB)


class ReportConfig(Section):
    """``report.<net>``: units per map (k), the largest tile side (thumb), how many most-wrong
    images, which maps ("all", or the first N of each layer), the sprites' format, and how many
    units of each fully connected layer (``fc_units``, also capped by ``maps``)."""

    k: Count
    thumb: Annotated[int, Field(ge=4)]
    wrong: Natural
    maps: AllOrCount
    format: Literal[FORMATS]
    # The first N units of each fully connected layer ("all": every one). A 4096-unit layer at
    # 9 tiles and seven sheets is about 164 MB of JPEG; mining covers every unit regardless.
    fc_units: AllOrCount = 256


def report_params(params: Mapping, net: "Net") -> ReportConfig:
    """``report.<net>``, checked."""
    return read_section(params, f"report.{net.name}", ReportConfig)


def train_settings(config: "NetConfig") -> dict:
    """The ``train.<net>`` keys the params file sets (a ``pipeline.config.read_train``
    instance), sorted: the recipe the report shows."""
    return dict(sorted(config.model_dump(exclude_unset=True).items()))


def slug(name: str) -> str:
    """A layer name as an HTML id and a folder name (module names may hold dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


# ---------------------------------------------------------------- images

def to_tiles(pictures: torch.Tensor, thumb: int, signed: bool = False) -> np.ndarray:
    """(B, C, h, w) in [0, 1] -> (B, h', w', C) uint8, shrunk by area averaging so the larger
    side is at most ``thumb``. ``signed``: pictures of signed values around mid grey
    (render.signed_to_unit), which averaging pulls towards grey; once shrunk they are scaled
    to their largest magnitude again, as if the signed values had been shrunk."""
    h, w = pictures.shape[-2:]
    scale = thumb / max(h, w)
    if scale < 1:
        pictures = F.interpolate(pictures.float(), size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                 mode="area")
        if signed:
            pictures = signed_to_unit(pictures - 0.5)
    return pictures.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def cell_size(tile: int, fmt: str) -> int:
    return -(-tile // JPEG_CELL) * JPEG_CELL if fmt == "jpeg" else tile


def encode(array: np.ndarray, fmt: str) -> bytes:
    """(H, W, 1 or 3) uint8 as PNG or JPEG bytes, no metadata."""
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, "L" if array.shape[-1] == 1 else "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


def sprite(tiles: np.ndarray, fmt: str) -> bytes:
    """(rows, cols, h, w, C) uint8 tiles -> one image, tile (r, c) at the top left of cell
    (r, c); JPEG cells are padded to multiples of 16 by repeating the tile's edge."""
    rows, cols, h, w, c = tiles.shape
    ch, cw = cell_size(h, fmt), cell_size(w, fmt)
    if (ch, cw) != (h, w):
        tiles = np.pad(tiles, ((0, 0), (0, 0), (0, ch - h), (0, cw - w), (0, 0)), mode="edge")
    return encode(np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4)).reshape(rows * ch, cols * cw, c), fmt)


# ---------------------------------------------------------------- the run

def architecture(model: nn.Module, input_size: tuple, shown: Iterable[str] = ()) -> list:
    """One row per leaf module, and per module named in ``shown`` (a shown layer may be a block:
    GoogLeNet's inception3a, whose row then follows its children's), in the order the forward
    pass finishes them: name, type, output shape (C, H, W) or (features,), receptive field
    (size, stride, padding) of a unit of a spatial output (the union over its channels; None
    past flatten or a global pool: a unit sees the whole input), and its parameter count (a
    block's: all of its children's)."""
    shown = set(shown)
    leaves = [(name, m) for name, m in model.named_modules()
              if name and (not list(m.children()) or name in shown)]
    calls = []
    handles = [m.register_forward_hook(lambda m, a, out, name=name: calls.append((name, m, tuple(out.shape[1:]))))
               for name, m in leaves]
    param = next(model.parameters())
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_size, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
    return [{"layer": name, "kind": type(module).__name__, "shape": shape,
             "field": spatial_field(model, name, input_size) if len(shape) == 3 else None,
             "params": sum(p.numel() for p in module.parameters())} for name, module, shape in calls]


def spatial_field(model: nn.Module, layer: str, input_size: tuple) -> tuple | None:
    """receptive_field of ``layer``, or None where a unit's field has no window: ResNet's
    global average pool gives (C, 1, 1) maps whose one unit sees the whole input."""
    try:
        return receptive_field(model, layer, input_size)
    except ValueError:
        return None


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the first convolution: the one whose filters read the image."""
    return next((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d))


def filter_tiles(conv: nn.Conv2d) -> np.ndarray:
    """(1, O, kh, kw, C) uint8: each filter scaled to its own largest magnitude, zero at mid grey."""
    weight = conv.weight.detach().float().cpu()        # (O, I, kh, kw), I = the image's channels
    return to_tiles(signed_to_unit(weight), max(weight.shape[-2:]))[None]


def curves_png(history: list, title: str) -> bytes:
    """Loss and accuracy per epoch, train and held-out."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, what in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "--"), ("test", "-")):
            ax.plot(epochs, [row[f"{split}_{what}"] for row in history], style, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {what}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------- most wrong

@torch.no_grad()
def class_probabilities(model: nn.Module, inputs: "Inputs", split: "Split", device: torch.device,
                        batch_size: int = 500) -> torch.Tensor:
    """(N, classes) softmax of the scores of every image of ``split`` (eval view)."""
    model.eval()
    out = []
    for x, _ in batches(split.images, split.labels, np.arange(len(split)), batch_size, device):
        out.append(model(inputs.eval(x)).float().softmax(1).cpu())
    return torch.cat(out)


def most_wrong(probs: torch.Tensor, labels: npt.ArrayLike, count: int) -> list:
    """Indices of the misclassified images with the lowest probability of their true class,
    lowest first (equal ones in image order), at most ``count``."""
    labels = torch.as_tensor(np.asarray(labels))
    p_true = probs[torch.arange(len(labels)), labels]
    wrong = torch.nonzero(probs.argmax(1) != labels).flatten()
    order = torch.sort(p_true[wrong], stable=True).indices
    return wrong[order][:count].tolist()


def wrong_tiles(model: nn.Module, layer: str, x: torch.Tensor, display: Callable[[torch.Tensor], torch.Tensor],
                labels: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """(B, 3, h, w, C) uint8: each image, its Grad-CAM for the predicted class, for the true."""
    images = display(x).cpu()
    heats = [grad_cam(model, layer, x, classes).unsqueeze(1).cpu() for classes in (predicted, labels)]
    pictures = [images] + [heat_overlay(heat, images) for heat in heats]
    if images.shape[1] == 1:
        pictures[0] = images.expand(-1, 3, -1, -1)
    return np.stack([to_tiles(p, WRONG_PX) for p in pictures], 1)


# ---------------------------------------------------------------- the feature maps

def layer_sprites(model: nn.Module, net: "Net", layer: str, split: "Split", inputs: "Inputs", device: torch.device,
                  top: dict[str, torch.Tensor], maps: int, k: int, thumb: int, fmt: str,
                  progress: tqdm | None = None, cam: str | None = None) -> tuple[dict[str, bytes], tuple, int]:
    """({file name: bytes}, receptive field, tile side) for the first ``maps`` maps of
    ``layer`` (a paper name of ``net``, or CLASSES; the files are named after it), ``k`` units
    each: a sprite per method and one of patches. The units go through the engine ROWS_PER_CALL
    bytes of inputs at a time. Units without positions (a fully connected layer's, the classes:
    tables without rows/cols) see the whole image, their patch; their Grad-CAM is taken at
    ``cam``, a module path."""
    channels = torch.arange(maps).repeat_interleave(k)
    images = top["images"][:maps, :k].reshape(-1)
    rows, cols = ((top[f][:maps, :k].reshape(-1) for f in ("rows", "cols")) if "rows" in top else (None, None))
    path = net.module_path(layer)
    per_call = max(1, ROWS_PER_CALL // (4 * math.prod(net.input_size)))
    methods = method_names()
    parts = {name: [] for name in (*methods, "patches")}
    rf = None
    for start in range(0, len(channels), per_call):
        part = slice(start, start + per_call)
        x = inputs.eval(gather(split.images, images[part].numpy()).to(device))
        positions = (None, None) if rows is None else (rows[part].to(device), cols[part].to(device))
        pictures, patches, rf = unit_pictures_by_method(
            model, path, x, channels[part].to(device), *positions, methods, net.input_size, inputs.display, cam)
        for name, tiles in (*pictures.items(), ("patches", patches)):
            parts[name].append(to_tiles(tiles, thumb, signed=name != "patches" and get_method(name).signed))
        if progress is not None:
            progress.update(len(x))
    files, side = {}, None
    for name, chunks in parts.items():
        tiles = np.concatenate(chunks)
        side = tiles.shape[1]
        files[f"{slug(layer)}/{name}.{ext(fmt)}"] = sprite(tiles.reshape(maps, k, *tiles.shape[1:]), fmt)
    return files, rf, side


def ext(fmt: str) -> str:
    return "jpg" if fmt == "jpeg" else "png"


# ---------------------------------------------------------------- the page

def number(value: object) -> str:
    """A figure as the page shows it: ints whole, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def field_text(rf: tuple | None) -> str:
    if rf is None:
        return "whole input"
    size, stride, padding = rf
    return f"{size} (stride {stride}, offset {padding})"


def shape_text(shape: Iterable[int]) -> str:
    return "x".join(map(str, shape))


def architecture_row(net: "Net", row: dict) -> dict:
    """An architecture() row as the page shows it: ``shown`` is the tab of a shown layer,
    ``name`` its paper name where that is not its module path (conv5_3 of features.28)."""
    name = net.shown_name(row["layer"])
    return {**row, "shape": shape_text(row["shape"]), "field": field_text(row["field"]),
            "shown": slug(name) if name else None, "name": name if name not in (None, row["layer"]) else None}


def render_page(context: dict) -> bytes:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["number"] = number
    return env.from_string(TEMPLATE).render(**context).encode("utf-8")


def build_report(net: "Net", model: nn.Module, inputs: "Inputs", device: torch.device, p: ReportConfig, run: dict,
                 mined: dict, held_out: "Split", settings: dict, data: dict,
                 optimized: dict, objectives: dict) -> tuple[dict[str, bytes], list[str]]:
    """({relative path: bytes}, notes): every file of reports/<net>/.

    ``run``: read_metrics' dict; ``mined``: {"split": name, "split_data": Split, "tables":
    load_mined's tables}; ``held_out``: the held-out Split (the most-wrong images come from
    it); ``settings``: train_settings; ``data``: what the page says of the data; ``optimized``:
    {shown layer or CLASSES: uint8 (maps, C, H, W)}, the visualize stage's images, each shown
    beside its map's top-k tiles (its first maps: as many as it has); ``objectives``: {the same
    name: each of those images' objective}, shown under it."""
    fmt, notes = p.format, []
    tables = mined["tables"]
    mined_k = int(next(iter(tables.values()))["values"].shape[1])
    k = min(p.k, mined_k)
    if k < p.k:
        notes.append(f"report.{net.name}.k = {p.k} is more than the {mined_k} units mined per map; showing {k}")
    files = {}
    rows = architecture(model, net.input_size, net.layer_paths.values())
    shapes = {row["layer"]: row["shape"] for row in rows}          # by module path

    shapes_by_name = {layer: shapes[net.module_path(layer)] for layer in net.layers}
    cam = cam_layer(net, shapes_by_name)
    cam_path = net.module_path(cam)
    shown = net.shown

    def count(name):
        total = len(tables[name]["values"])
        if name == CLASSES:
            return total
        kept = first(p.maps, total)
        return first(p.fc_units, kept) if len(shapes_by_name[name]) == 1 else kept

    counts = {name: count(name) for name in shown}
    progress = tqdm(total=sum(counts.values()) * k, desc=f"report {net.name}", unit="unit", disable=None,
                    leave=False)
    layers = []
    for layer in shown:
        top, n = tables[layer], counts[layer]
        sprites, rf, side = layer_sprites(model, net, layer, mined["split_data"], inputs, device, top, n, k,
                                          p.thumb, fmt, progress, cam_path)
        files.update(sprites)
        values, images = top["values"][:n, :k].tolist(), top["images"][:n, :k].tolist()
        kind = "classes" if layer == CLASSES else "maps" if "rows" in top else "units"
        vis = optimized.get(layer)
        vis_count = 0 if vis is None else min(len(vis), n)
        vis_ratio, vis_values = 1.0, objectives.get(layer, [])[:vis_count]
        if vis_count:
            vis_tiles = to_tiles(torch.from_numpy(vis[:vis_count]).float() / 255, p.thumb)
            files[f"{slug(layer)}/optimized.{ext(fmt)}"] = sprite(vis_tiles[:, None], fmt)
            vis_ratio = cell_size(vis_tiles.shape[1], fmt) / vis_tiles.shape[1]
        titles = (list(held_out.classes[:n]) if kind == "classes"
                  else [f"{'map' if kind == 'maps' else 'unit'} {i}" for i in range(n)])
        layers.append({"name": layer, "id": slug(layer), "kind": kind, "maps": n, "total": len(top["values"]),
                       "k": k, "shape": shape_text(shapes[net.module_path(layer)] if kind != "classes"
                                                   else top["values"].shape[:1]),
                       "field": (field_text(rf) + branch_note(model, net.module_path(layer), net.input_size)
                                 + (": the whole input" if sees_whole_input(rf, shapes[net.module_path(layer)][1:],
                                                                           net.input_size[1:]) else "")
                                 if kind == "maps" else "the whole input"),
                       "cam": cam, "titles": titles, "ratio": cell_size(side, fmt) / side,
                       "optimized": vis_count, "optimized_file": f"{slug(layer)}/optimized.{ext(fmt)}",
                       "optimized_ratio": vis_ratio,
                       "optimized_values": [f"{v:.3g}" for v in vis_values],
                       "units": [[{"image": i, "value": repr(v), "text": f"{v:.3g}"} for i, v in zip(im, va)]
                                 for im, va in zip(images, values)],
                       "sprites": {m: f"{slug(layer)}/{m}.{ext(fmt)}" for m in method_names()},
                       "patches": f"{slug(layer)}/patches.{ext(fmt)}"})
    progress.close()
    if p.maps != "all":
        notes.append(f"report.{net.name}.maps = {p.maps}: the first {p.maps} maps (or units) of each layer only")
    # named only where fc_units is the bound that cut the layer (not maps, whose note is above)
    capped = [f"{layer} ({counts[layer]} of {len(tables[layer]['values'])})" for layer in net.layers
              if len(shapes_by_name[layer]) == 1 and p.fc_units != "all"
              and counts[layer] < first(p.maps, len(tables[layer]["values"]))]
    if capped:
        notes.append(f"report.{net.name}.fc_units = {p.fc_units}: the first units of " + ", ".join(capped)
                     + " only (all are mined)")

    conv_name, conv = first_conv(model)
    tiles = filter_tiles(conv)
    files[f"filters.{ext(fmt)}"] = sprite(tiles, fmt)
    conv_shown = net.shown_name(conv_name)
    filters = {"layer": conv_shown or conv_name, "tab": slug(conv_shown or net.layers[0]),
               "count": tiles.shape[1], "shape": shape_text(conv.weight.shape[1:]), "file": f"filters.{ext(fmt)}",
               "ratio": cell_size(tiles.shape[2], fmt) / tiles.shape[2]}

    probs = class_probabilities(model, inputs, held_out, device)
    picked = most_wrong(probs, held_out.labels, p.wrong)
    predicted = probs.argmax(1)
    wrong = {"layer": cam, "split": data["held_out"], "rows": [], "file": f"wrong.{ext(fmt)}", "ratio": 1.0,
             "errors": int((predicted != torch.as_tensor(np.asarray(held_out.labels))).sum())}
    if picked:
        labels = torch.as_tensor(held_out.labels[picked])
        x = inputs.eval(gather(held_out.images, picked).to(device))
        tiles = wrong_tiles(model, cam_path, x, inputs.display, labels.to(device),
                            predicted[picked].to(device))
        files[wrong["file"]] = sprite(tiles, fmt)
        wrong["ratio"] = cell_size(tiles.shape[2], fmt) / tiles.shape[2]
        for index, label in zip(picked, labels.tolist()):
            guess = int(predicted[index])
            wrong["rows"].append({"image": index, "true": held_out.classes[label], "predicted": held_out.classes[guess],
                                  "p_true": f"{float(probs[index, label]):.3g}",
                                  "p_predicted": f"{float(probs[index, guess]):.3g}"})

    files["curves.png"] = curves_png(run["history"], net.title)
    confusion = run["confusion"]
    context = {
        "net": {"name": net.name, "title": net.title, "dataset": net.dataset},
        "methods": [(m.name, m.label) for m in all_methods()], "default_method": DEFAULT_METHOD,
        "architecture": [architecture_row(net, row) for row in rows],
        "total_params": sum(w.numel() for w in model.parameters()),
        "metrics": sorted(run["metrics"].items()), "epochs": len(run["history"]),
        "confusion": {"classes": list(held_out.classes), "counts": confusion.tolist(),
                      "max": max(1, int(confusion.max()))},
        "data": data, "mined": {"split": mined["split"], "k": mined_k}, "settings": sorted(settings.items()),
        "report": sorted(p.model_dump().items()),
        "layers": layers, "filters": filters, "wrong": wrong,
        "ext": ext(fmt),
    }
    context["assets"] = sorted(files)
    files["index.html"] = render_page(context)
    return files, notes
