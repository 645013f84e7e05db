"""dvc.yaml against the code: every stage depends on exactly the source files it imports."""

import re

import pytest
import yaml

from imports import REPO, stage_sources

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def declared_sources(deps) -> set:
    """The .py files a stage's deps name under src/ and stages/ (folders expanded)."""
    files = set()
    for dep in deps:
        path = REPO / dep
        if not dep.startswith(("src/", "stages/")):
            continue
        if path.is_dir():
            files.update(p.relative_to(REPO).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            assert path.is_file(), f"{dep} does not exist"
            if dep.endswith(".py"):           # data beside the code (imagenet_classes.tsv) is checked below
                files.add(dep)
    return files


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_depends_on_exactly_the_sources_it_imports(name):
    stage = STAGES[name].get("do", STAGES[name])
    script = re.match(r"python (stages/\w+\.py)", stage["cmd"]).group(1)
    imported = stage_sources(REPO / script)
    declared = declared_sources(stage["deps"])
    assert declared == imported, (f"{name}: imported but not declared {sorted(imported - declared)}; "
                                  f"declared but not imported {sorted(declared - imported)}")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_that_reads_the_wnid_table_depends_on_it(name):
    """data/wnids.py reads imagenet_classes.tsv beside it: a stage importing it depends on the file."""
    stage = STAGES[name].get("do", STAGES[name])
    script = re.match(r"python (stages/\w+\.py)", stage["cmd"]).group(1)
    reads = "src/cnn_internals/data/wnids.py" in stage_sources(REPO / script)
    covered = {"src/cnn_internals/data/imagenet_classes.tsv", "src/cnn_internals/data"} & set(stage["deps"])
    assert bool(covered) == reads


def test_the_import_walk_sees_lazy_and_relative_imports():
    """The walk above is only as good as its parser: pipeline.cli imports project lazily, and
    datasets imports the modules mnist and imagefolder by name from their package."""
    download = stage_sources(REPO / "stages/download.py")
    assert {"src/cnn_internals/core/project.py", "src/cnn_internals/data/mnist.py",
            "src/cnn_internals/data/imagefolder.py", "stages/_bootstrap.py"} <= download
    assert not {path for path in download if path.startswith("src/cnn_internals/training/")}


@pytest.mark.parametrize("script", ["scan", "download", "prepare", "stats"])
def test_a_datasets_stages_import_no_model_code(script):
    """prepare@imagenet decodes 1.3 M images (hours, 252 GB): editing a net, the training loop or
    the engine must not make a dataset's stages rerun."""
    sources = stage_sources(REPO / f"stages/{script}.py")
    assert not {path for path in sources if path.startswith(("src/cnn_internals/models/", "src/cnn_internals/training/",
                                                              "src/cnn_internals/engine/", "src/cnn_internals/viz/"))}
    assert "src/cnn_internals/pipeline/artifacts.py" not in sources


def test_prepare_declares_the_size_on_its_own():
    """DVC's run cache leaves every key named `size` out of a stage's key (dvc 3.67), so inside the
    block data.<dataset> a new size could restore an earlier run's arrays: declared alone it counts."""
    params = STAGES["prepare"]["do"]["params"]
    assert "data.${item}" in params and "data.${item}.size" in params


def test_the_weights_stage_imports_no_model_code():
    """weights@<net> downloads hundreds of MB: editing a net, the training loop or the registry
    (any of which would be a dep if the stage imported it) must not fetch the file again."""
    weights = stage_sources(REPO / "stages/weights.py")
    assert not {path for path in weights if path.startswith("src/cnn_internals/models/")}
    assert not {path for path in weights if path.startswith(("src/cnn_internals/training/",
                                                              "src/cnn_internals/engine/"))}
    assert {"src/cnn_internals/pipeline/stage.py", "src/cnn_internals/pipeline/artifacts.py"}.isdisjoint(weights)
    assert STAGES["weights"]["foreach"] == "${pipeline.nets}"
    assert STAGES["weights"]["do"]["outs"] == ["models/pretrained/${key}.pth"]
    # ... and train@<net> waits for it: the file is its dependency, empty for a net from scratch
    assert "models/pretrained/${key}.pth" in STAGES["train"]["do"]["deps"]
