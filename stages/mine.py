"""Stage `mine@<net>`: the top-k images of every feature map at each of the net's five depths
(for LeNet-5: the conv layers C1, C3, C5 and the subsampling layers S2, S4).

    python stages/mine.py --net lenet5

Streams ``mine.<net>.split`` through the trained model once, keeping only (channels, k) per
layer, and writes data/mined/<net>.json: per layer, values/images/rows/cols as
(channels x k) lists, best first (image = index in the split, rows/cols = the position of the
map's spatial maximum).
"""

import torch
from tqdm import tqdm

from cnn_internals.atomic import write_json
from cnn_internals.data.datasets import SPLITS
from cnn_internals.errors import UserError, cli
from cnn_internals.mining import top_k_activations
from cnn_internals.params import get
from cnn_internals.pipeline import net_stage_args, load_inputs, load_model, mined_path
from cnn_internals.training import pick_device

BATCH = 512


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    k = get(params, f"mine.{net.name}.k", kind=int, minimum=1)
    split = get(params, f"mine.{net.name}.split", kind=str, choices=SPLITS[net.dataset])
    device = pick_device("auto")
    model = load_model(net, params, device)
    inputs, _ = load_inputs(net, params, split)
    if k > len(inputs):
        raise UserError(f"params.yaml: mine.{net.name}.k = {k} exceeds the {len(inputs)} images of the {split} split")
    batches = tqdm(torch.split(inputs, BATCH), desc=f"mine {net.name}", disable=None, leave=False)
    top = top_k_activations(model, net.layers, batches, k)
    out = {"split": split, "k": k, "layers": {
        layer: {field: getattr(t, field).tolist() for field in ("values", "images", "rows", "cols")}
        for layer, t in top.items()}}
    write_json(mined_path(net), out)
    print(f"{net.title}: top {k} of {len(inputs)} {split} images for "
          + ", ".join(f"{layer} ({len(t.values)} maps)" for layer, t in top.items()))


if __name__ == "__main__":
    main()
