"""End to end: `dvc repro` (every stage, up to render@lenet5 and report@lenet5) in a copy of
this repo, on small MNIST files served from 127.0.0.1 through CNN_INTERNALS_MIRROR (the
params' own URLs refuse connections). test_report.py checks the report this builds."""

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FakeServer
from PIL import Image

from cnn_internals.core.params import PARAMS_LOG
from cnn_internals.data import mnist
from cnn_internals.models import NETS

from repo_copy import copy_repo, edit_params, run

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3

KILL_AFTER_FIRST_EPOCH = """
import os, runpy, signal, sys
from cnn_internals.training import loop as training
save = training.Checkpoint.save
def save_then_die(self, state):
    save(self, state)
    os.kill(os.getpid(), signal.SIGKILL)     # as hard as a power cut, right after epoch 1
training.Checkpoint.save = save_then_die
sys.argv = ["stages/train.py", "--net", "lenet5"]
sys.path.insert(0, "stages")
runpy.run_path("stages/train.py", run_name="__main__")
"""


def set_params(repo, refused, md5s, **changes):
    edit_params(repo, {
        "data.mnist.source": "official",
        "data.mnist.files": [{"url": f"{refused}/mnist/{name}", "md5": md5s[name]}
                             for pair in mnist.FILES.values() for name in pair],
        "train.lenet5.epochs": EPOCHS, "train.lenet5.batch_size": 16, "train.lenet5.device": "cpu",
        "render.lenet5.channels": 2, "visualize.lenet5.maps": 2, "visualize.lenet5.steps": 8, **changes})


@pytest.fixture(scope="module")
def server(mnist_files):
    fake = FakeServer().start()
    for name, data in mnist_files["bytes"].items():
        fake.serve(f"/mirror/{name}", data)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def refused():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory, server, refused, mnist_files):
    repo = copy_repo(tmp_path_factory.mktemp("built"))
    set_params(repo, refused, mnist_files["md5"])
    mirror = f"{server.base_url}/mirror"
    reads = tmp_path_factory.mktemp("reads") / "params_read.tsv"
    result = run(["dvc", "repro"], repo, mirror, extra_env={PARAMS_LOG: str(reads)})
    return {"repo": repo, "mirror": mirror, "log": result.stdout, "reads": reads}


def outputs(repo):
    names = ["models/lenet5.pt", "data/mined/lenet5.json", "metrics/lenet5.json", "metrics/lenet5_history.tsv",
             "metrics/lenet5_confusion.csv", "metrics/lenet5_visualize.json"]
    shown = (*NETS["lenet5"].layers, "classes")
    names += [f"data/visualized/lenet5/{name}.npy" for name in shown]
    names += [f"images/lenet5_{name}{suffix}.png" for name in shown for suffix in ("", "_optimized")]
    report = sorted(p.relative_to(repo).as_posix() for p in (repo / "reports/lenet5").rglob("*") if p.is_file())
    return {name: (repo / name).read_bytes() for name in names + report}


def test_repro_downloads_through_the_mirror_and_trains_with_falling_loss(built, server, mnist_files):
    repo = built["repo"]
    assert all(server.count(f"/mirror/{name}") >= 1 for name in mnist_files["md5"])
    metrics = json.loads((repo / "metrics/lenet5.json").read_text())
    assert metrics["train_images"] == 60 and metrics["test_images"] == 20 and metrics["epochs"] == EPOCHS
    assert all(math.isfinite(v) for v in metrics.values())
    rows = list(csv.DictReader(io.StringIO((repo / "metrics/lenet5_history.tsv").read_text()), delimiter="\t"))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]
    confusion = list(csv.DictReader(io.StringIO((repo / "metrics/lenet5_confusion.csv").read_text())))
    assert [int(r["actual"]) for r in confusion] == mnist_files["test"][1].tolist()
    accuracy = np.mean([r["actual"] == r["predicted"] for r in confusion])
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    saved = torch.load(repo / "models/lenet5.pt", weights_only=True)
    assert saved["state_dict"]["conv1.weight"].shape == (6, 1, 5, 5)
    params = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lenet5"]
    own = NETS["lenet5"].config.model_fields                  # the net's own keys, not the recipe's
    assert saved["config"] == {key: params[key] for key in own}


def trained_lenet(repo):
    """(model in eval mode, its inputs) of the LeNet-5 that train@lenet5 wrote in ``repo``, built
    from the params there and loaded from models/lenet5.pt (shared with test_report.py)."""
    net = NETS["lenet5"]
    config = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lenet5"]
    model = net.build(config)
    model.load_state_dict(torch.load(repo / "models/lenet5.pt", weights_only=True)["state_dict"])
    return model.eval(), net.inputs(None, config, "cpu")


def test_mined_top_k_are_the_real_spatial_maxima_of_the_trained_model(built, mnist_files):
    repo = built["repo"]
    net = NETS["lenet5"]
    model, inputs = trained_lenet(repo)
    x = inputs.eval(torch.from_numpy(mnist_files["test"][0]))
    acts = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach()))
             for n in net.layers]
    with torch.no_grad():
        scores = model(x)
    for h in hooks:
        h.remove()
    mined = json.loads((repo / "data/mined/lenet5.json").read_text())
    assert mined["split"] == "test" and mined["k"] == 9
    # F6's units and the classes: a value per image, the output itself (F6's before its tanh;
    # the classes' the negated RBF penalties the forward returns), ranked with ties to the lower image
    assert net.layers[-1] == "f6" and acts["f6"].shape == (len(x), 84)
    for entry, values in ((mined["layers"]["f6"], acts["f6"]), (mined["classes"], scores)):
        assert set(entry) == {"values", "images"}
        brute = torch.sort(values.t(), dim=1, descending=True, stable=True)
        assert torch.equal(torch.tensor(entry["values"]), brute.values[:, :9])
        assert torch.equal(torch.tensor(entry["images"]), brute.indices[:, :9])
    for layer in net.layers[:-1]:
        entry = {f: torch.tensor(v) for f, v in mined["layers"][layer].items()}
        maxima = acts[layer].flatten(2).amax(2)                      # (N, C)
        assert entry["values"].shape == (acts[layer].shape[1], 9)
        brute = torch.sort(maxima.t(), dim=1, descending=True, stable=True)
        assert torch.equal(entry["values"], brute.values[:, :9])
        assert torch.equal(entry["images"], brute.indices[:, :9])
        picked = acts[layer][entry["images"], torch.arange(len(entry["images"]))[:, None], entry["rows"], entry["cols"]]
        assert torch.equal(picked, entry["values"])


def test_visualized_images_are_uint8_at_the_input_size_and_their_metrics_recompute(built):
    """visualize@lenet5 (visualize.lenet5.maps 2, steps 8 here): per shown layer and for the
    classes, the first 2 maps' images, uint8 (2, 1, 32, 32); metrics/lenet5_visualize.json's
    figures and objectives.json's per-map values recomputed here from those stored images and the
    mined file through forward hooks: the objective (a map's mean over its positions, F6's value,
    a class's score), the best of each map's 9 mined images on it, the fraction beaten and the
    median gain."""
    repo = built["repo"]
    net = NETS["lenet5"]
    model, inputs = trained_lenet(repo)
    mined = json.loads((repo / "data/mined/lenet5.json").read_text())
    metrics = json.loads((repo / "metrics/lenet5_visualize.json").read_text())
    test_images = np.load(repo / "data/prepared/mnist/test_images.npy")
    assert sorted(p.name for p in (repo / "data/visualized/lenet5").iterdir()) == sorted(
        [f"{name}.npy" for name in net.shown] + ["objectives.json"])
    stored = json.loads((repo / "data/visualized/lenet5/objectives.json").read_text())["layers"]
    assert list(metrics["layers"]) == sorted([*net.layers, "classes"]) and metrics["steps"] == 8

    def objectives(x, name, units):
        acts = {}
        handle = None
        if name != "classes":
            handle = getattr(model, name).register_forward_hook(lambda m, a, out: acts.setdefault("a", out.detach()))
        with torch.no_grad():
            scores = model(x)
        if handle:
            handle.remove()
        out = scores if name == "classes" else acts["a"]
        picked = out[torch.arange(len(x)), torch.as_tensor(units)]
        return picked.flatten(1).mean(1) if picked.dim() > 1 else picked

    for name in net.shown:
        images = np.load(repo / f"data/visualized/lenet5/{name}.npy")
        assert images.dtype == np.uint8 and images.shape == (2, 1, 32, 32)
        assert images.std() > 0
        ours = objectives(inputs.from_pixels(torch.from_numpy(images).float() / 255), name, [0, 1])
        table = mined["classes"] if name == "classes" else mined["layers"][name]
        best = []
        for unit in (0, 1):
            x = inputs.eval(torch.from_numpy(test_images[table["images"][unit]]))
            best.append(objectives(x, name, [unit] * len(x)).max())
        gain = ours - torch.stack(best)
        assert stored[name]["objective"] == pytest.approx(ours.tolist(), abs=1e-5)
        assert stored[name]["best_mined"] == pytest.approx(torch.stack(best).tolist(), abs=1e-5)
        m = metrics["layers"][name]
        assert m["maps"] == 2 and m["beats_best_mined"] == pytest.approx(float((gain > 0).float().mean()))
        assert m["median_gain"] == pytest.approx(float(gain.median()), abs=1e-5)
        assert m["median_objective"] == pytest.approx(float(ours.median()), abs=1e-5)


def test_every_picture_is_a_non_blank_png_without_metadata(built):
    shown = ("conv1", "pool1", "conv2", "pool2", "conv3", "f6", "classes")
    assert {p.name for p in (built["repo"] / "images").iterdir()} == {
        f"lenet5_{name}{suffix}.png" for name in shown for suffix in ("", "_optimized")}
    for layer in (*shown, *(f"{name}_optimized" for name in shown)):
        path = built["repo"] / f"images/lenet5_{layer}.png"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200
            assert not {k for k in img.info if k.lower() in ("software", "creation time", "date")}
            assert np.asarray(img.convert("L")).std() > 10


def test_second_repro_does_nothing(built):
    repo, before = built["repo"], outputs(built["repo"])
    again = run(["dvc", "repro"], repo, built["mirror"])
    assert stages_run(again, scans=True) == ["scan@mnist"]       # runs every time, rewrites the same bytes:
    assert "Stage 'prepare@mnist' didn't change, skipping" in again.stdout     # nothing after it reruns
    status = run(["dvc", "status"], repo, built["mirror"])
    assert status.stdout.split() == ["scan@mnist:", "always", "changed"]       # and nothing else
    assert outputs(repo) == before


def test_training_killed_mid_run_resumes_to_identical_outputs(built, tmp_path, refused, mnist_files):
    repo = copy_repo(tmp_path)
    set_params(repo, refused, mnist_files["md5"])
    run(["dvc", "repro", "stats@mnist"], repo, built["mirror"])
    killed = run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH], repo, built["mirror"], check=False)
    assert killed.returncode == -9
    assert (repo / "checkpoints/lenet5/last.pt").is_file() and not (repo / "models/lenet5.pt").exists()
    resumed = run(["dvc", "repro"], repo, built["mirror"])
    assert "resuming from epoch 1" in resumed.stdout
    assert not (repo / "checkpoints/lenet5").exists()
    assert outputs(repo) == outputs(built["repo"])
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock == yaml.safe_load((built["repo"] / "dvc.lock").read_text())


@pytest.mark.parametrize("stage,changes,message", [
    ("train", {"train.lenet5.epochs": -1}, "train.lenet5.epochs must be >= 0"),
    ("train", {"train.lenet5.lr": 0}, "train.lenet5.lr must be > 0"),
    ("train", {"train.lenet5.batch_size": None}, "missing key 'train.lenet5.batch_size'"),
    ("train", {"train.lenet5.optimizer": "lbfgs"}, "train.lenet5.optimizer must be one of"),
    ("mine", {"mine.lenet5.k": 0}, "mine.lenet5.k must be >= 1"),
    # the mine stage declares mine.lenet5 only, not data.mnist.kind: validate knows the splits
    ("validate", {"mine.lenet5.split": "val"}, "mine.lenet5.split must be one of train, test; got 'val'"),
    ("render", {"render.lenet5.method": "lrp"}, "render.lenet5.method must be one of"),
    ("render", {"render.lenet5.channels": "six"}, "render.lenet5.channels must be int"),
    ("report", {"report.lenet5.k": 0}, "report.lenet5.k must be >= 1"),
    ("report", {"report.lenet5.format": "gif"}, "report.lenet5.format must be one of"),
    ("report", {"report.lenet5.maps": 0}, "report.lenet5.maps must be all or an int >= 1"),
    # scan checks data.mnist and writes what download fetches (download reads only that)
    ("scan", {"data.mnist.source": "web"}, "data.mnist.source must be one of"),
    ("train", {"train.lenet5.nproc": 3}, "train.lenet5.batch_size (16) must be divisible by train.lenet5.nproc (3)"),
    ("train", {"train.lenet5.nproc": 0}, "train.lenet5.nproc must be >= 1"),
    ("train", {"train.lenet5.device": "mps"}, "train.lenet5.device is 'mps', but Apple's Metal (MPS) is not available"),
    ("train", {"train.lenet5.device": "meta"}, "train.lenet5.device must be one of auto, cpu, cuda, cuda:N, mps; got"),
    ("train", {"train.lenet5.lrr": 0.1}, "unknown key 'train.lenet5.lrr'; did you mean 'train.lenet5.lr'?"),
    ("train", {"train.lenet5.j": float("nan")}, "train.lenet5.j must be a finite number"),
    ("train", {"train.lenet5.lr": float("inf")}, "train.lenet5.lr must be a finite number"),
])
def test_bad_params_fail_in_one_line_before_any_output(tmp_path, refused, mnist_files, stage, changes, message):
    repo = copy_repo(tmp_path)
    set_params(repo, refused, mnist_files["md5"], **changes)
    args = ["--dataset", "mnist"] if stage == "scan" else [] if stage == "validate" else ["--net", "lenet5"]
    result = run([sys.executable, f"stages/{stage}.py", *args], repo, "", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not any((repo / d).exists() for d in ("data", "models", "checkpoints"))
    assert not any((repo / "images").glob("**/*.png")) and not any((repo / "metrics").glob("*"))


def test_unreachable_mirrors_fail_fast_naming_every_url(tmp_path, refused, mnist_files):
    repo = copy_repo(tmp_path)
    set_params(repo, refused, mnist_files["md5"])
    result = run(["dvc", "repro", "download@mnist"], repo, f"{refused}/offline", check=False)
    assert result.returncode != 0
    assert f"{refused}/offline/train-images-idx3-ubyte.gz" in result.stderr + result.stdout
    assert f"{refused}/mnist/train-images-idx3-ubyte.gz" in result.stderr + result.stdout
    assert not (repo / "data/raw/mnist").exists()


def one_line_error(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("path,damage,stage,fix", [
    ("models/lenet5.pt", b"\x80\x04random bytes", "mine", "dvc repro -f train@lenet5"),
    ("models/lenet5.pt", b"", "render", "dvc repro -f train@lenet5"),
    ("data/mined/lenet5.json", "half", "render", "dvc repro -f mine@lenet5"),
    ("data/mined/lenet5.json", b'{"split": "test", "k": 9, "layers": {"conv1": {"values": [[1]]}}}', "render",
     "dvc repro -f mine@lenet5"),
    ("data/stats/mnist/stats.json", "half", "train", "dvc repro -f stats@mnist"),
    ("metrics/lenet5_history.tsv", b"epoch\ttrain_loss\n1\tnan?\n", "report", "dvc repro -f train@lenet5"),
    ("data/mined/lenet5.json", "half", "report", "dvc repro -f mine@lenet5"),
])
def test_a_corrupt_artifact_is_named_in_one_line_with_the_stage_to_rerun(built, tmp_path, path, damage, stage, fix):
    repo = tmp_path / "repo"
    shutil.copytree(built["repo"], repo, symlinks=True)
    target = repo / path
    target.unlink()                      # DVC may have linked it to the cache: never write through
    original = (built["repo"] / path).read_bytes()
    target.write_bytes(original[: len(original) // 2] if damage == "half" else damage)
    result = run([sys.executable, f"stages/{stage}.py", "--net", "lenet5"], repo, built["mirror"], check=False)
    one_line_error(result, path.split("/")[-1], fix)


def test_render_says_once_when_a_layer_has_fewer_maps_than_asked(built, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(built["repo"], repo, symlinks=True)
    edit_params(repo, {"render.lenet5.channels": 10})
    result = run([sys.executable, "stages/render.py", "--net", "lenet5"], repo, built["mirror"])
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: render.lenet5.channels = 10 is more than some layers have; showing all maps of "
                     "conv1 (6), pool1 (6)"]


@pytest.mark.parametrize("stage", ["validate", "download", "prepare", "stats", "train", "mine", "visualize", "render",
                                   "report", "weights"])
def test_every_stage_explains_itself_with_help(stage):
    result = subprocess.run([sys.executable, f"stages/{stage}.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
    flag = {"train": "--net", "mine": "--net", "visualize": "--net", "render": "--net", "report": "--net",
            "weights": "--net", "validate": "--params"}.get(stage, "--dataset")
    assert flag in result.stdout and f"`{stage}" in result.stdout


def snapshot(repo):
    """Every file of the workspace that DVC or a stage writes, with its bytes."""
    roots = ["data", "models", "metrics", "images", "reports", "checkpoints"]
    return {p.relative_to(repo).as_posix(): p.read_bytes()
            for root in roots if (repo / root).exists() for p in sorted((repo / root).rglob("*")) if p.is_file()}


def copy_built(built, dest):
    shutil.copytree(built["repo"], dest, symlinks=True)
    return dest


@pytest.mark.parametrize("module", ["explain", "plots_png", "push_runs"])
def test_module_commands_name_themselves_as_users_type_them(module):
    result = subprocess.run([sys.executable, "-m", f"cnn_internals.{module}", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m cnn_internals.{module} ")


def stages_run(result, scans=False):
    """The stages a `dvc repro` ran, in order; without scan@<dataset>, which runs on every repro
    by design (data/manifest.py) and is tested on its own, unless ``scans``."""
    ran = [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")]
    return ran if scans else [stage for stage in ran if not stage.startswith("scan@")]


def flatten(value, prefix):
    if isinstance(value, dict):
        return {k for key, v in value.items() for k in flatten(v, f"{prefix}.{key}")}
    return {prefix}


def test_every_stage_reads_exactly_the_params_it_declares(built):
    """dvc.yaml's params lists against the keys each stage's code read in the build
    ($CNN_INTERNALS_PARAMS_LOG): a key read but not declared would not rerun the stage when
    edited; one declared but not read would rerun it for nothing."""
    lock = yaml.safe_load((built["repo"] / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((built["repo"] / "params.yaml").read_text())
    read = {}
    for line in built["reads"].read_text().splitlines():
        stage, key = line.split("\t")
        node = params
        for part in key.split("."):
            node = node[part]
        if not isinstance(node, dict):                       # leaves only: sections are on the way
            read.setdefault(stage, set()).add(key)
    assert set(read) <= set(lock)
    for stage, entry in lock.items():
        declared = entry.get("params", {}).get("params.yaml", {})
        if stage == "validate":
            assert set(declared) == set(params), "validate must declare the whole params file"
            continue
        leaves = {k for key, value in declared.items() for k in flatten(value, key)}
        assert read.get(stage, set()) == leaves, stage


def test_a_bad_param_stops_dvc_repro_before_any_output_is_removed(built, tmp_path):
    repo = copy_built(built, tmp_path / "repo")
    before = snapshot(repo)
    edit_params(repo, {"train.lenet5.lr": 0})
    result = run(["dvc", "repro"], repo, built["mirror"], check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "params.yaml: train.lenet5.lr must be > 0" in ours[0], result.stderr
    assert stages_run(result) == ["validate"] and "Traceback" not in result.stderr
    assert snapshot(repo) == before
    edit_params(repo, {"train.lenet5.lr": yaml.safe_load((built["repo"] / "params.yaml").read_text())
                       ["train"]["lenet5"]["lr"]})
    again = run(["dvc", "repro"], repo, built["mirror"])
    assert stages_run(again) in ([], ["validate"]) and snapshot(repo) == before


def test_a_param_edit_reruns_only_the_stages_that_read_it(built, tmp_path):
    repo = copy_built(built, tmp_path / "repo")
    before = snapshot(repo)
    edit_params(repo, {"render.lenet5.channels": 3})
    assert stages_run(run(["dvc", "repro"], repo, built["mirror"])) == ["validate", "render@lenet5", "gallery"]
    assert snapshot(repo)["images/lenet5_conv1.png"] != before["images/lenet5_conv1.png"]
    # amp is off on the CPU whatever it says: train reruns, writes the same weights, and
    # nothing after it runs again but the report, which shows the training params
    edit_params(repo, {"render.lenet5.channels": 2, "train.lenet5.amp": False})
    result = run(["dvc", "repro"], repo, built["mirror"])
    assert "Running stage 'train@lenet5'" in result.stdout and "Running stage 'report@lenet5'" in result.stdout
    assert "Running stage 'mine@lenet5'" not in result.stdout
    after = snapshot(repo)
    assert b"<th>train.lenet5.amp</th><td>False</td>" in after["reports/lenet5/index.html"]
    assert {k: v for k, v in after.items() if not k.startswith("reports/")} == \
           {k: v for k, v in before.items() if not k.startswith("reports/")}



def changed_stages(result) -> set:
    """The stages `dvc status` names (its unindented "name:" lines)."""
    found = {line[:-1] for line in result.stdout.splitlines() if line.endswith(":") and not line[0].isspace()}
    return {stage for stage in found if not stage.startswith("scan@")}     # always changed (data/manifest.py)


@pytest.mark.parametrize("edited,stale", [
    # the training loop: training reruns, and nothing that only reads its model (mine, render)
    ("src/cnn_internals/training/loop.py", {"train@lenet5"}),
    # the report's page: the report, and validate, which checks report.<net> with viz/report.py
    ("src/cnn_internals/viz/report_page.py", {"report@lenet5", "validate"}),
    # the projection engine: what projects (render, report) and validate, not training or mining
    ("src/cnn_internals/engine/projection.py", {"validate", "render@lenet5", "report@lenet5"}),
])
def test_editing_a_layer_changes_only_the_stages_that_import_it(built, tmp_path, edited, stale):
    repo = copy_built(built, tmp_path / "repo")
    assert changed_stages(run(["dvc", "status"], repo, built["mirror"])) == set()
    with open(repo / edited, "a") as source:
        source.write("\n# an edit\n")
    assert changed_stages(run(["dvc", "status"], repo, built["mirror"])) == stale

WRITE_FAILS = """
import errno, os, pathlib, runpy, sys
write = pathlib.Path.write_bytes
count = [0]
def full_disk(self, data):
    if self.name.endswith(".tmp"):
        count[0] += 1
        if count[0] == 3:       # the third output of the set
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write(self, data)
pathlib.Path.write_bytes = full_disk
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))      # where `python stages/x.py` finds _bootstrap
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_while_writing_changes_no_output(built, tmp_path):
    """train writes its four outputs all or nothing; the error is one line."""
    repo = copy_built(built, tmp_path / "repo")
    (repo / "write_fails.py").write_text(WRITE_FAILS)
    before = snapshot(repo)
    edit_params(repo, {"train.lenet5.epochs": 1})
    result = run([sys.executable, "write_fails.py", "stages/train.py", "--net", "lenet5"], repo, built["mirror"],
                 check=False)
    one_line_error(result, "cannot write", "No space left on device")
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoints/")} == before
    assert not list(repo.rglob("*.tmp"))


def test_a_stage_failing_under_dvc_puts_its_last_good_outputs_back(built, tmp_path):
    repo = copy_built(built, tmp_path / "repo")
    (repo / "write_fails.py").write_text(WRITE_FAILS)
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("cmd: python stages/train.py",
                                                     "cmd: python write_fails.py stages/train.py"))
    before = snapshot(repo)
    edit_params(repo, {"train.lenet5.epochs": 1})
    result = run(["dvc", "repro", "train@lenet5"], repo, built["mirror"], check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "No space left on device" in ours[0], result.stderr
    assert "the last good outputs of train@lenet5 (dvc.lock) are back in place" in ours[0]
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoints/")} == before


def test_stages_find_the_project_from_any_folder_and_name_the_params_file_used(built, tmp_path):
    repo = copy_built(built, tmp_path / "repo")
    before = snapshot(repo)
    run([sys.executable, "render.py", "--net", "lenet5", "--params", "../params.yaml"], repo / "stages",
        built["mirror"])
    run([sys.executable, "../stages/mine.py", "--net", "lenet5"], repo / "metrics", built["mirror"])
    assert snapshot(repo) == before
    assert sorted(p.name for p in (repo / "stages").iterdir() if p.is_dir() and p.name != "__pycache__") == []
    custom = repo / "custom.yaml"
    custom.write_text((repo / "params.yaml").read_text().replace("method: guided_backprop", "method: lrp"))
    result = run([sys.executable, "render.py", "--net", "lenet5", "--params", "../custom.yaml"], repo / "stages",
                 built["mirror"], check=False)
    one_line_error(result, "../custom.yaml: render.lenet5.method must be one of")


def test_a_stage_without_its_packages_says_how_to_install_them():
    result = subprocess.run([sys.executable, "-S", "stages/train.py", "--net", "lenet5"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    one_line_error(result, "not installed", "pip install -e .")
