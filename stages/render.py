"""Stage `render@<net>`: one picture per depth the net shows, renders/<net>/<layer>.png, the
layer by its paper name (VGG-16's conv5_3, not its module path features.28).

    python stages/render.py --net lenet5

For the first ``render.<net>.channels`` maps of each of those layers: the top-k units found by
the mine stage projected into pixel space with ``render.<net>.method`` (gradient, deconvnet,
guided_backprop, grad_cam, guided_grad_cam) and cropped to their receptive field (zero where
the field leaves the image), beside the input patch each unit sees. All rows of a layer go
through the projection engine together. The gallery stage copies the pictures to
images/<net>_<layer>.png, the names the README shows.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import torch
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir
from cnn_internals.data.loader import gather
from cnn_internals.pipeline.artifacts import (
    check_mined,
    layer_shapes,
    load_mined,
    load_model,
    load_split,
    net_inputs,
    render_path,
    renders_dir,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.stage import device_for, net_stage_args
from cnn_internals.viz.render import layer_figure, render_params, unit_pictures


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = render_params(params, net)
    channels, method = p.channels, p.method
    split_name, tables = load_mined(net)      # the split is the mined one's, not a param here
    device = device_for(net, params)
    model, config = load_model(net, device)
    split = load_split(net, split_name)
    check_mined(net, tables, len(split), layer_shapes(net, model))
    inputs = net_inputs(net, config, device)
    pictures, capped = {}, []
    for layer in tqdm(net.layers, desc=f"render {net.name}", disable=None, leave=False):
        top = tables[layer]
        n = min(channels, len(top["values"]))
        if n < channels:
            capped.append(f"{layer} ({n})")
        k = top["values"].shape[1]
        ch = torch.arange(n).repeat_interleave(k)
        idx, rows, cols = (top[f][:n].reshape(-1) for f in ("images", "rows", "cols"))
        x = inputs.eval(gather(split.images, idx.numpy()).to(device))
        shown, patches, rf = unit_pictures(model, net.module_path(layer), x, ch.to(device), rows.to(device),
                                           cols.to(device), method, net.input_size, inputs.display)
        shown = shown.reshape(n, k, *shown.shape[1:])
        patches = patches.reshape(n, k, *patches.shape[1:])
        size = rf[0] if isinstance(rf[0], int) else "x".join(map(str, rf[0]))
        title = (f"{net.title} {layer}: top {k} {split_name} images of maps 0-{n - 1}, "
                 f"{method.replace('_', ' ')}; receptive field {size} px")
        pictures[layer] = layer_figure(shown, patches, list(range(n)), top["values"][:n, 0].tolist(), title)
    if capped:
        print(f"note: render.{net.name}.channels = {channels} is more than some layers have; showing all maps of "
              + ", ".join(capped))
    out = renders_dir(net)
    with atomic_dir(out) as tmp:
        for layer, png in pictures.items():
            (tmp / render_path(net, layer).name).write_bytes(png)
    print(f"{net.title}: wrote " + ", ".join(f"{out}/{layer}.png" for layer in net.layers))


if __name__ == "__main__":
    main()
