"""Stage `train@<net>`: train a net as its paper did, on its dataset.

    python stages/train.py --net lenet5            # what `dvc repro train@lenet5` runs

Reads ``train.<net>`` from params.yaml, the raw data and the dataset statistics. Writes
models/<net>.pt (a plain state_dict), metrics/<net>.json, metrics/<net>_history.tsv (per epoch,
for `dvc plots`) and metrics/<net>_confusion.csv (one row per test image, for dvc's confusion
template). Checkpoints every epoch to checkpoints/<net>/ and resumes from there when rerun
with the same params; the checkpoint is deleted once the run completes.
"""

import csv
import hashlib
import io
from pathlib import Path

import torch

from cnn_internals.atomic import write_json, write_text, write_torch
from cnn_internals.errors import cli
from cnn_internals.pipeline import net_stage_args, load_inputs, load_stats, weights_path
from cnn_internals.training import (Checkpoint, evaluate, make_deterministic, params_tag, pick_device,
                                    read_recipe, train)


def history_tsv(history):
    columns = ["epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy"]
    rows = ["\t".join(columns)] + ["\t".join(f"{h[c]:.6g}" if c != "epoch" else str(h[c]) for c in columns)
                                   for h in history]
    return "\n".join(rows) + "\n"


def confusion_csv(actual, predicted):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows(zip(actual.tolist(), predicted.tolist()))
    return buf.getvalue()


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    recipe = read_recipe(params, net.name)
    p = params["train"][net.name]
    device = pick_device(p["device"])
    make_deterministic()

    stats = load_stats(net.dataset)
    data = {split: load_inputs(net, params, split, stats) for split in ("train", "test")}
    train_x = data["train"][0]

    torch.manual_seed(recipe.seed)
    model = net.build(p).to(device)
    loss_fn = net.loss(p)
    # The tag covers what shapes training: its params and the very data (not the data params,
    # which this stage does not declare).
    data_hash = hashlib.sha256(train_x.numpy().tobytes() + data["train"][1].numpy().tobytes()).hexdigest()
    checkpoint = Checkpoint(Path("checkpoints") / net.name, params_tag({"train": p, "data": data_hash}))
    history = train(model, loss_fn, data["train"], data["test"], recipe, checkpoint)

    test_loss, test_acc, predictions = evaluate(model, loss_fn, *data["test"])
    metrics = {
        "epochs": recipe.epochs,
        "train_images": len(train_x),
        "test_images": len(data["test"][0]),
        "train_loss": round(history[-1]["train_loss"], 6),
        "test_loss": round(test_loss, 6),
        "test_accuracy": round(test_acc, 6),
        "test_error_percent": round(100 * (1 - test_acc), 4),
        "input_mean": round(train_x.mean().item(), 6),
        "input_std": round(train_x.std().item(), 6),
    }
    write_torch(weights_path(net), {k: v.cpu() for k, v in model.state_dict().items()})
    write_text(Path("metrics") / f"{net.name}_history.tsv", history_tsv(history))
    write_text(Path("metrics") / f"{net.name}_confusion.csv", confusion_csv(data["test"][1], predictions))
    write_json(Path("metrics") / f"{net.name}.json", metrics)
    checkpoint.remove()
    print(f"{net.title}: test accuracy {test_acc:.4f} ({metrics['test_error_percent']}% error) "
          f"after {recipe.epochs} epochs on {len(train_x)} images")


if __name__ == "__main__":
    main()
