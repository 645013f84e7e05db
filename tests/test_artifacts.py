"""pipeline/artifacts.py: every artifact's path, writer and reader in one place. dvc.yaml's
outputs are held to it, and a mined file that does not fit its split or its net is refused."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnn_internals.core.errors import UserError
from cnn_internals.data.prepared import write_classes
from cnn_internals.engine.mining import top_k_activations
from cnn_internals.models import NETS
from cnn_internals.pipeline import artifacts

REPO = Path(__file__).resolve().parents[1]
LENET = NETS["lenet5"]


def declared_outputs() -> dict:
    """{(stage, item): [paths]} of every stage's outs, metrics and plots in dvc.yaml, its
    foreach expanded over every net or dataset the registry knows (not only the listed ones)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        if "foreach" in stage:
            items = ["mnist", "imagenette"] if "datasets" in stage["foreach"] else NETS
            body = stage["do"]
        else:
            items, body = [None], stage
        for item in items:
            paths = []
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind, []):
                    path = next(iter(entry)) if isinstance(entry, dict) else entry
                    paths.append(path.replace("${item}" if "datasets" in stage.get("foreach", "") else "${key}", item)
                                 if item else path)
            found[(name, item)] = paths
    return found


def test_dvc_yaml_declares_exactly_the_outputs_the_artifacts_module_names():
    declared = declared_outputs()
    assert {stage for stage, _ in declared} == {"validate", "weights", "scan", "download", "prepare", "stats", "train", "mine",
                                               "visualize", "render", "gallery", "report"}
    for (stage, item), paths in declared.items():
        assert sorted(paths) == sorted(p.as_posix() for p in artifacts.stage_outputs(stage, item)), (stage, item)


def test_no_stage_or_viz_module_spells_an_artifact_path():
    """Paths live in artifacts.py: no other stage script or library module writes one of its
    folders as a string literal."""
    pattern = re.compile(r"""["'](data/(raw|prepared|stats|mined|params|manifests)|models/|metrics/|renders/|reports/|images/|"""
                         r"""checkpoints/)|Path\(["'](data|models|metrics|renders|reports|images|checkpoints)["']\)""")
    offenders = []
    for path in [*REPO.glob("stages/*.py"), *REPO.glob("src/cnn_internals/**/*.py")]:
        if path.name in ("artifacts.py", "pretrained.py", "manifest.py", "paths.py"):   # the last three: see artifacts.py
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'""".*?"""', "", code, flags=re.S)         # docstrings may name them
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in pattern.finditer(code)]
    assert not offenders


@pytest.fixture
def mined(tmp_path, monkeypatch):
    """A real mined file of an untrained LeNet-5 over 40 random digits, written by the writer
    the mine stage uses, in a project folder; returns (model, split size, shapes)."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = LENET.build({}).eval()
    images = torch.rand(40, 1, 32, 32)
    top = top_k_activations(model, LENET.layer_paths, [images[:25], images[25:]], 3, classes=True)
    path = artifacts.mined_path(LENET)
    path.parent.mkdir(parents=True)
    path.write_bytes(artifacts.mined_file("test", 3, top))
    return model, 40, artifacts.layer_shapes(LENET, model)


def test_a_mined_file_reads_back_as_written(mined):
    model, size, shapes = mined
    assert shapes == {"conv1": (6, 28, 28), "pool1": (6, 14, 14), "conv2": (16, 10, 10), "pool2": (16, 5, 5),
                      "conv3": (120, 1, 1), "f6": (84,), "classes": (10,)}
    split, tables = artifacts.load_mined(LENET, size, shapes)
    raw = json.loads(artifacts.mined_path(LENET).read_text())
    assert split == "test" and raw["k"] == 3
    assert list(tables) == [*LENET.layers, "classes"]
    for layer, top in tables.items():
        stored = raw["classes"] if layer == "classes" else raw["layers"][layer]
        assert top["values"].shape == (shapes[layer][0], 3)
        assert set(top) == set(stored) == ({"values", "images", "rows", "cols"} if len(shapes[layer]) == 3
                                           else {"values", "images"})
        for field, table in top.items():
            assert table.tolist() == stored[field]


@pytest.mark.parametrize("field, at, value, problem", [
    ("images", (0, 0), -1, "conv1 names images outside its split of 40"),
    ("images", (1, 2), 40, "conv1 names images outside its split of 40"),
    ("images", (0, 0), 0.5, "conv1 has image indices or positions that are not whole numbers"),
    ("rows", (0, 0), 28, "conv1 has positions outside its 28x28 maps"),
    ("cols", (2, 1), -3, "conv1 has positions outside its 28x28 maps"),
    ("values", (0, 0), float("nan"), "conv1 has values that are not finite"),
    ("values", None, None, "conv1 has 5 maps; the net's layer has 6"),
])
def test_a_mined_file_that_does_not_fit_its_split_or_net_is_refused_in_one_line(mined, field, at, value, problem):
    model, size, shapes = mined
    path = artifacts.mined_path(LENET)
    raw = json.loads(path.read_text())
    table = raw["layers"]["conv1"]
    if at is None:                                   # one map fewer than the layer has
        raw["layers"]["conv1"] = {f: rows[:-1] for f, rows in table.items()}
    else:
        table[field][at[0]][at[1]] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError) as err:
        artifacts.load_mined(LENET, size, shapes)
    assert str(err.value) == f"{path}: {problem}: rerun `dvc repro -f mine@lenet5`"


@pytest.mark.parametrize("change, problem", [
    (lambda raw: raw["layers"]["f6"].update(rows=raw["layers"]["f6"]["images"], cols=raw["layers"]["f6"]["images"]),
     "f6 has positions for units that have none"),
    (lambda raw: [raw["layers"]["conv2"].pop(f) for f in ("rows", "cols")], "conv2 has no positions for its maps"),
    (lambda raw: raw.update(classes={f: t[:-1] for f, t in raw["classes"].items()}),
     "classes has 9 classes; the net's scores have 10"),
    (lambda raw: raw["layers"].update(f6={f: t[:-2] for f, t in raw["layers"]["f6"].items()}),
     "f6 has 82 units; the net's layer has 84"),
    (lambda raw: raw["classes"]["images"][3].__setitem__(0, 40), "classes names images outside its split of 40"),
])
def test_fully_connected_units_and_classes_are_checked_as_maps_are(mined, change, problem):
    model, size, shapes = mined
    path = artifacts.mined_path(LENET)
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError) as err:
        artifacts.load_mined(LENET, size, shapes)
    assert str(err.value) == f"{path}: {problem}: rerun `dvc repro -f mine@lenet5`"


def test_a_mined_file_from_before_the_classes_were_mined_is_refused_with_the_fix(mined):
    path = artifacts.mined_path(LENET)
    raw = json.loads(path.read_text())
    del raw["classes"]
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"truncated or malformed \(KeyError: 'classes'\): rerun `dvc repro -f mine@lenet5`"):
        artifacts.load_mined(LENET)


def test_train_outputs_are_the_four_files_and_read_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = LENET.build({})
    history = [{"epoch": 1, "lr": 0.1, "train_loss": 2.5, "test_loss": 2.25, "train_accuracy": 0.5,
                "test_accuracy": 0.25, "test_top5_accuracy": 0.75}]
    classes = tuple("0123456789")
    actual, predicted = np.array([3, 3, 1]), np.array([3, 1, 1])
    files = artifacts.train_outputs(LENET, model, {}, {"test_accuracy": 2 / 3}, history, classes, actual, predicted)
    assert sorted(map(str, files)) == sorted(p.as_posix() for p in artifacts.stage_outputs("train", "lenet5"))
    for path, data in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    run = artifacts.read_metrics(artifacts.metrics_paths(LENET), classes, "rerun")
    assert run["metrics"] == {"test_accuracy": 2 / 3} and run["history"] == [{k: float(v) for k, v in history[0].items()}]
    expected = np.zeros((10, 10), np.int64)
    expected[3, 3] = expected[3, 1] = expected[1, 1] = 1
    assert np.array_equal(run["confusion"], expected)
    artifacts.prepared_dir("mnist").mkdir(parents=True)
    write_classes(artifacts.prepared_dir("mnist"), [{"name": str(d)} for d in range(10)])   # what the head scores
    loaded, config = artifacts.load_model(LENET, torch.device("cpu"))
    assert config == LENET.settings({}) and all(torch.equal(a, b) for a, b in
                                                zip(loaded.state_dict().values(), model.state_dict().values()))
