"""Stage `mine@<net>`: the top-k images of every feature map and unit at each depth the net
shows (LeNet-5: the conv layers C1, C3, C5, the subsampling layers S2, S4 and F6; AlexNet:
conv1-conv5, fc6, fc7; VGG-16: conv1_2 .. conv5_3, fc6, fc7), hooked at each one's module path,
keyed by its paper name, and of every class (the scores the net's forward returns).

    python stages/mine.py --net lenet5             # what `dvc repro mine@lenet5` runs

    # mine.<net>.nproc: N > 1 (N GPUs of this machine, or N processes on its CPU): the same
    # command checks the params, data and model, then runs itself on N processes and waits:
    python -m torch.distributed.run --standalone --nproc_per_node=N stages/mine.py --net vgg16

    # several machines, outside DVC (nproc: nodes x processes per node), on every node:
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
             --rdzv-id=mine-vgg16 stages/mine.py --net vgg16

Streams ``mine.<net>.split`` through the trained model once (uint8 batches from the memory
map, turned into eval inputs on the device), keeping only (channels, k) per layer, and writes
data/mined/<net>.json: per layer, values/images/rows/cols as (channels x k) lists, best first
(image = index in the split, rows/cols = the position of the map's spatial maximum; a fully
connected layer's units have no rows/cols), and under "classes" the same values/images per
class, in classes.json order. Every layer and the classes come from one forward pass per batch.

On N processes (torchrun, where ``train.<net>.device`` says: NCCL on GPUs, gloo on the CPU)
each rank mines a contiguous run of whole batches of the split, the very batches one process
reads; rank 0 gathers the ranks' tables, merges them by the same rule (ties to the lower image
index) and alone writes the file: the same bytes as one process at the same threads per
process. A failed rank stops every rank and the stage in one line; nothing is written.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

import numpy as np
from tqdm import tqdm

from cnn_internals.core.atomic import write_bytes
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import params_name
from cnn_internals.core.project import started_in
from cnn_internals.data.loader import batches
from cnn_internals.data.prepared import splits_in
from cnn_internals.engine import CLASSES
from cnn_internals.engine.mining import merge_top_k, top_k_activations
from cnn_internals.pipeline.artifacts import (
    checkpoint_dir,
    load_model,
    load_split,
    mined_file,
    mined_path,
    net_inputs,
    prepared_dir,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.config import read_mine
from cnn_internals.pipeline.stage import device_for, net_stage_args
from cnn_internals.runtime.distributed import (
    batch_share,
    check_processes,
    describe_processes,
    gather_to_main,
    launch,
    process_group,
    under_torchrun,
)

# A batch holds about 16 MB of uint8 images, at most 512 of them (MNIST: 512; Imagenette: 85).
BATCH_BYTES = 2 ** 24


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = read_mine(params, net)
    device = device_for(net, params)
    check_processes(p.nproc, device, params_name(params), f"mine.{net.name}")
    held = splits_in(prepared_dir(net.dataset))   # validate checks the split against the kind; here, the data's own
    if held and p.split not in held:
        raise UserError(f"{params_name(params)}: mine.{net.name}.split is {p.split!r}, but {net.dataset} has "
                        f"{', '.join(held)}")
    split = load_split(net, p.split)
    if p.k > len(split):
        raise UserError(f"{params_name(params)}: mine.{net.name}.k = {p.k} exceeds the {len(split)} images "
                        f"of the {p.split} split")
    if not under_torchrun():
        print(f"{net.title}: mining on {describe_processes(p.nproc, device)}", flush=True)
    if p.nproc > 1 and not under_torchrun():
        # The model and statistics are checked here too (on the CPU: the GPUs are the ranks'),
        # then the same command on nproc processes; launch sums up a failure in one line.
        net_inputs(net, load_model(net, "cpu")[1], "cpu")
        log = checkpoint_dir(net) / "mine_torchrun.log"
        command = [sys.argv[0], *sys.argv[1:]] if argv is None else [__file__, *argv]
        launch(p.nproc, command, started_in(), log, what="mining")
        log.unlink(missing_ok=True)             # an earlier failure's report
        return
    with process_group(device, p.nproc, f"mine.{net.name}") as (world, device):
        parts = gather_to_main(mine_share(net, split, p.k, device, world), world)
    if not world.main:
        return
    top = merge([part for part in parts if part is not None], p.k)
    write_bytes(mined_path(net), mined_file(p.split, p.k, top))
    print(f"{net.title}: top {p.k} of {len(split)} {p.split} images for "
          + ", ".join(f"{layer} ({len(t.values)} {'maps' if t.rows is not None else 'units'})"
                      for layer, t in top.items() if layer != CLASSES) + f" and the {len(top[CLASSES].values)} classes")


def batch_size(split) -> int:
    """Images per batch: BATCH_BYTES of uint8, at most 512 (the same on every rank)."""
    return max(1, min(512, BATCH_BYTES // int(np.prod(split.images.shape[1:]))))


def mine_share(net, split, k, device, world):
    """This rank's tables (every layer's and the classes' TopK, image indices in the split) over
    its run of whole batches (all of the split for one process); None for a rank without one."""
    batch = batch_size(split)
    share = batch_share(len(split), batch, world)
    if not share:
        return None
    model, config = load_model(net, device)
    inputs = net_inputs(net, config, device)
    stream = (inputs.eval(x) for x, _ in batches(split.images, split.labels, np.asarray(share), batch, device))
    progress = tqdm(stream, total=-(-len(share) // batch), desc=f"mine {net.name}", leave=False,
                    disable=None if world.main else True)
    return top_k_activations(model, net.layer_paths, progress, k, classes=True, start=share.start)


def merge(parts, k):
    """The ranks' tables as one: per layer (and the classes), ``merge_top_k`` of its parts."""
    return {name: merge_top_k([part[name] for part in parts], k) for name in parts[0]}


if __name__ == "__main__":
    main()
