"""Stage `train@<net>`: train a net as its paper did, on its dataset.

    python stages/train.py --net lenet5            # what `dvc repro train@lenet5` runs

Reads ``train.<net>`` from params.yaml, the prepared data and the dataset statistics. Writes
models/<net>.pt ({"config": the train keys that shape the net, "state_dict"}),
metrics/<net>.json, metrics/<net>_history.tsv (one row per epoch, for `dvc plots`) and
metrics/<net>_confusion.csv (one row per held-out image, class names, for dvc's confusion
template), all four at once when training ends: a failure leaves none of them half new.
``test_*`` figures are on the dataset's held-out split (MNIST's test, Imagenette's val).
Checkpoints every epoch to checkpoints/<net>/ (with history.tsv, rewritten after every epoch
so a long run shows its progress) and resumes from there when rerun with the same params, data
and code; the checkpoint is deleted once the run completes.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import csv
import io
from pathlib import Path

import torch

from cnn_internals.atomic import json_bytes, write_all, write_text
from cnn_internals.data import prepared_dir
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.prepared import fingerprint
from cnn_internals.errors import cli
from cnn_internals.pipeline import (device_for, load_split, load_stats, metrics_paths, model_file, net_inputs,
                                    net_stage_args, train_params, weights_path)
from cnn_internals.training import (Checkpoint, Precision, code_fingerprint, eval_batch_size, evaluate,
                                    make_deterministic, params_tag, train)

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "test_top5_accuracy")
CODE = (Path(__file__).resolve().parents[1] / "src" / "cnn_internals", Path(__file__).resolve())


def history_tsv(history):
    rows = ["\t".join(HISTORY_COLUMNS)] + [
        "\t".join(str(h[c]) if c == "epoch" else f"{h[c]:.6g}" for c in HISTORY_COLUMNS) for h in history]
    return "\n".join(rows) + "\n"


def confusion_csv(classes, actual, predicted):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(actual.tolist(), predicted.tolist()))
    return buf.getvalue()


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    recipe = train_params(params, net)
    p = params["train"][net.name]
    device = device_for(net, params)
    make_deterministic()
    train_name, test_name = get_dataset(net.dataset).splits
    data = {"train": load_split(net, train_name), "test": load_split(net, test_name)}
    inputs = net_inputs(net, p, device, load_stats(net.dataset))

    torch.manual_seed(recipe.seed)
    model = net.build(p).to(device)
    loss_fn = net.loss(p)
    # What shapes training: its params, the very data, and the code (not the data params,
    # which this stage does not declare).
    tag = params_tag({"train": p, "data": fingerprint(prepared_dir(net.dataset)), "code": code_fingerprint(*CODE)})
    checkpoint = Checkpoint(Path("checkpoints") / net.name, tag)
    progress = checkpoint.directory / "history.tsv"
    history = train(model, loss_fn, inputs, data["train"], data["test"], recipe, checkpoint,
                    on_epoch=lambda h: write_text(progress, history_tsv(h)))

    final = evaluate(model, loss_fn, inputs, data["test"], device, eval_batch_size(data["test"].images.shape[1:]),
                     Precision(device, recipe.amp), views=True)
    metrics = {
        "epochs": recipe.epochs,
        "train_images": len(data["train"]),
        "test_images": len(data["test"]),
        "train_loss": round(history[-1]["train_loss"], 6),
        "test_loss": round(final["loss"], 6),
        "test_accuracy": round(final["accuracy"], 6),
        "test_top5_accuracy": round(final["top5_accuracy"], 6),
        "test_error_percent": round(100 * (1 - final["accuracy"]), 4),
    }
    if "views_accuracy" in final:
        metrics["test_10crop_accuracy"] = round(final["views_accuracy"], 6)
    paths = metrics_paths(net)
    write_all({
        weights_path(net): model_file(net, model, p),
        paths["history"]: history_tsv(history).encode(),
        paths["confusion"]: confusion_csv(data["test"].classes, data["test"].labels, final["predictions"]).encode(),
        paths["metrics"]: json_bytes(metrics),
    })
    checkpoint.remove()
    print(f"{net.title}: test accuracy {final['accuracy']:.4f} ({metrics['test_error_percent']}% error) "
          f"after {recipe.epochs} epochs on {len(data['train'])} images")


if __name__ == "__main__":
    main()
