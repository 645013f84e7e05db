"""Your own images through the whole pipeline: a user's three plain-named classes in one folder
(split by val_fraction) with AlexNet from scratch, then ImageNet's layout (wnid folders, JPEGs
of several sizes and modes, one corrupt, an unlabelled test/ folder) switched on with ZFNet by
the README's `dvc exp run -S '+pipeline.nets.<net>=<dataset>' -S 'pipeline.datasets=[...]'`; a
second repro runs nothing but the scans, an edit only prepare reads fetches nothing again, and an
image added to the folder is what `dvc status` then sees."""

import csv
import io
import json
import subprocess

import numpy as np
import pytest
import torch
import yaml
from test_alexnet_pipeline import assert_gallery_pictures, assert_mined_is_brute_force
from test_imagefolder import expected_split, write_images

from cnn_internals.data.pretrained import SCRATCH
from cnn_internals.data.wnids import imagenet_names

from imagenette_fixture import class_image, encode
from repo_copy import copy_repo, edit_params, run
from test_pipeline import stages_run

PLAIN = ("cat", "dog", "fox")
WNIDS = ("n01440764", "n02102040", "n03888257")
SMALL = {"epochs": 1, "batch_size": 8, "device": "cpu"}


def small(net: str) -> dict:
    return {**{f"train.{net}.{k}": v for k, v in SMALL.items()}, f"mine.{net}.k": 2, f"render.{net}.channels": 2,
            f"report.{net}.maps": 1, f"report.{net}.k": 1, f"report.{net}.wrong": 1,
            f"visualize.{net}.maps": 1, f"visualize.{net}.steps": 2}


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    photos = root / "photos"
    written = write_images(photos, {name: (label, 7, 0) for label, name in enumerate(PLAIN)})
    imagenet = root / "imagenet"
    for split, count, start in (("train", 3, 0), ("val", 1, 10)):
        write_images(imagenet, {f"{split}/{w}": (label, count, start) for label, w in enumerate(WNIDS)})
    whole = (imagenet / "train" / WNIDS[1] / "img000.jpg").read_bytes()
    (imagenet / "train" / WNIDS[1] / "cut.jpg").write_bytes(whole[:300])
    (imagenet / "test").mkdir()
    (imagenet / "test" / "unlabelled.jpg").write_bytes((imagenet / "val" / WNIDS[0] / "img010.jpg").read_bytes())
    repo = copy_repo(root / "repo")
    edit_params(repo, {"data.photos": {"kind": "imagefolder", "source": str(photos), "val_fraction": 0.3, "size": 256},
                       "data.wnids": {"kind": "imagefolder", "source": str(imagenet), "size": 256},
                       "pipeline.nets": {"alexnet": "photos"}, "pipeline.datasets": ["photos"],
                       **small("alexnet"), **small("zfnet")})
    first = run(["dvc", "repro"], repo, "")
    for name, value in (("user.name", "tests"), ("user.email", "tests@cnn-internals.invalid"), ("commit.gpgsign", "false")):
        git(repo, "config", name, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "alexnet on photos")
    # the README's form: a net switched on for a dataset the pipeline did not build yet
    switched = run(["dvc", "exp", "run", "-S", "+pipeline.nets.zfnet=wnids", "-S", "pipeline.datasets=[photos,wnids]"],
                   repo, "")
    again = run(["dvc", "repro"], repo, "")
    # the classes pinned as found: prepare reruns (same bytes, so nothing after it), download does not
    edit_params(repo, {"data.photos.classes": list(PLAIN)})
    pinned = run(["dvc", "repro"], repo, "")
    return {"repo": repo, "photos": photos, "written": written, "first": first, "switched": switched, "again": again,
            "pinned": pinned}


def test_a_users_folder_is_prepared_split_by_the_hash_and_alexnet_runs_every_stage_on_it(built):
    repo = built["repo"]
    assert sorted(stages_run(built["first"])) == sorted([
        "validate", "weights@alexnet", "download@photos", "prepare@photos", "stats@photos", "train@alexnet",
        "mine@alexnet", "visualize@alexnet", "render@alexnet", "gallery", "report@alexnet"])
    prepared = repo / "data/prepared/photos"
    val = sorted(rel for rel in built["written"] if expected_split(rel, 0.3) == "val")
    assert np.load(prepared / "val_labels.npy").tolist() == [built["written"][rel] for rel in val]
    assert json.loads((prepared / "classes.json").read_text()) == [{"name": n} for n in PLAIN]
    metrics = json.loads((repo / "metrics/alexnet.json").read_text())
    assert metrics["test_images"] == len(val) and metrics["train_images"] == len(built["written"]) - len(val)
    confusion = (repo / "metrics/alexnet_confusion.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in confusion[1:]] == [PLAIN[built["written"][rel]] for rel in val]
    mined = json.loads((repo / "data/mined/alexnet.json").read_text())
    assert mined["split"] == "val" and len(mined["classes"]["values"]) == 3          # a head of three classes
    assert (repo / "reports/alexnet/index.html").is_file() and (repo / "images/alexnet_conv1.png").is_file()


def test_explain_reads_a_photo_with_the_net_trained_on_the_users_classes(built, tmp_path):
    """`python -m cnn_internals.explain` finds AlexNet's dataset in pipeline.nets: the answer is
    over the three classes it was trained on, their probabilities summing to 1."""
    photo = tmp_path / "fox.jpg"                       # explain wants 224 px on the short side
    photo.write_bytes(encode(class_image(2, 0, (300, 240)), "RGB"))
    result = run(["python", "-m", "cnn_internals.explain", "--net", "alexnet", "--layer", "conv5", "--top", "3",
                  "--out", str(tmp_path / "out"), "--json", str(tmp_path / "answers.json"), str(photo)], built["repo"], "")
    [answer] = json.loads((tmp_path / "answers.json").read_text())
    assert sorted(entry["class"] for entry in answer["top"]) == sorted(PLAIN), result.stdout
    assert sum(entry["p"] for entry in answer["top"]) == pytest.approx(1, abs=1e-3)


def test_dvc_exp_run_switches_a_net_on_for_a_dataset_in_imagenets_layout(built):
    repo = built["repo"]
    assert sorted(stages_run(built["switched"])) == sorted([
        "validate", "weights@zfnet", "download@wnids", "prepare@wnids", "stats@wnids", "train@zfnet", "mine@zfnet",
        "visualize@zfnet", "render@zfnet", "gallery", "report@zfnet"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["pipeline"]["nets"] == {"alexnet": "photos", "zfnet": "wnids"}
    assert params["pipeline"]["datasets"] == ["photos", "wnids"]
    names = imagenet_names()
    prepared = repo / "data/prepared/wnids"
    assert json.loads((prepared / "classes.json").read_text()) == [{"wnid": w, "name": names[w]} for w in WNIDS]
    report = json.loads((prepared / "report.json").read_text())
    assert [s["path"] for s in report["train"]["skipped"]] == [f"train/{WNIDS[1]}/cut.jpg"]
    assert report["train"]["images"] == 9 and report["val"]["images"] == 3             # test/ ignored
    metrics = json.loads((repo / "metrics/zfnet.json").read_text())
    assert (metrics["train_images"], metrics["test_images"]) == (9, 3)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    deps = {d["path"] for d in lock["train@zfnet"]["deps"]}
    assert {"data/prepared/wnids", "data/stats/wnids"} <= deps and not {"data/prepared/photos"} & deps


def test_zfnet_on_three_wnid_classes_is_trained_mined_and_drawn(built, monkeypatch):
    """ZFNet from scratch through weights, train, mine, render and report: its saved net has a
    head of three (58,301,578 parameters with ten, tests/test_zfnet.py; 7 x 4,097 fewer), its
    figures agree with each other, every layer is mined as brute force mines it, and drawn."""
    repo = built["repo"]
    saved = torch.load(repo / "models/zfnet.pt", weights_only=True)
    assert sum(v.numel() for v in saved["state_dict"].values()) == 58_301_578 - 7 * 4_097
    assert saved["state_dict"]["conv1.weight"].shape == (96, 3, 7, 7) and saved["config"]["filter_rms"] == 0.1
    metrics = json.loads((repo / "metrics/zfnet.json").read_text())
    rows = list(csv.DictReader(io.StringIO((repo / "metrics/zfnet_history.tsv").read_text()), delimiter="\t"))
    assert [int(r["epoch"]) for r in rows] == [1] and metrics["epochs"] == 1
    assert float(rows[0]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    confusion = list(csv.DictReader(io.StringIO((repo / "metrics/zfnet_confusion.csv").read_text())))
    assert np.mean([r["actual"] == r["predicted"] for r in confusion]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert {r["actual"] for r in confusion} == {"tench", "English springer", "parachute"}
    assert (repo / "models/pretrained/zfnet.pth").read_bytes() == SCRATCH       # scratch: nothing fetched
    monkeypatch.chdir(repo)
    assert_mined_is_brute_force("zfnet", k=2, images=3, dataset="wnids")
    assert_gallery_pictures(repo, "zfnet", [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "classes"])


def test_a_second_repro_runs_only_the_scans_and_an_added_image_is_seen(built):
    repo = built["repo"]
    assert stages_run(built["again"]) == [] and stages_run(built["again"], scans=True) == ["scan@photos", "scan@wnids"]
    # an edit only prepare reads (classes pinned as they were found) fetches nothing again, and
    # the same prepared bytes rerun nothing after prepare
    assert stages_run(built["pinned"]) == ["validate", "prepare@photos"]
    write_images(built["photos"], {"dog": (1, 1, 90)})
    run(["dvc", "repro", "scan@photos"], repo, "")
    status = run(["dvc", "status"], repo, "").stdout
    assert "prepare@photos:" in status and "data/manifests/photos.json" in status
    assert "prepare@wnids:" not in status
