"""Stage `render@<net>`: one picture per depth the net shows, renders/<net>/<layer>.png, the
layer by its paper name (VGG-16's conv5_3, not its module path features.28), and one of its
classes, renders/<net>/classes.png.

    python stages/render.py --net lenet5

For the first ``render.<net>.channels`` maps of each of those layers: the top-k units found by
the mine stage projected into pixel space with ``render.<net>.method`` (gradient, deconvnet,
guided_backprop, grad_cam, guided_grad_cam, saliency) and cropped to their receptive field
(zero where the field leaves the image), beside the input patch each unit sees; a fully connected layer's
units see the whole image, which is their patch. All rows of a layer go through the projection
engine together. The classes: each class's top-k images by score, their class saliency
(Simonyan et al. 2013) and their Grad-CAM at the deepest shown layer with maps larger than 1x1.
And for each of them <layer>_optimized.png and classes_optimized.png: the images the visualize
stage optimized for those maps (units, classes), each beside its top mined patches or images.
The gallery stage copies the pictures to images/<net>_<name>.png, the names the README shows.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import torch
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir
from cnn_internals.data.loader import gather
from cnn_internals.engine import CLASSES
from cnn_internals.pipeline.artifacts import (
    OPTIMIZED,
    check_mined,
    layer_shapes,
    load_mined,
    load_model,
    load_split,
    load_visualized,
    net_inputs,
    render_path,
    rendered,
    renders_dir,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.stage import device_for, net_stage_args
from cnn_internals.viz.methods import get_method
from cnn_internals.viz.render import (
    branch_note,
    cam_layer,
    classes_figure,
    layer_figure,
    optimized_figure,
    render_params,
    sees_whole_input,
    unit_pictures,
    unit_pictures_by_method,
)


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = render_params(params, net)
    channels, method = p.channels, p.method
    split_name, tables = load_mined(net)      # the split is the mined one's, not a param here
    device = device_for(net, params)
    model, config = load_model(net, device)
    split = load_split(net, split_name)
    shapes = layer_shapes(net, model)
    check_mined(net, tables, len(split), shapes)
    inputs = net_inputs(net, config, device)
    cam = net.module_path(cam_layer(net, shapes))
    pictures, capped = {}, []
    for layer in tqdm(net.layers, desc=f"render {net.name}", disable=None, leave=False):
        top = tables[layer]
        maps = "rows" in top
        n = min(channels, len(top["values"]))
        if n < channels:
            capped.append(f"{layer} ({n})")
        k = top["values"].shape[1]
        ch = torch.arange(n).repeat_interleave(k)
        idx = top["images"][:n].reshape(-1)
        rows, cols = ((top[f][:n].reshape(-1).to(device) for f in ("rows", "cols")) if maps else (None, None))
        x = inputs.eval(gather(split.images, idx.numpy()).to(device))
        shown, patches, rf = unit_pictures(model, net.module_path(layer), x, ch.to(device), rows, cols, method,
                                           net.input_size, inputs.display, cam)
        shown = shown.reshape(n, k, *shown.shape[1:])
        patches = patches.reshape(n, k, *patches.shape[1:])
        size = rf[0] if isinstance(rf[0], int) else "x".join(map(str, rf[0]))
        whole = not maps or sees_whole_input(rf, shapes[layer][1:], net.input_size[1:])
        branches = branch_note(model, net.module_path(layer), net.input_size) if maps else ""
        what = ("each unit sees the whole image" if not maps else f"receptive field {size} px{branches}"
                + (": each unit sees the whole image" if whole else ""))
        title = (f"{net.title} {layer}: top {k} {split_name} images of {'maps' if maps else 'units'} 0-{n - 1}, "
                 f"{get_method(method).label}; {what}")
        word, seen = ("map" if maps else "unit"), ("images" if whole else "patches")
        pictures[layer] = layer_figure(shown, patches, list(range(n)), top["values"][:n, 0].tolist(), title,
                                       unit=word, seen=seen)
        vis = visualized(net, layer, n)
        which = f"{word}s 0-{len(vis) - 1} want" if len(vis) > 1 else f"{word} 0 wants"
        pictures[f"{layer}{OPTIMIZED}"] = optimized_figure(
            vis, patches[:len(vis)], [f"{word} {i}" for i in range(len(vis))],
            f"{net.title} {layer}: what {which} (optimized, visualize@{net.name}) beside "
            f"{'their' if len(vis) > 1 else 'its'} top {k} {split_name} {seen}", seen=f"top {seen}")
    pictures[CLASSES], images = classes_picture(net, model, tables[CLASSES], split, split_name, inputs, device, cam)
    vis = visualized(net, CLASSES, len(images))
    pictures[f"{CLASSES}{OPTIMIZED}"] = optimized_figure(
        vis, images[:len(vis)], list(split.classes[:len(vis)]),
        f"{net.title} classes: what each class's score wants (optimized, visualize@{net.name}) beside its top "
        f"{images.shape[1]} {split_name} images", seen="top images")
    if capped:
        print(f"note: render.{net.name}.channels = {channels} is more than some layers have; showing all maps of "
              + ", ".join(capped))
    out = renders_dir(net)
    with atomic_dir(out) as tmp:
        for name, png in pictures.items():
            (tmp / render_path(net, name).name).write_bytes(png)
    print(f"{net.title}: wrote " + ", ".join(str(render_path(net, name)) for name in rendered(net)))


def visualized(net, name, n) -> torch.Tensor:
    """The visualize stage's images of the first ``n`` units of ``name`` (a shown layer or
    CLASSES), or as many as it made, in [0, 1]."""
    return torch.from_numpy(load_visualized(net, name)[:n]).float() / 255


def classes_picture(net, model, top, split, split_name, inputs, device, cam) -> tuple:
    """Every class: its top-k images by score, their class saliency and their Grad-CAM at the
    layer ``cam`` (a module path), one row per class; and those images (classes, k, C, H, W)."""
    n, k = top["values"].shape
    classes = torch.arange(n).repeat_interleave(k)
    x = inputs.eval(gather(split.images, top["images"].reshape(-1).numpy()).to(device))
    shown, images, _ = unit_pictures_by_method(model, None, x, classes.to(device), None, None,
                                               ("saliency", "grad_cam"), net.input_size, inputs.display, cam)
    grid = [t.reshape(n, k, *t.shape[1:]) for t in (images, shown["saliency"], shown["grad_cam"])]
    title = (f"{net.title} classes: top {k} {split_name} images by score; class saliency (Simonyan et al. 2013), "
             f"Grad-CAM at {net.shown_name(cam)}")
    return classes_figure(*grid, list(split.classes), top["values"][:, 0].tolist(), title), grid[0]


if __name__ == "__main__":
    main()
