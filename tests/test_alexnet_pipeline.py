"""End to end: AlexNet's stages through `dvc repro` in a copy of this repo, on a small archive
in imagenette2-320's exact layout served from 127.0.0.1 through CNN_INTERNALS_MIRROR (the
params' own URL refuses connections). Tiny sizes, one epoch: this checks the plumbing, the
files and their agreement with each other, never AlexNet's quality (nothing here stands in for
its results).

The same `dvc repro` builds ResNet-18 on `weights: imagenet` with `epochs: 0`, sharing the
download, prepare and stats stages (one build: the suite has no time for a second): its weights
are a state dict written here in torchvision's file format (seeded random values and a head
fitted here, not the published ones), served beside the archive. Its held-out figures and its
strongest conv5_x unit are checked against a computation of their own here, with torchvision and
plain torch ops. ZFNet trains from scratch beside them, one epoch, as AlexNet does."""

import csv
import hashlib
import io
import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from conftest import FakeServer
from oracles import brute_force_top_k
from PIL import Image

from cnn_internals.data.imagenette import CLASSES
from cnn_internals.data.pretrained import SCRATCH
from cnn_internals.models import NETS

from imagenette_fixture import build_archive, class_image
from repo_copy import copy_repo, edit_params, run

EPOCHS_TO_LEARN = 6       # 100 % from epoch 3 on (AdamW 3e-5, kaiming init): a margin of three
# ZFNet runs through the same stages in tests/test_own_data_pipeline.py, on a folder in ImageNet's layout.
NETS_BUILT = ("alexnet", "resnet18")
STAGES = ("validate", "scan@imagenette", "download@imagenette", "prepare@imagenette", "stats@imagenette",
          *(f"{stage}@{net}" for net in NETS_BUILT for stage in ("weights", "train", "mine", "visualize", "render", "report")),
          "gallery")
# Written out here, not read from the registry, so that a slip there cannot hide in both.
RESNET18_LAYERS = {"conv1": 64, "conv2_x": 64, "conv3_x": 128, "conv4_x": 256, "conv5_x": 512}   # name: maps
# ImageNet's class index of each Imagenette class, in Imagenette's (wnid-sorted) order, and the
# channel means and stds of torchvision's ImageNet transform.
IMAGENETTE_IN_IMAGENET = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The paper's arXiv number. Not train's seed 0: the net it initialises must not pass for the file's.
RESNET18_SEED = 151203385


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("imagenette") / "imagenette2-320.tgz")


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A ResNet-18 state dict as torchvision publishes one: ``torch.save`` of the OrderedDict of
    ``torchvision.models.resnet18(weights=None)`` (1000 classes), named ``resnet18-<first 8 hex
    digits of its sha256>.pth``. Seeded, with its batch-norm affine terms and running statistics
    moved off their initial 1s and 0s, so that evaluation depends on every kind of tensor in it.
    Its fc rows at Imagenette's ten ImageNet classes are a nearest-class-mean head on its own
    pooled features of one fixture-style picture per class (not the archive's), so the held-out
    predictions vary from image to image and the accuracy compared below means something.
    Returns {"state", "data", "sha256", "name"}."""
    torch.manual_seed(RESNET18_SEED)
    model = torchvision.models.resnet18(weights=None)
    gen = torch.Generator().manual_seed(RESNET18_SEED)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = 0.5 + torch.rand(size, generator=gen)
            module.bias.data = 0.1 * torch.randn(size, generator=gen)
            module.running_mean = 0.1 * torch.randn(size, generator=gen)
            module.running_var = 0.5 + 1.5 * torch.rand(size, generator=gen)
            module.num_batches_tracked.fill_(1000)
    # One picture per class drawn as the archive draws them (another index), upscaled to 256 and
    # centre-cropped as the prepared images are evaluated.
    pictures = np.stack([np.asarray(Image.fromarray(class_image(label, 5, (90, 90))).resize((256, 256),
                                                                                          Image.BILINEAR))
                         for label in range(len(IMAGENETTE_IN_IMAGENET))])
    features = []
    hook = model.eval().avgpool.register_forward_hook(lambda module, args, output: features.append(output.flatten(1)))
    with torch.no_grad():
        model(evaluation_view(torch.from_numpy(pictures)))
    hook.remove()
    pooled = features[0]                                                          # (10, 512)
    centre, spread = pooled.mean(0), pooled.std(0) + 1e-3
    head = (pooled - centre) / spread ** 2           # score_c = (f - centre) . head_c: standardised distances
    head *= 5 / ((pooled - centre) @ head.T).abs().max()                        # scores within +-5
    with torch.no_grad():
        model.fc.weight[IMAGENETTE_IN_IMAGENET] = head
        model.fc.bias[IMAGENETTE_IN_IMAGENET] = -(head @ centre)
    state = model.state_dict()
    staging = tmp_path_factory.mktemp("resnet18_weights") / "staging.pth"
    torch.save(state, staging)
    data = staging.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    return {"state": state, "data": data, "sha256": sha256, "name": f"resnet18-{sha256[:8]}.pth"}


@pytest.fixture(scope="module")
def mirror_server(archive, resnet18_weights):
    fake = FakeServer().start()
    fake.serve("/mirror/imagenette2-320.tgz", archive["path"].read_bytes())
    fake.serve(f"/mirror/{resnet18_weights['name']}", resnet18_weights["data"])
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def mirror(mirror_server):
    return f"{mirror_server.base_url}/mirror"


def alexnet_params(refused, md5, **changes):
    return {"pipeline.nets": {"alexnet": "imagenette"}, "pipeline.datasets": ["imagenette"],
            "data.imagenette.source": f"{refused}/imagenette2-320.tgz", "data.imagenette.md5": md5,
            "train.alexnet.epochs": 1, "train.alexnet.batch_size": 10, "train.alexnet.device": "cpu",
            "mine.alexnet.k": 3, "render.alexnet.channels": 2, "report.alexnet.maps": 2,
            "visualize.alexnet.maps": 1, "visualize.alexnet.steps": 2, **changes}


def resnet18_params(refused, weights):
    """ResNet-18 beside AlexNet: torchvision's file (from the mirror only: its URL refuses
    connections), evaluated as it is (epochs 0), mined and rendered as small as AlexNet. Its
    report, which AlexNet's tests cover, is the smallest there is (one unit of one map per
    layer, one most-wrong image): each projection pass through ResNet-18 at 224 px costs."""
    return {"pipeline.nets": {net: "imagenette" for net in NETS_BUILT},
            "weights.resnet18": {"url": f"{refused}/models/{weights['name']}", "sha256": weights["sha256"]},
            "train.resnet18.weights": "imagenet", "train.resnet18.epochs": 0, "train.resnet18.batch_size": 10,
            "train.resnet18.device": "cpu", "mine.resnet18.k": 3, "render.resnet18.channels": 2,
            "report.resnet18.maps": 1, "report.resnet18.k": 1, "report.resnet18.wrong": 1,
            "visualize.resnet18.maps": 1, "visualize.resnet18.steps": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory, mirror, archive, resnet18_weights):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    repo = copy_repo(tmp_path_factory.mktemp("alexnet"))
    edit_params(repo, alexnet_params(refused, archive["md5"], **resnet18_params(refused, resnet18_weights)))
    result = run(["dvc", "repro"], repo, mirror)
    return {"repo": repo, "log": result.stdout, "refused": refused}


def test_repro_runs_every_stage_of_every_net_under_its_name(built):
    lock = yaml.safe_load((built["repo"] / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    ran = [line.split("'")[1] for line in built["log"].splitlines() if line.startswith("Running stage '")]
    assert sorted(ran) == sorted(STAGES)                                          # each one, once
    for net in NETS_BUILT:
        assert ran.index(f"weights@{net}") < ran.index(f"train@{net}")          # train depends on the weights
    assert ran.index("gallery") > max(ran.index(f"render@{net}") for net in NETS_BUILT)


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
    assert set(saved["config"]) == {"weights", "weight_init", "normalize", "augment", "lighting_std"}   # the net's own keys
    mined = json.loads((repo / "data/mined/alexnet.json").read_text())
    assert mined["split"] == "val" and list(mined["layers"]) == list(NETS["alexnet"].layers)
    assert [len(mined["layers"][f"conv{i}"]["values"]) for i in range(1, 6)] == [96, 256, 384, 384, 256]
    assert (repo / "models/pretrained/alexnet.pth").read_bytes() == SCRATCH     # scratch: nothing fetched
    assert_gallery_pictures(repo, "alexnet", [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "classes"])


def test_mined_units_are_brute_forces_top_k_over_every_image_of_the_split(built, monkeypatch):
    monkeypatch.chdir(built["repo"])
    assert_mined_is_brute_force("alexnet", k=3, images=10)


def assert_mined_is_brute_force(name: str, k: int, images: int, dataset: str | None = None) -> None:
    """data/mined/<net>.json against brute force: models/<net>.pt loaded (as mine@<net> loads it),
    every image of the mined split through it in its eval view, each shown layer's whole output
    kept by a forward hook (copied: an in-place ReLU follows each conv), and per map the top k of
    the images' spatial maxima, ties to the lower image, the position the first maximum in
    row-major order: the same images, rows and cols, the same values within 1e-5, for every map
    of every layer. The batches are mine.py's (2^24 bytes of uint8 a batch), so that the
    arithmetic is the same."""
    from cnn_internals.pipeline.artifacts import load_model, load_split, net_inputs

    net = NETS[name].on(dataset or NETS[name].dataset)
    mined = json.loads(open(f"data/mined/{name}.json").read())
    model, config = load_model(net, torch.device("cpu"))
    split = load_split(net, mined["split"])
    inputs = net_inputs(net, config, torch.device("cpu"))
    acts = {layer: [] for layer in net.layers}
    hooks = [model.get_submodule(net.module_path(layer)).register_forward_hook(
        lambda module, args, output, layer=layer: acts[layer].append(output.detach().clone())) for layer in net.layers]
    batch = max(1, min(512, 2 ** 24 // int(np.prod(split.images.shape[1:]))))
    scores = []
    with torch.no_grad():
        for start in range(0, len(split), batch):
            scores.append(model(inputs.eval(torch.from_numpy(np.array(split.images[start:start + batch])))))
    for hook in hooks:
        hook.remove()
    assert mined["k"] == k and list(mined["layers"]) == list(net.layers)
    assert net.layers[-2:] == ("fc6", "fc7")
    for layer in (*net.layers, "classes"):
        outputs = torch.cat(scores if layer == "classes" else acts[layer])
        assert len(outputs) == len(split) == images
        got = mined["classes"] if layer == "classes" else mined["layers"][layer]
        expected = brute_force_top_k(outputs, mined["k"])
        assert set(got) == set(expected), layer          # positions exactly for the conv maps
        assert np.array(got["values"]).shape == (outputs.shape[1], mined["k"]), layer
        np.testing.assert_allclose(np.array(got["values"]), expected["values"], rtol=0, atol=1e-5, err_msg=layer)
        for field in set(expected) - {"values"}:
            assert np.array_equal(np.array(got[field]), expected[field]), (layer, field)


def assert_gallery_pictures(repo, net, layers):
    """images/<net>_<layer>.png for each layer: a PNG that is not blank, the very bytes of
    render@<net>'s renders/<net>/<layer>.png (the gallery stage's copy)."""
    for layer in layers:
        picture = repo / f"images/{net}_{layer}.png"
        with Image.open(picture) as img:
            assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10, picture
        assert picture.read_bytes() == (repo / f"renders/{net}/{layer}.png").read_bytes(), picture


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
    for layer in ("fc6", "fc7"):      # fully connected: 2 of 4096 units (maps caps fc_units' 256), whole images
        assert f"AlexNet {layer}: 2 of 4096 units (fully connected)" in page
        assert f'id="{layer}-1"' in page and f'id="{layer}-2"' not in page
    assert "AlexNet classes: 10 classes" in page and 'id="classes-9"' in page
    for layer, rows in (("fc6", 2), ("classes", 10)):
        for name in ("gradient", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam", "saliency", "patches"):
            with Image.open(folder / layer / f"{name}.jpg") as img:
                assert img.format == "JPEG" and img.size == (3 * 48, rows * 48)     # 224 px shrunk to 48
                assert np.ptp(np.asarray(img)) > 20
    with Image.open(folder / "filters.jpg") as img:
        assert img.size == (96 * 16, 16)


def torchvision_resnet18(state_dict):
    """torchvision's ResNet-18 (1000 classes) holding ``state_dict``, strictly, in eval mode."""
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def evaluation_view(images):
    """uint8 (N, 256, 256, 3) -> torchvision's evaluation view of them, (N, 3, 224, 224): the
    centre 224x224 crop, (x / 255 - mean) / std per channel with ImageNet's means and stds."""
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (256, 256, 3)
    top = (256 - 224) // 2
    crops = images[:, top:top + 224, top:top + 224].permute(0, 3, 1, 2).to(torch.float32) / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (crops - mean) / std


def val_inputs(repo):
    """The prepared val images in the evaluation view, and their labels."""
    prepared = repo / "data/prepared/imagenette"
    images = torch.from_numpy(np.load(prepared / "val_images.npy"))
    return evaluation_view(images), torch.from_numpy(np.load(prepared / "val_labels.npy")).long()


def test_resnet18_imagenet_weights_are_the_served_file_and_are_what_train_started_from(built, resnet18_weights):
    repo = built["repo"]
    assert (repo / "models/pretrained/resnet18.pth").read_bytes() == resnet18_weights["data"]
    assert f"models/pretrained/resnet18.pth: sha256 {resnet18_weights['sha256'][:8]}... verified" in built["log"]
    saved = torch.load(repo / "models/resnet18.pt", weights_only=True)
    assert saved["config"] == {"weights": "imagenet", "augment": True, "lighting_std": 0.1}
    # epochs 0: the saved net is torchvision's file as it is, its fc read through the ten-logit head (fc.0)
    state = {key.replace("fc.0.", "fc.", 1): value for key, value in saved["state_dict"].items()}
    assert list(state) == list(resnet18_weights["state"])
    for key, tensor in resnet18_weights["state"].items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key


def test_resnet18_held_out_figures_are_torchvisions_net_read_at_the_ten_classes(built, resnet18_weights, archive):
    """metrics/resnet18.json and the confusion file against torchvision's resnet18 holding the
    served state dict, on the prepared val images, its logits read at Imagenette's ten ImageNet
    classes: the same prediction for every image, the same accuracies, the same loss."""
    repo = built["repo"]
    inputs, labels = val_inputs(repo)
    with torch.no_grad():
        scores = torchvision_resnet18(resnet18_weights["state"])(inputs)[:, IMAGENETTE_IN_IMAGENET]   # (N, 10)
    predicted = scores.argmax(1)
    assert len(set(predicted.tolist())) > 3          # the fixture's head tells the classes apart: not one guess
    top5 = (scores.topk(5, dim=1).indices == labels[:, None]).any(1)
    metrics = json.loads((repo / "metrics/resnet18.json").read_text())
    assert metrics["epochs"] == 0 and "train_loss" not in metrics                 # nothing was trained
    assert metrics["test_images"] == len(labels) == len(archive["val"])
    assert metrics["test_accuracy"] == round((predicted == labels).double().mean().item(), 6)
    assert metrics["test_top5_accuracy"] == round(top5.double().mean().item(), 6)
    assert metrics["test_loss"] == pytest.approx(F.cross_entropy(scores, labels).item(), rel=1e-5, abs=2e-6)
    names = [name for _, name in CLASSES]
    confusion = list(csv.DictReader(io.StringIO((repo / "metrics/resnet18_confusion.csv").read_text())))
    assert [(r["actual"], r["predicted"]) for r in confusion] == [(names[a], names[p]) for a, p in
                                                                zip(labels.tolist(), predicted.tolist())]
    rows = list(csv.DictReader(io.StringIO((repo / "metrics/resnet18_history.tsv").read_text()), delimiter="\t"))
    assert [int(r["epoch"]) for r in rows] == [0]
    assert float(rows[0]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_resnet18_is_mined_under_the_papers_names_and_its_top_unit_is_brute_forces(built):
    """data/mined/resnet18.json's keys are the paper's names; its strongest conv5_x unit of map 0
    is the maximum, over the val images and positions, of a forward hook on torchvision's
    layer4.1.conv2 in the net that models/resnet18.pt holds; the pictures are in images/."""
    repo = built["repo"]
    mined = json.loads((repo / "data/mined/resnet18.json").read_text())
    assert mined["split"] == "val" and mined["k"] == 3 and list(mined["layers"]) == list(RESNET18_LAYERS)
    assert [len(mined["layers"][layer]["values"]) for layer in RESNET18_LAYERS] == list(RESNET18_LAYERS.values())
    saved = torch.load(repo / "models/resnet18.pt", weights_only=True)["state_dict"]
    model = torchvision_resnet18({key.replace("fc.0.", "fc.", 1): value for key, value in saved.items()})
    outputs = []
    model.layer4[1].conv2.register_forward_hook(lambda module, args, output: outputs.append(output))
    with torch.no_grad():
        model(val_inputs(repo)[0])
    conv5 = outputs[0]                                                            # (N, 512, 7, 7)
    assert tuple(conv5.shape[1:]) == (512, 7, 7)
    top = mined["layers"]["conv5_x"]
    assert top["values"][0][0] == pytest.approx(conv5[:, 0].max().item(), rel=1e-5, abs=1e-6)
    assert top["values"][0] == sorted(top["values"][0], reverse=True) and len(top["values"][0]) == 3
    image, row, col = top["images"][0][0], top["rows"][0][0], top["cols"][0][0]
    assert conv5[image, 0, row, col].item() == pytest.approx(top["values"][0][0], rel=1e-5, abs=1e-6)
    assert_gallery_pictures(repo, "resnet18", [*RESNET18_LAYERS, "classes"])
    page = (repo / "reports/resnet18/index.html").read_text()
    assert all(f"ResNet-18 {layer}: 1 of {maps} maps" in page for layer, maps in RESNET18_LAYERS.items())


def test_second_repro_does_nothing(built, mirror, mirror_server, resnet18_weights):
    again = run(["dvc", "repro"], built["repo"], mirror)
    assert [line for line in again.stdout.splitlines() if line.startswith("Running stage")
            and "'scan@" not in line] == []                 # scan@<dataset> runs on every repro, alone
    assert mirror_server.count(f"/mirror/{resnet18_weights['name']}") == 1       # fetched once, by the first build


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
    from cnn_internals.data.statistics import image_statistics
    from cnn_internals.training.loop import Checkpoint, evaluate, train
    from cnn_internals.training.recipe import Recipe

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
