"""Your own photos through a trained net: which maps of a layer fire most on each, what those
units see (projected into pixel space beside the patch they look at), and Grad-CAM for the top
classes. One PNG per image.

    python -m cnn_internals.explain --net vgg16 --layer conv5_3 photo.jpg holiday/*.png
    python -m cnn_internals.explain --net lenet5 --layer conv3 --out digits/ my_seven.png

The net is the pipeline's: models/<net>.pt as `dvc repro train@<net>` wrote it (trained, or
ImageNet weights evaluated with `epochs: 0`), its inputs built from its dataset's statistics
(data/stats/<dataset>), on ``train.<net>.device``. A photo is brought to the dataset's format
the way the prepare stage brings its images (Imagenette: RGB, short side 256, the central
square; MNIST: grey, the central square at 28x28, dark ink on a light page inverted to MNIST's
light on dark), then the net's own evaluation view is taken.

Every image is checked before anything is computed: one that is not an image, smaller than
the net's input, CMYK or 16 bits per channel gets one line saying so, and nothing is written
(``--convert`` converts CMYK and 16-bit images instead of refusing them). The pictures are
written to ``--out`` (default explained/) as <image stem>_<net>_<layer>.png, all or nothing.
Each image's answer is printed too, one line per image: its ``--top`` classes, likeliest first,
with their probabilities (the softmax of the scores the net's forward returns); ``--json FILE``
writes the same answers, with the notes printed for each image, as a list in argument order.
"""

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError  # noqa: E402
from torch import nn  # noqa: E402

from cnn_internals.core.atomic import write_all  # noqa: E402
from cnn_internals.core.errors import UserError, first_line  # noqa: E402
from cnn_internals.core.params import load_params  # noqa: E402
from cnn_internals.core.project import user_path  # noqa: E402
from cnn_internals.data.datasets import get_dataset  # noqa: E402
from cnn_internals.engine import CLASSES  # noqa: E402
from cnn_internals.engine.hooks import forward_to  # noqa: E402
from cnn_internals.engine.projection import grad_cam  # noqa: E402
from cnn_internals.models import NETS, Inputs, Net, get_net  # noqa: E402
from cnn_internals.pipeline.artifacts import dataset_splits, layer_shapes, load_model, load_split, net_inputs  # noqa: E402
from cnn_internals.pipeline.cli import ArgumentParser, cli  # noqa: E402
from cnn_internals.pipeline.stage import device_for, on_its_dataset  # noqa: E402
from cnn_internals.viz.methods import get_method, heat_overlay, method_names  # noqa: E402
from cnn_internals.viz.render import branch_note, cam_layer, figure_png, suptitle, unit_pictures  # noqa: E402

DEFAULT_OUT = "explained"


@dataclass
class Photo:
    path: Path
    pixels: np.ndarray      # uint8, the dataset's stored format: (H, W) grey or (H, W, 3) RGB
    notes: list


def _problem(image: Image.Image, min_side: int, convert: bool) -> str | None:
    """Why ``image`` cannot go through the net as it is (None: it can)."""
    if min(image.size) < min_side:
        return (f"too small: {image.size[0]}x{image.size[1]} px, the net needs at least {min_side} px on the "
                "short side (smaller photos would be blown up)")
    if convert:
        return None
    if image.mode == "CMYK":
        return "CMYK: convert it to RGB first, or pass --convert (colours then are Pillow's plain CMYK->RGB)"
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F") or image.info.get("bits", 8) > 8:
        return f"{image.mode} ({'16-bit' if image.mode.startswith('I;16') else 'not 8-bit'}): save it as 8-bit, " \
               "or pass --convert"
    return None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit grey to 8-bit by its full range (65535 -> 255), not by clipping."""
    a = np.asarray(image)
    top = max(65535, float(a.max()))      # 16-bit range, or wider 32-bit values by their own maximum
    return Image.fromarray(np.round(a.astype(np.float64) * (255 / top)).clip(0, 255).astype(np.uint8), "L")


def _upright(image: Image.Image) -> tuple[Image.Image, str | None]:
    """The image as the camera held it (its EXIF orientation applied, as image viewers do)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (None, 1):
        return image, None
    return ImageOps.exif_transpose(image), f"EXIF orientation {orientation} applied (turned as the camera held it)"


def _on_white(image: Image.Image) -> tuple[Image.Image, str | None]:
    """A transparent image composited on white, as image viewers show it (its see-through
    pixels would otherwise read as black)."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return image, None
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        return image, None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB"), "transparent: composited on white"


def read_photo(path: Path, fit: Callable, min_side: int, convert: bool) -> Photo:
    """``path`` decoded into a dataset's stored format (``fit``: a decoded PIL image -> (uint8
    array, notes), ``Dataset.photo``); a UserError of one line if it can't be."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False       # a cut-off file fails instead of coming out grey
    notes = []
    try:
        with Image.open(path) as image:
            image.load()
            problem = _problem(image, min_side, convert)
            if problem:
                raise UserError(f"{path}: {problem}")
            if getattr(image, "is_animated", False):
                notes.append(f"animated ({image.n_frames} frames): its first frame is used")
            if image.mode == "CMYK":
                notes.append("CMYK converted to RGB")
            elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                notes.append(f"{image.mode} converted to 8-bit")
                image = _to_8bit(image)
            image, upright = _upright(image)
            if upright:
                notes.append(upright)
            image, flattened = _on_white(image)
            if flattened:
                notes.append(flattened)
            pixels, fitted = fit(image)
            pixels = np.array(pixels)             # our own, writable copy: torch warns about Pillow's read-only view
            notes.extend(fitted)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not an image") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as err:   # truncated or damaged data
        raise UserError(f"{path}: damaged image ({first_line(err)})") from None
    return Photo(path, pixels, notes)


def explain_image(model: nn.Module, net: Net, layer: str, inputs: Inputs, x: torch.Tensor, classes: Sequence[str],
                  maps: int, top: int, method: str, chunk: int | None = None, cam: str | None = None) -> dict:
    """Everything one picture shows, for one model input ``x`` (1, C, H, W): the class
    probabilities, Grad-CAM at ``layer`` of the ``top`` classes, and for the ``maps`` channels
    whose spatial maximum is largest, that unit's projection and patch. A fully connected layer
    (output (1, units)): its ``maps`` largest units, each seeing the whole image, and Grad-CAM
    (of the classes, and of the units for that method) at ``cam``, a module path with maps."""
    path = net.module_path(layer) if layer in net.shown else layer
    with torch.no_grad():
        scores, captured = forward_to(model, None, x, capture=() if path is None else (path,))
    act = scores[0] if path is None else captured[path][0]   # (C, h, w) or (units,); the scores (classes,)
    if act.dim() not in (1, 3):
        raise UserError(f"{layer} gives {tuple(act.shape)} per image, neither maps nor units: use one of the "
                        f"shown layers ({', '.join(net.layers)}) or classes")
    if act.dim() == 1 and cam is None:
        raise UserError(f"{layer} is fully connected: Grad-CAM needs a layer with maps (cam)")
    probs = scores[0].float().softmax(0)
    best = probs.argsort(descending=True, stable=True)[:top]
    heat_at = path if act.dim() == 3 else cam
    heat = grad_cam(model, heat_at, x.expand(len(best), *x.shape[1:]), best, chunk=chunk)   # (top, H, W)
    peak, where = act.flatten(1).max(1) if act.dim() == 3 else (act, None)   # per channel: max and its position
    channels = peak.argsort(descending=True, stable=True)[:maps]
    rows = cols = None
    if where is not None:
        rows, cols = where[channels] // act.shape[2], where[channels] % act.shape[2]
    shown, patches, rf = unit_pictures(model, path, x.expand(len(channels), *x.shape[1:]), channels, rows, cols,
                                       method, net.input_size, inputs.display, cam)
    view = inputs.display(x)[0].cpu()
    return {"probs": probs.cpu(), "classes": [classes[i] for i in best.tolist()], "best": best.cpu(),
            "heat": heat.cpu(), "view": view, "channels": channels.cpu(), "values": peak[channels].cpu(),
            "rows": None if rows is None else rows.cpu(), "cols": None if cols is None else cols.cpu(),
            "shown": shown, "patches": patches, "rf": rf,
            "map_size": tuple(act.shape[1:]) if act.dim() == 3 else None, "heat_at": heat_at,
            "unit_names": [(f"class {classes[c]}" if path is None else f"unit {c}") for c in channels.tolist()]}


def _rgb(t: torch.Tensor) -> np.ndarray:
    """(C, h, w) in [0, 1] -> (h, w, 3)."""
    a = t.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def figure(result: dict, title: str, method: str) -> bytes:
    """PNG bytes: top row the photo as the net sees it and Grad-CAM per top class; below, per
    map, its unit's projection beside the patch it sees. No metadata: same input, same bytes."""
    top, maps = len(result["classes"]), len(result["channels"])
    per_row = max(top + 1, 4)
    map_rows = math.ceil(2 * maps / per_row)
    fig, axes = plt.subplots(1 + map_rows, per_row, figsize=(2.0 * per_row, 2.2 * (1 + map_rows) + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    view = result["view"]
    axes[0, 0].imshow(_rgb(view), interpolation="nearest")
    axes[0, 0].set_title("input (the net's view)", fontsize=8)
    for i in range(top):
        overlay = heat_overlay(result["heat"][i][None, None], view[None])[0]
        axes[0, i + 1].imshow(_rgb(overlay), interpolation="nearest")
        axes[0, i + 1].set_title(f"Grad-CAM: {result['classes'][i]}\np = {result['probs'][result['best'][i]]:.3f}",
                                 fontsize=8)
    for j in range(maps):
        for k, (what, tiles) in enumerate(((get_method(method).label, result["shown"]), ("patch", result["patches"]))):
            r, c = divmod(2 * j + k, per_row)
            ax = axes[1 + r, c]
            ax.imshow(_rgb(tiles[j]), interpolation="nearest")
            channel = int(result["channels"][j])
            if result["rows"] is None:        # a fully connected unit or a class: it sees the whole image
                name = result["unit_names"][j]
                ax.set_title(f"{name}: {what}\nvalue {float(result['values'][j]):.3g}" if k == 0 else
                             f"{name}: {'image' if what == 'patch' else what}\n", fontsize=7)
                continue
            ax.set_title(f"map {channel}: {what}\nmax {float(result['values'][j]):.3g} at "
                         f"({int(result['rows'][j])}, {int(result['cols'][j])})" if k == 0 else
                         f"map {channel}: {what}\n", fontsize=7)
    suptitle(fig, title)
    fig.tight_layout()
    return figure_png(fig)


def _is_module(model, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def answer_of(image: str, result: dict, notes: list) -> dict:
    """One image's answer, as printed and as --json writes it: its top classes, likeliest first,
    each with p = the softmax of the scores the net's forward returns, and the notes printed for it."""
    top = [{"class": name, "p": float(result["probs"][index])}
           for name, index in zip(result["classes"], result["best"].tolist())]
    return {"image": image, "top": top, "notes": list(notes)}


def output_name(photo: Path, net: Net, layer: str) -> str:
    return f"{photo.stem}_{net.name}_{layer}.png"


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m cnn_internals.explain",
                            description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--layer", required=True, help="a shown layer by its paper name (conv5_3, conv4_x, conv2, "
                        "fc6), classes (the scores), or any module path of the model (features.26)")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--maps", type=int, default=6,
                        help="the maps (units, classes) shown per image, strongest first (default 6)")
    parser.add_argument("--top", type=int, default=3, help="classes given Grad-CAM, likeliest first (default 3)")
    parser.add_argument("--method", default="guided_backprop", choices=method_names(),
                        help="how a unit is projected into pixel space (default guided_backprop)")
    parser.add_argument("--out", type=user_path, default=Path(DEFAULT_OUT), help="output folder (default explained/)")
    parser.add_argument("--json", type=user_path, metavar="FILE",
                        help="also write the answers as JSON: a list, one object per image in argument order, "
                             '{"image", "top": [{"class", "p"}], "notes"}')
    parser.add_argument("--convert", action="store_true", help="convert CMYK and 16-bit images instead of refusing them")
    parser.add_argument("--dataset", help="the dataset the net was trained on (default: pipeline.nets.<net> in the "
                                          "params file, else the net's usual one)")
    parser.add_argument("--params", type=user_path, default=Path("params.yaml"),
                        help="params file, for train.<net>.device and data.<dataset> (default: params.yaml at the project root)")
    args = parser.parse_args(argv)
    given = args.images                           # as typed: what the answers name
    args.images = [user_path(text) for text in given]
    params = load_params(args.params)
    net = on_its_dataset(get_net(args.net), params, args.dataset)   # the dataset it was trained on
    if args.maps < 1 or args.top < 1:
        raise UserError("--maps and --top must be at least 1")
    names = [output_name(p, net, args.layer) for p in args.images]
    if len(set(names)) != len(names):
        raise UserError("two images share a file name stem, so their pictures would overwrite each other: "
                        "rename one")
    dataset = get_dataset(params, net.dataset)
    photos, problems = [], []
    for path in args.images:
        try:
            photos.append(read_photo(path, dataset.photo, dataset.photo_min_side, args.convert))
        except UserError as err:
            problems.append(str(err))
    if problems:
        # one line per refused image, each read as the error it is; nothing is computed or written
        raise UserError("\nerror: ".join(problems))

    device = device_for(net, params)
    model, config = load_model(net, device)
    if args.layer not in net.shown and (not args.layer or not _is_module(model, args.layer)):
        example = [name for name, m in model.named_modules() if name and not list(m.children())][-1]
        raise UserError(f"{net.title} has no layer {args.layer!r}: use one of its shown layers ({', '.join(net.layers)}), "
                        f"classes, or a module path of the model (e.g. {example})")
    inputs = net_inputs(net, config, device)
    cam = net.module_path(cam_layer(net, layer_shapes(net, model)))    # Grad-CAM's layer for a fully connected one
    classes = load_split(net, dataset_splits(net)[1]).classes
    top = min(args.top, len(classes))
    files, answers = {}, []
    path = net.module_path(args.layer) if args.layer in net.shown else args.layer
    # GoogLeNet's inception modules: the field shown is the union of its branches'
    branches = "" if path is None else branch_note(model, path, net.input_size)
    for text, photo in zip(given, photos):
        for note in photo.notes:
            print(f"{text}: {note}")
        x = inputs.eval(torch.from_numpy(photo.pixels)[None].to(device))
        result = explain_image(model, net, args.layer, inputs, x, classes, args.maps, top, args.method, cam=cam)
        if result["map_size"] == (1, 1):
            note = f"Grad-CAM at {args.layer}, whose maps are 1x1, is one value: drawn as a flat tint"
            photo.notes.append(note)
            print(f"{text}: {note}")
        answer = answer_of(text, result, photo.notes)
        print(f"{text}: " + ", ".join(f"{c['class']} p = {c['p']:.3f}" for c in answer["top"]))
        answers.append(answer)
        size = result["rf"][0] if isinstance(result["rf"][0], int) else "x".join(map(str, result["rf"][0]))
        label = get_method(args.method).label
        if result["rows"] is None:
            what = "classes by score" if args.layer == CLASSES else "units"
            title = (f"{photo.path.name} through {net.title} {args.layer}: its {len(result['channels'])} strongest "
                     f"{what}, {label} over the whole image; the heat maps at {net.shown_name(cam) or cam}")
        else:
            title = (f"{photo.path.name} through {net.title} {args.layer}: its {len(result['channels'])} strongest "
                     f"maps, {label}; receptive field {size} px{branches}")
        files[args.out / output_name(photo.path, net, args.layer)] = figure(result, title, args.method)
    if args.json is not None:
        files[args.json] = (json.dumps(answers, indent=2) + "\n").encode()
    write_all(files)
    for path in files:
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
