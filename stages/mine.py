"""Stage `mine@<net>`: the top-k images of every feature map and unit at each depth the net
shows (LeNet-5: the conv layers C1, C3, C5, the subsampling layers S2, S4 and F6; AlexNet:
conv1-conv5, fc6, fc7; VGG-16: conv1_2 .. conv5_3, fc6, fc7), hooked at each one's module path,
keyed by its paper name, and of every class (the scores the net's forward returns).

    python stages/mine.py --net lenet5

Streams ``mine.<net>.split`` through the trained model once (uint8 batches from the memory
map, turned into eval inputs on the device), keeping only (channels, k) per layer, and writes
data/mined/<net>.json: per layer, values/images/rows/cols as (channels x k) lists, best first
(image = index in the split, rows/cols = the position of the map's spatial maximum; a fully
connected layer's units have no rows/cols), and under "classes" the same values/images per
class, in classes.json order. Every layer and the classes come from one forward pass per batch.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import numpy as np
from tqdm import tqdm

from cnn_internals.core.atomic import write_bytes
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import params_name
from cnn_internals.data.loader import batches
from cnn_internals.engine import CLASSES
from cnn_internals.engine.mining import top_k_activations
from cnn_internals.pipeline.artifacts import load_model, load_split, mined_file, mined_path, net_inputs
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.config import read_mine
from cnn_internals.pipeline.stage import device_for, net_stage_args

# A batch holds about 16 MB of uint8 images, at most 512 of them (MNIST: 512; Imagenette: 85).
BATCH_BYTES = 2 ** 24


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = read_mine(params, net)
    k, split_name = p.k, p.split
    device = device_for(net, params)
    model, config = load_model(net, device)
    split = load_split(net, split_name)
    if k > len(split):
        raise UserError(f"{params_name(params)}: mine.{net.name}.k = {k} exceeds the {len(split)} images "
                        f"of the {split_name} split")
    inputs = net_inputs(net, config, device)
    batch = max(1, min(512, BATCH_BYTES // int(np.prod(split.images.shape[1:]))))
    stream = (inputs.eval(x) for x, _ in batches(split.images, split.labels, np.arange(len(split)), batch, device))
    top = top_k_activations(model, net.layer_paths, tqdm(stream, total=-(-len(split) // batch), desc=f"mine {net.name}",
                                                    disable=None, leave=False), k, classes=True)
    write_bytes(mined_path(net), mined_file(split_name, k, top))
    print(f"{net.title}: top {k} of {len(split)} {split_name} images for "
          + ", ".join(f"{layer} ({len(t.values)} {'maps' if t.rows is not None else 'units'})"
                      for layer, t in top.items() if layer != CLASSES) + f" and the {len(top[CLASSES].values)} classes")


if __name__ == "__main__":
    main()
