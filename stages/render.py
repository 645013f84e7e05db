"""Stage `render@<net>`: one picture per depth the net shows, images/<prefix>_<layer>.png.

    python stages/render.py --net lenet5

For the first ``render.<net>.channels`` maps of each of those layers: the top-k units found by the
mine stage projected into pixel space with ``render.<net>.method`` (gradient, deconvnet,
guided_backprop, grad_cam, guided_grad_cam) and cropped to their receptive field, beside the
input patch each unit sees. All rows of a layer go through the projection engine together.
"""

import json
from pathlib import Path

import torch
from tqdm import tqdm

from cnn_internals.atomic import write_bytes
from cnn_internals.data.datasets import SPLITS
from cnn_internals.errors import UserError, cli
from cnn_internals.params import get
from cnn_internals.pipeline import net_stage_args, load_inputs, load_model, load_stats, mined_path
from cnn_internals.render import RENDER_METHODS, layer_figure, unit_pictures
from cnn_internals.training import pick_device


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    channels = get(params, f"render.{net.name}.channels", kind=int, minimum=1)
    method = get(params, f"render.{net.name}.method", kind=str, choices=RENDER_METHODS)
    split = get(params, f"mine.{net.name}.split", kind=str, choices=SPLITS[net.dataset])
    mined_file = mined_path(net)
    if not mined_file.is_file():
        raise UserError(f"{mined_file} missing: run `dvc repro mine@{net.name}` first")
    mined = json.loads(mined_file.read_text())
    if mined["split"] != split:
        raise UserError(f"{mined_file} was mined on {mined['split']!r}, params say {split!r}: rerun mine@{net.name}")
    device = pick_device("auto")
    model = load_model(net, params, device)
    stats = load_stats(net.dataset)
    inputs, _ = load_inputs(net, params, split, stats)
    p = params["train"][net.name]
    pictures = {}
    for layer in tqdm(net.layers, desc=f"render {net.name}", disable=None, leave=False):
        top = {field: torch.tensor(v) for field, v in mined["layers"][layer].items()}
        n = min(channels, len(top["values"]))
        k = top["values"].shape[1]
        ch = torch.arange(n).repeat_interleave(k)
        idx, rows, cols = (top[f][:n].reshape(-1) for f in ("images", "rows", "cols"))
        x = inputs[idx].to(device)
        shown, patches, rf = unit_pictures(model, layer, x, ch.to(device), rows.to(device), cols.to(device),
                                           method, net.input_size, lambda v: net.to_display(v, stats, p))
        shown = shown.reshape(n, k, *shown.shape[1:])
        patches = patches.reshape(n, k, *patches.shape[1:])
        size = rf[0] if isinstance(rf[0], int) else "x".join(map(str, rf[0]))
        title = (f"{net.title} {layer}: top {k} {split} images of maps 0-{n - 1}, {method.replace('_', ' ')}; "
                 f"receptive field {size} px")
        pictures[layer] = layer_figure(shown, patches, list(range(n)), top["values"][:n, 0].tolist(), title)
    for layer, png in pictures.items():
        write_bytes(Path("images") / f"{net.image_prefix}_{layer}.png", png)
    print(f"{net.title}: wrote " + ", ".join(f"images/{net.image_prefix}_{layer}.png" for layer in net.layers))


if __name__ == "__main__":
    main()
