"""Stage `validate`: check every params section the pipeline's stages read, before any runs.

    python stages/validate.py                      # what `dvc repro` runs first

DVC removes a stage's outputs before running it, so a typo caught by the stage itself would
cost the model, the metrics or the pictures of the last good run. Every other stage depends on
this one's output, data/params.ok, so `dvc repro` runs it first and stops here, before anything
is removed, on any bad value: one line naming the file and the key (exit 2). It declares the
whole params file, so any edit reruns it (a few seconds, mostly importing torch); its
output's bytes never change, so a valid edit reruns only the stages that declare what changed.

Checked: no unknown section or block (the closest known key named), ``pipeline`` (known nets
and datasets, each net's dataset listed), ``data.<dataset>``, ``train``, ``mine``, ``render``,
``report``, ``visualize`` and ``weights.<net>`` of every dataset and net: required for the listed ones, checked
where present for the others; for a listed net also that ``train.<net>.device`` exists here,
with a GPU for each of ``train.<net>.nproc`` processes when it is CUDA, that
``weights.<net>`` is given when ``train.<net>.weights`` is imagenet, and that the net fits its
dataset (channels, size, and, where the classes are known before prepare runs, LeNet-5's fixed
prototypes and a fresh head on ImageNet weights: ``check_fit``).
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.atomic import write_text
from cnn_internals.core.config import node
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import load_params, params_name
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import dataset_names, get_dataset
from cnn_internals.data.imagefolder import ImageFolderConfig, class_entries, known_classes
from cnn_internals.data.pretrained import weights_entry
from cnn_internals.models import NETS, Classes
from cnn_internals.pipeline.artifacts import PARAMS_OK
from cnn_internals.pipeline.cli import cli, stage_parser
from cnn_internals.pipeline.config import check_layout, read_mine, read_pipeline, read_train, read_visualize
from cnn_internals.pipeline.stage import train_device
from cnn_internals.runtime.distributed import check_processes
from cnn_internals.viz.render import render_params
from cnn_internals.viz.report import report_params

OUT = PARAMS_OK
# The same bytes whatever the params: a valid edit must not make the stages after this rerun.
STAMP = "params checked by stages/validate.py\n"


def validate(params) -> list:
    """Every section of the params file, checked by the schema its stage reads it with: those of
    the listed datasets and nets must be there and fit this machine (the device exists, the
    ImageNet weights have an entry); the blocks of the others, where present, must be valid too,
    so that listing a net later does not meet a typo made today. Returns the sections checked."""
    check_layout(params)
    pipeline = read_pipeline(params)
    checked = ["pipeline"]
    datasets = {}
    for name in dataset_names(params):
        datasets[name] = get_dataset(params, name)
        checked.append(f"data.{name}")
    for net in NETS.values():
        listed = net.name in pipeline.nets
        net = net.on(pipeline.nets.get(net.name, net.dataset))
        splits = datasets[net.dataset].splits if net.dataset in datasets else None
        readers = {"train": read_train, "mine": lambda params, net: read_mine(params, net, splits),
                   "render": render_params, "report": report_params, "visualize": read_visualize}
        read = {}
        for section, reader in readers.items():
            if listed or node(params, f"{section}.{net.name}", None) is not None:
                read[section] = reader(params, net)
                checked.append(f"{section}.{net.name}")
            if section == "train" and listed:        # first: a net that cannot run there, before its other keys
                check_fit(params, net, datasets[net.dataset], read["train"])
        if listed:
            device = train_device(net, params, read["train"])
            check_processes(read["mine"].nproc, device, params_name(params), f"mine.{net.name}")
        imagenet = listed and read["train"].weights == "imagenet"
        if imagenet or node(params, f"weights.{net.name}", None) is not None:
            weights_entry(params, net.name)
            checked.append(f"weights.{net.name}")
    return checked


def check_fit(params, net, dataset, train) -> None:
    """``net`` can run on ``dataset`` as ``train.<net>`` says: its channels and input size, and
    its classes where they are known now (``check_classes``). Where they are not (an archive:
    its classes are known once download@ and prepare@ have run), train@<net> refuses LeNet-5's
    fixed prototypes or an untrained fresh head on them, before writing anything."""
    where = params_name(params)
    channels = net.input_size[0]
    if channels != dataset.channels:
        have = {1: "grey (1 channel)", 3: "RGB (3 channels)"}
        raise UserError(f"{where}: pipeline.nets maps {net.name} to {dataset.name}, but {net.title} reads "
                        f"{have[channels]} images and {dataset.name} holds {have[dataset.channels]}: map it to "
                        f"a dataset of its kind")
    size = getattr(dataset.config, "size", None)        # an image folder's stored side
    if size is not None and net.stored_size is not None and size != net.stored_size:
        raise UserError(f"{where}: data.{dataset.name}.size is {size}, but {net.title} takes {net.stored_size} px images "
                        f"as they are: set it to {net.stored_size}")
    if size is not None and net.stored_size is None and size < net.input_size[1]:
        raise UserError(f"{where}: data.{dataset.name}.size is {size}, but {net.title} takes {net.input_size[1]} px crops "
                        f"of it: set it to {net.input_size[1]} or more (256 is the papers')")
    check_classes(params, net, dataset, train)


def check_classes(params, net, dataset, train) -> None:
    """Where ``dataset``'s classes are known now (``known_classes``: pinned in its params, or a
    local folder's class folders, listed; not a prepared classes.json, which may be older than
    the params or the folder): LeNet-5's fixed prototypes only on the ten digits "0".."9", and
    no untrained fresh head on ImageNet weights. MNIST's classes are the ten digits."""
    fixed = getattr(train, "prototypes", None) == "fixed"
    fresh_head = train.weights == "imagenet" and train.epochs == 0
    if not (fixed or fresh_head) or not isinstance(dataset.config, ImageFolderConfig):
        return
    found = known_classes(dataset.config)
    if found is None:
        return
    classes = Classes.of(class_entries(found, dataset.config.wnid_aliases, dataset.name))
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    where = params_name(params)
    if fixed and classes.names != net.default_classes.names:         # LeNet-5's: the ten digits
        raise UserError(f"{where}: LeNet-5 on {dataset.name}: its fixed RBF prototypes are bitmaps of the ten digits, "
                        f"not this dataset's classes ({shown}): set train.lenet5.prototypes: learned")
    if fresh_head and classes.imagenet is None:
        raise UserError(f"{where}: train.{net.name}.epochs is 0 with weights: imagenet, but the classes of {dataset.name} "
                        f"({shown}) are not ImageNet wnids, so the net gets a fresh head for them, which only training "
                        "fits: set epochs > 0")


@cli
def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--out", default=OUT, type=user_path, help=f"stamp file written when valid (default {OUT})")
    args = parser.parse_args(argv)
    checked = validate(load_params(args.params))
    write_text(args.out, STAMP)
    print(f"{args.params}: valid ({', '.join(checked)})")


if __name__ == "__main__":
    sys.exit(main())
