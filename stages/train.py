"""Stage `train@<net>`: train a net as its paper did, on its dataset.

    python stages/train.py --net lenet5            # what `dvc repro train@lenet5` runs

    # train.<net>.nproc: N > 1 (N GPUs of this machine, or N processes on its CPU): the same
    # command checks the params and data, then runs itself on N processes and waits:
    python -m torch.distributed.run --standalone --nproc_per_node=N stages/train.py --net alexnet

    # several machines, outside DVC (nproc: nodes x processes per node), on every node:
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
             --rdzv-id=alexnet stages/train.py --net alexnet

Reads ``train.<net>`` from params.yaml, the prepared data and the dataset statistics. Writes
models/<net>.pt ({"config": the whole train.<net> it was trained with, "state_dict"}),
metrics/<net>.json, metrics/<net>_history.tsv (one row per epoch, for `dvc plots`) and
metrics/<net>_confusion.csv (one row per held-out image, class names, for dvc's confusion
template), all four at once when training ends: a failure leaves none of them half new.
``test_*`` figures are on the dataset's held-out split (MNIST's test, Imagenette's val).
Checkpoints every epoch to checkpoints/<net>/ (with history.tsv, rewritten after every epoch
so a long run shows its progress) and resumes from there when rerun with the same params, data
and code; the checkpoint is deleted once the run completes. On several processes rank 0 alone
writes all of these; a failed rank stops every rank, and the stage's one error line names it.

``train.<net>.weights: imagenet`` (VGG-16, ResNet-18) starts from torchvision's published
weights, which the weights@<net> stage fetched into models/pretrained/<net>.pth; then the net
is fine-tuned, or with ``epochs: 0`` only evaluated: the same four files, the history one
epoch-0 row of held-out figures, no train_loss in the metrics.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys
from pathlib import Path

import torch

from cnn_internals.core.atomic import write_all, write_text
from cnn_internals.core.errors import UserError, first_line
from cnn_internals.core.params import params_name
from cnn_internals.core.project import started_in
from cnn_internals.data.prepared import fingerprint
from cnn_internals.data.pretrained import load_pretrained, weights_entry
from cnn_internals.pipeline.artifacts import (
    checkpoint_dir,
    dataset_classes,
    dataset_splits,
    history_tsv,
    load_split,
    load_stats,
    net_inputs,
    prepared_dir,
    pretrained_path,
    train_outputs,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.config import read_train
from cnn_internals.pipeline.stage import net_stage_args, train_device
from cnn_internals.runtime.device import keep_host_memory, make_deterministic
from cnn_internals.runtime.distributed import describe_processes, launch, process_group, under_torchrun
from cnn_internals.training.loop import Checkpoint, Precision, code_fingerprint, eval_batch_size, evaluate, params_tag, train

CODE = (Path(__file__).resolve().parents[1] / "src" / "cnn_internals", Path(__file__).resolve())


def imagenet_state_dict(net, params) -> dict:
    """torchvision's ImageNet state dict for ``net`` from models/pretrained/<net>.pth (the
    weights@<net> stage's output), its sha256 checked against weights.<net> on this load too."""
    return load_pretrained(pretrained_path(net.name), weights_entry(params, net.name)["sha256"])


def start_from_imagenet(net, model, state_dict) -> None:
    """torchvision's published weights into ``model`` (built with weights: imagenet), through
    the net's own key mapping; a state dict that does not fit is a UserError."""
    try:
        net.load_imagenet(model, state_dict)
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"{pretrained_path(net.name)} does not hold torchvision's {net.title} ImageNet weights "
                        f"({first_line(err)}): rerun `dvc repro -f weights@{net.name}`") from None


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    config = read_train(params, net)        # the net's own keys and the recipe, in one
    device = train_device(net, params, config)
    if device.type == "cpu":
        keep_host_memory()       # big maps reuse the heap instead of fresh pages each step
    train_name, test_name = dataset_splits(net)
    data = {"train": load_split(net, train_name), "test": load_split(net, test_name)}
    stats = load_stats(net.dataset)
    classes = dataset_classes(net)
    if config.weights == "imagenet" and classes.imagenet is None and config.epochs == 0:
        raise UserError(f"{params_name(params)}: train.{net.name}.epochs is 0 with weights: imagenet, but {net.dataset}'s "
                        f"{len(classes)} classes are not ImageNet wnids, so the net gets a fresh head for them, which "
                        "only training fits: set epochs > 0 (a smaller lr than from scratch, e.g. a tenth)")
    if not under_torchrun():
        print(f"{net.title}: training on {describe_processes(config.nproc, device)}", flush=True)
    if config.nproc > 1 and not under_torchrun():
        # Params and data are checked: now the same command on nproc processes (torchrun's own
        # failure report is a traceback; launch sums it up in one line).
        command = [sys.argv[0], *sys.argv[1:]] if argv is None else [__file__, *argv]
        launch(config.nproc, command, started_in(), checkpoint_dir(net) / "torchrun.log")
        return
    imagenet = imagenet_state_dict(net, params) if config.weights == "imagenet" else None
    make_deterministic()
    with process_group(device, config.nproc, f"train.{net.name}") as (world, device):
        train_on(net, config, device, data, stats, world, imagenet, classes)


def train_on(net, config, device, data, stats, world, imagenet=None, classes=None):
    """This process's part of training (all of it, or one rank's); rank 0 writes the outputs.
    ``config``: ``train.<net>`` (pipeline.config.read_train: the net's keys and the recipe);
    ``imagenet``: torchvision's state dict to start from (weights: imagenet), else None;
    ``classes``: what the head scores (the dataset's; default: the registry's)."""
    inputs = net_inputs(net, config, device, stats)
    torch.manual_seed(config.seed)
    model = net.build(config, classes)
    if imagenet is not None:
        start_from_imagenet(net, model, imagenet)
    model = model.to(device)
    loss_fn = net.loss(config)
    # What shapes training: its params, the very data, and the code (not the data params,
    # which this stage does not declare).
    tag = params_tag({"train": config.model_dump(), "data": fingerprint(prepared_dir(net.dataset)),
                      "code": code_fingerprint(*CODE)})
    checkpoint = Checkpoint(checkpoint_dir(net), tag)
    progress = checkpoint.directory / "history.tsv"
    history = train(model, loss_fn, inputs, data["train"], data["test"], config, checkpoint,
                    on_epoch=lambda h: write_text(progress, history_tsv(h)), world=world)
    if not world.main:
        return

    final = evaluate(model, loss_fn, inputs, data["test"], device, eval_batch_size(data["test"].images.shape[1:]),
                     Precision(device, config.amp), views=True)
    metrics = {
        "epochs": config.epochs,
        "train_images": len(data["train"]),
        "test_images": len(data["test"]),
        "test_loss": round(final["loss"], 6),
        "test_accuracy": round(final["accuracy"], 6),
        "test_top5_accuracy": round(final["top5_accuracy"], 6),
        "test_error_percent": round(100 * (1 - final["accuracy"]), 4),
    }
    if config.epochs:                    # with epochs 0 nothing was trained: no train loss
        metrics["train_loss"] = round(history[-1]["train_loss"], 6)
    if "views_accuracy" in final:
        metrics["test_10crop_accuracy"] = round(final["views_accuracy"], 6)
    write_all(train_outputs(net, model, config, metrics, history, data["test"].classes, data["test"].labels,
                            final["predictions"]))
    checkpoint.remove()
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    trained = f"after {epochs} on {len(data['train'])} images" if config.epochs else \
        "with no training (epochs 0)"
    print(f"{net.title}: test accuracy {final['accuracy']:.4f} ({metrics['test_error_percent']}% error) {trained}")


if __name__ == "__main__":
    main()
