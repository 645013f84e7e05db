"""End to end: AlexNet's stages through `dvc repro` in a copy of this repo, on a small archive
in imagenette2-320's exact layout served from 127.0.0.1 through CNN_INTERNALS_MIRROR (the
params' own URL refuses connections). Tiny sizes, one epoch: this checks the plumbing, the
files and their agreement with each other, never AlexNet's quality (nothing here stands in for
its results)."""

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnn_internals.data.imagenette import CLASSES
from cnn_internals.models import NETS
from conftest import FakeServer
from imagenette_fixture import build_archive
from repo_copy import copy_repo, edit_params, run

EPOCHS_TO_LEARN = 6       # 100 % from epoch 3 on (AdamW 3e-5, kaiming init): a margin of three
STAGES = ("validate", "weights@alexnet", "download@imagenette", "prepare@imagenette", "stats@imagenette", "train@alexnet", "mine@alexnet",
          "render@alexnet", "gallery", "report@alexnet")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("imagenette") / "imagenette2-320.tgz")


@pytest.fixture(scope="module")
def mirror(archive):
    fake = FakeServer().start()
    fake.serve("/mirror/imagenette2-320.tgz", archive["path"].read_bytes())
    yield f"{fake.base_url}/mirror"
    fake.stop()


def alexnet_params(refused, md5, **changes):
    return {"pipeline.nets": ["alexnet"], "pipeline.datasets": ["imagenette"],
            "data.imagenette.files": [{"url": f"{refused}/imagenette2-320.tgz", "md5": md5}],
            "train.alexnet.epochs": 1, "train.alexnet.batch_size": 10, "train.alexnet.device": "cpu",
            "mine.alexnet.k": 3, "render.alexnet.channels": 2, "report.alexnet.maps": 2, **changes}


@pytest.fixture(scope="module")
def built(tmp_path_factory, mirror, archive):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    repo = copy_repo(tmp_path_factory.mktemp("alexnet"))
    edit_params(repo, alexnet_params(refused, archive["md5"]))
    result = run(["dvc", "repro"], repo, mirror)
    return {"repo": repo, "log": result.stdout, "refused": refused}


def test_repro_runs_every_alexnet_stage_under_its_name(built):
    lock = yaml.safe_load((built["repo"] / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert all(f"Running stage '{stage}'" in built["log"] for stage in STAGES)


def test_prepared_data_and_the_report_match_the_archive(built, archive):
    prepared = built["repo"] / "data/prepared/imagenette"
    assert [c["wnid"] for c in json.loads((prepared / "classes.json").read_text())] == [w for w, _ in CLASSES]
    report = json.loads((prepared / "report.json").read_text())
    assert [s["path"] for s in report["train"]["skipped"]] == [archive["corrupt"]]
    for split in ("train", "val"):
        labels = np.load(prepared / f"{split}_labels.npy")
        assert sorted(labels.tolist()) == sorted(e.label for e in archive[split])
        assert np.load(prepared / f"{split}_images.npy", mmap_mode="r").shape == (len(labels), 256, 256, 3)


def test_metrics_history_and_confusion_agree(built, archive):
    repo = built["repo"]
    metrics = json.loads((repo / "metrics/alexnet.json").read_text())
    assert metrics["train_images"] == len(archive["train"]) and metrics["test_images"] == len(archive["val"])
    for key in ("test_accuracy", "test_top5_accuracy", "test_10crop_accuracy", "test_loss", "train_loss"):
        assert math.isfinite(metrics[key])
    assert metrics["test_top5_accuracy"] >= metrics["test_accuracy"]
    rows = list(csv.DictReader(io.StringIO((repo / "metrics/alexnet_history.tsv").read_text()), delimiter="\t"))
    assert [int(r["epoch"]) for r in rows] == [1] and float(rows[0]["lr"]) == 0.01
    assert float(rows[0]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    confusion = list(csv.DictReader(io.StringIO((repo / "metrics/alexnet_confusion.csv").read_text())))
    names = [name for _, name in CLASSES]
    labels = np.load(repo / "data/prepared/imagenette/val_labels.npy")
    assert [r["actual"] for r in confusion] == [names[i] for i in labels]
    assert np.mean([r["actual"] == r["predicted"] for r in confusion]) == pytest.approx(metrics["test_accuracy"])
    stats = json.loads((repo / "metrics/imagenette_stats.json").read_text())
    assert stats["images"] == len(archive["train"]) and set(stats["mean"]) == {"red", "green", "blue"}


def test_weights_mined_units_and_pictures(built):
    repo = built["repo"]
    saved = torch.load(repo / "models/alexnet.pt", weights_only=True)
    assert sum(v.numel() for v in saved["state_dict"].values()) == 58_322_314
    assert set(saved["config"]) == {"weight_init", "normalize", "augment", "lighting_std"}
    mined = json.loads((repo / "data/mined/alexnet.json").read_text())
    assert mined["split"] == "val" and list(mined["layers"]) == list(NETS["alexnet"].layers)
    assert [len(mined["layers"][f"conv{i}"]["values"]) for i in range(1, 6)] == [96, 256, 384, 384, 256]
    for layer in NETS["alexnet"].layers:
        with Image.open(repo / f"images/alexnet_{layer}.png") as img:
            assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10


def test_the_report_shows_every_layer_through_the_same_code_as_jpeg_sprites(built):
    """report@alexnet on the first 2 maps of each layer (report.alexnet.maps), 3 units each
    (mine.alexnet.k caps the 9 asked for, with a note): one 48 px JPEG tile per unit and
    method, in cells padded to 16 px, and the page names each layer's share of its maps."""
    folder = built["repo"] / "reports/alexnet"
    page = (folder / "index.html").read_text()
    assert "note: report.alexnet.k = 9 is more than the 3 units mined per map; showing 3" in built["log"]
    for layer, maps, field in zip(NETS["alexnet"].layers, (96, 256, 384, 384, 256), (11, 51, 99, 131, 163)):
        assert f"AlexNet {layer}: 2 of {maps} maps" in page
        assert f'id="{layer}-1"' in page and f'id="{layer}-2"' not in page
        cell = -(-min(field, 48) // 16) * 16
        for name in ("gradient", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam", "patches"):
            with Image.open(folder / layer / f"{name}.jpg") as img:
                assert img.format == "JPEG" and img.mode == "RGB" and img.size == (3 * cell, 2 * cell)
                assert np.ptp(np.asarray(img)) > 20
    with Image.open(folder / "filters.jpg") as img:
        assert img.size == (96 * 16, 16)


def test_second_repro_does_nothing(built, mirror):
    again = run(["dvc", "repro"], built["repo"], mirror)
    assert "Running stage" not in again.stdout


def test_a_net_whose_dataset_is_not_listed_fails_in_one_line(tmp_path, built, mirror, archive):
    repo = copy_repo(tmp_path)
    edit_params(repo, alexnet_params(built["refused"], archive["md5"], **{"pipeline.datasets": ["mnist"]}))
    result = run(["dvc", "repro"], repo, mirror, check=False)
    assert result.returncode != 0
    assert "imagenette must be listed in pipeline.datasets" in result.stderr
    assert "Traceback" not in result.stderr and "Running stage 'validate'" in result.stdout
    assert "Running stage 'download" not in result.stdout      # stopped before any other stage
    assert not (repo / "models/alexnet.pt").exists()


def test_alexnet_learns_a_handful_of_photos_to_100_percent(tmp_path):
    """The training path can learn: five fixture photos of five classes, augmentation off,
    the real loop, inputs and model; in eval mode (no dropout) every one is then right."""
    from cnn_internals.data.imagenette import prepare_imagenette
    from cnn_internals.data.prepared import Split, read_split
    from cnn_internals.stats import image_statistics
    from cnn_internals.training import Checkpoint, Recipe, evaluate, train

    built = build_archive(tmp_path / "a.tgz", per_class={"train": 1, "val": 1}, corrupt=False)
    prepare_imagenette(built["path"], tmp_path / "prepared", workers=1)
    full = read_split(tmp_path / "prepared", "train", "")
    keep = np.flatnonzero(full.labels < 5)                                     # classes 0-4, one photo each
    split = Split(images=np.asarray(full.images[keep]), labels=full.labels[keep], classes=full.classes)
    p = {"weight_init": "kaiming", "normalize": "standardize", "augment": False, "lighting_std": 0.1}
    net = NETS["alexnet"]
    inputs = net.inputs(image_statistics(split.images), p, torch.device("cpu"))
    torch.manual_seed(0)
    model = net.build(p)
    recipe = Recipe(epochs=EPOCHS_TO_LEARN, batch_size=5, lr=3e-5, seed=0, optimizer="adamw", schedule="constant")
    history = train(model, net.loss(p), inputs, split, split, recipe, Checkpoint(tmp_path / "ckpt", "t"),
                    log=lambda s: None)
    assert evaluate(model, net.loss(p), inputs, split, torch.device("cpu"))["accuracy"] == 1.0
    assert [h["test_accuracy"] for h in history[2:]] == [1.0] * (EPOCHS_TO_LEARN - 2)
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3
