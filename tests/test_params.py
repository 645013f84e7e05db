"""params.yaml reading: typed sections, and every problem one line that names the file, the key,
what is allowed, the value and the line."""

import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cnn_internals.core.config import read_key, read_section
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import key_lines, load_params
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.prepared import write_classes
from cnn_internals.models import NETS
from cnn_internals.pipeline import artifacts
from cnn_internals.pipeline.artifacts import load_model, model_file
from cnn_internals.pipeline.config import check_layout, read_pipeline, read_train, train_key
from cnn_internals.pipeline.stage import device_for
from cnn_internals.training.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
LENET = NETS["lenet5"]


def committed():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def written(tmp_path, params) -> "dict":
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_naming_the_key(value):
    params = committed()
    params["train"]["lenet5"]["j"] = value
    with pytest.raises(UserError, match=r"train.lenet5.j must be a finite number"):
        read_train(params, LENET)


def test_yaml_nan_from_a_file_is_refused_with_its_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lenet5:\n    j: .nan\n")
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(UserError) as err:
        read_section(params, "train.lenet5", LENET.config)
    assert str(err.value) == f"{tmp_path / 'params.yaml'}: train.lenet5.j must be a finite number, got nan (line 3)"


def test_key_lines_are_the_lines_yaml_gives():
    text = "a:\n  b: 1\n  # note\n  c:\n    - {url: x}\n    - url: y\n      md5: z\n"
    assert key_lines(text) == {"a": 1, "a.b": 2, "a.c": 4, "a.c[0]": 5, "a.c[0].url": 5, "a.c[1]": 6,
                               "a.c[1].url": 6, "a.c[1].md5": 7}


def test_the_committed_file_reads_as_every_schema_and_each_line_points_at_its_key(tmp_path):
    params = load_params(REPO / "params.yaml")
    text = (REPO / "params.yaml").read_text().splitlines()
    for name, net in NETS.items():
        config = read_train(params, net)
        assert isinstance(config, Recipe) and isinstance(config, net.config)
        assert config.model_dump(exclude_unset=True) == params["train"][name]        # every key kept as written
        for key in params["train"][name]:
            assert text[params.lines[f"train.{name}.{key}"] - 1].strip().startswith(f"{key}:")


@pytest.mark.parametrize("name", sorted(NETS))
def test_a_nets_config_class_defaults_are_the_committed_values(name):
    """A net's key is written twice, in params.yaml and in its config class: the defaults the
    class gives a key left out are the ones the file commits."""
    net = NETS[name]
    section = committed()["train"][name]
    for key, field in net.config.model_fields.items():
        if not field.is_required():
            assert field.default == section.get(key, field.default), f"train.{name}.{key}"


@pytest.mark.parametrize("edit, expected", [
    ({"lrr": 0.1}, "unknown key 'train.lenet5.lrr'; did you mean 'train.lenet5.lr'?"),
    ({"lr": "0.1"}, "train.lenet5.lr must be a number, got '0.1'"),
    ({"epochs": True}, "train.lenet5.epochs must be int, got True"),
    ({"epochs": 2.5}, "train.lenet5.epochs must be int, got 2.5"),
    ({"c3_table": "yes"}, "train.lenet5.c3_table must be bool (true or false), got 'yes'"),
    ({"prototypes": "random"}, "train.lenet5.prototypes must be one of fixed, learned; got 'random'"),
    ({"lr": 0}, "train.lenet5.lr must be > 0, got 0"),
    ({"nproc": 3}, "train.lenet5.batch_size (64) must be divisible by train.lenet5.nproc (3)"),
    ({"device": "meta"}, "train.lenet5.device must be one of auto, cpu, cuda, cuda:N, mps; got 'meta'"),
    ({"device": "cpu:3"}, "train.lenet5.device must be one of auto, cpu, cuda, cuda:N, mps; got 'cpu:3'"),
    ({"weights": "imagenet"}, "train.lenet5.weights = imagenet, but LeNet-5 is an MNIST net"),
])
def test_a_bad_train_key_is_one_line_with_the_file_key_value_and_line(tmp_path, edit, expected):
    assert_one_line(tmp_path, "train", read_train, edit, expected,
                    next(iter(edit)) if "divisible" not in expected else "lenet5")


def assert_one_line(tmp_path, section, read, edit, expected, key):
    """``<section>.lenet5`` of the committed params with ``edit``, read by ``read``: one line,
    the file's name and ``expected``, ending with the line number of ``key:`` in the file."""
    params = committed()
    params[section]["lenet5"].update(edit)
    loaded = written(tmp_path, params)
    with pytest.raises(UserError) as err:
        read(loaded, LENET)
    text = str(err.value)
    assert text.startswith(f"{loaded.name}: {expected}") and "\n" not in text, text
    line = int(re.search(r"\(line (\d+)\)$", text).group(1))
    assert (tmp_path / "params.yaml").read_text().splitlines()[line - 1].strip().startswith(f"{key}:")


def test_a_misspelled_required_key_is_reported_as_the_typo_with_its_line(tmp_path):
    """epohcs for epochs is both an unknown key and a missing one: the unknown one names the
    typo, the key meant and the typo's own line."""
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("    epochs: 30\n", "    epohcs: 30\n", 1))
    params = load_params(path)
    with pytest.raises(UserError) as err:
        read_train(params, LENET)
    line = params.lines["train.lenet5.epohcs"]
    assert str(err.value) == (f"{path}: unknown key 'train.lenet5.epohcs'; did you mean 'train.lenet5.epochs'? "
                              f"(line {line})")
    assert text.splitlines()[line - 1].strip() == "epochs: 30"


def test_validate_checks_the_blocks_of_unlisted_nets_too(tmp_path, monkeypatch):
    """pipeline.nets lists lenet5 only: a typo in alexnet's block is still refused, so listing it
    later does not meet it; an unlisted net's device is not required to be on this machine."""
    import runpy

    monkeypatch.syspath_prepend(str(REPO / "stages"))           # where the stage finds _bootstrap
    validate = runpy.run_path(str(REPO / "stages/validate.py"))["validate"]
    params = committed()
    assert params["pipeline"]["nets"] == {"lenet5": "mnist"}
    assert "train.alexnet" in validate(params) and "weights.vgg16" in validate(params)
    params["train"]["alexnet"]["lr"] = 0
    with pytest.raises(UserError, match="train.alexnet.lr must be > 0, got 0"):
        validate(params)
    params = committed()
    params["render"]["zfnet"]["method"] = "lrp"
    with pytest.raises(UserError, match="render.zfnet.method must be one of"):
        validate(params)
    params = committed()
    params["train"]["alexnet"]["device"] = "cuda:3"          # not here, but alexnet is not listed
    assert "train.alexnet" in validate(params)


@pytest.mark.parametrize("params, expected", [
    ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
    ({"train": {"lenet": {}}}, "unknown key 'train.lenet'; did you mean 'train.lenet5'?"),
])
def test_an_unknown_section_or_block_names_the_closest_known_one(params, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        check_layout(params)


def test_a_dataset_says_its_kind_and_the_pipeline_lists_only_datasets_under_data():
    params = committed()
    params["data"]["cifar"] = {"source": "/data/cifar"}
    with pytest.raises(UserError, match=re.escape("data.cifar.kind must be one of mnist, imagefolder, got None")):
        get_dataset(params, "cifar")
    params["pipeline"]["datasets"] = ["mnist", "cifar10"]
    with pytest.raises(UserError, match=re.escape("pipeline.datasets must list distinct names out of mnist, imagenette, "
                                                  "cifar (the datasets under data); got ['mnist', 'cifar10']")):
        read_pipeline(params)
    params["pipeline"]["nets"], params["pipeline"]["datasets"] = {"alexnet": "imagenette"}, ["mnist"]
    with pytest.raises(UserError, match=re.escape("alexnet is trained on imagenette, so imagenette must be listed")):
        read_pipeline(params)


def test_devices_that_are_not_here_are_refused_in_one_line(monkeypatch):
    params = committed()
    params["train"]["lenet5"]["device"] = "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"train.lenet5.device is 'mps', but Apple's Metal \(MPS\) is not available"):
        device_for(LENET, params)
    loaded = load_params(REPO / "params.yaml")
    loaded["train"]["lenet5"]["device"] = "mps"
    with pytest.raises(UserError, match=rf"not available here: use auto or cpu \(line {loaded.lines['train.lenet5.device']}\)$"):
        device_for(LENET, loaded)
    params["train"]["lenet5"]["device"] = "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"train.lenet5.device is 'cuda:1', but 1 CUDA GPUs are visible"):
        device_for(LENET, params)


def test_several_processes_run_on_cuda_or_the_cpu_only():
    from cnn_internals.runtime.distributed import check_processes

    with pytest.raises(UserError, match=r"params.yaml: train.lenet5.nproc is 2, which runs on CUDA GPUs \(NCCL\) or "
                                        r"the CPU \(gloo\), not on mps: set train.lenet5.device: cpu, or nproc: 1"):
        check_processes(2, torch.device("mps"), "params.yaml", "train.lenet5")
    check_processes(2, torch.device("cpu"), "params.yaml", "train.lenet5")


def test_one_key_is_read_without_the_others_and_with_its_own_rules():
    """A stage that declares one key (mine: train.<net>.device) reads it alone: the rest of
    the section may be anything, the key itself is checked as the whole section would check it."""
    params = {"train": {"lenet5": {"device": "cpu", "lr": "not read"}}}
    assert train_key(params, LENET, "device") == "cpu"
    params["train"]["lenet5"]["device"] = "meta"
    with pytest.raises(UserError, match="train.lenet5.device must be one of"):
        train_key(params, LENET, "device")
    assert train_key({"train": {"lenet5": {}}}, LENET, "weights") == "scratch"     # absent: its default
    with pytest.raises(UserError, match="missing key 'train.vgg16.weights'"):
        train_key({"train": {"vgg16": {}}}, NETS["vgg16"], "weights")
    with pytest.raises(UserError, match="must be >= 1, got 0"):
        read_key({"s": {"nproc": 0}}, "s", Recipe, "nproc")


def test_the_model_file_stores_the_config_the_net_was_built_with(tmp_path, monkeypatch):
    params = committed()
    params["train"]["lenet5"].update(c3_table=False, prototypes="learned")
    config = read_train(params, LENET)
    torch.manual_seed(0)
    model = LENET.build(config)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/lenet5.pt").write_bytes(model_file(LENET, model, config))
    artifacts.prepared_dir("mnist").mkdir(parents=True)
    write_classes(artifacts.prepared_dir("mnist"), [{"name": str(d)} for d in range(10)])   # what the head scores
    saved = torch.load(tmp_path / "models/lenet5.pt", weights_only=True)
    assert saved["config"] == {key: getattr(config, key) for key in LENET.config.model_fields}
    assert set(saved["config"]) == {"weights", "c3_table", "prototypes", "normalize", "j"}     # not the recipe
    loaded, settings = load_model(LENET, torch.device("cpu"))
    assert (settings.c3_table, settings.prototypes) == (False, "learned")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_epochs_0_from_scratch_is_refused_unless_untrained_says_so():
    params = committed()
    params["train"]["lenet5"]["epochs"] = 0
    with pytest.raises(UserError, match=r"train.lenet5.epochs is 0 with weights: scratch: the model, pictures and "
                                        r"report would be an untrained net's. .*train.lenet5.untrained: true"):
        read_train(params, LENET)
    params["train"]["lenet5"]["untrained"] = True
    assert read_train(params, LENET).epochs == 0
    vgg = committed()["train"]["vgg16"]                         # epochs 0 on ImageNet weights: evaluated as published
    assert vgg["epochs"] == 0 and read_train({"train": {"vgg16": vgg}}, NETS["vgg16"]).weights == "imagenet"


def test_params_are_read_by_yaml_1_2_as_dvc_reads_them(tmp_path):
    """DVC reads params.yaml with ruamel.yaml (YAML 1.2): 1e-3 is a number, yes is text. The
    stages read it the same way, so what DVC tracks is what they train with."""
    params = committed()
    path = tmp_path / "params.yaml"
    text = yaml.safe_dump(params, sort_keys=False).replace("lr: 0.001", "lr: 1e-3")
    assert "lr: 1e-3" in text and yaml.safe_load(text)["train"]["lenet5"]["lr"] == "1e-3"    # PyYAML: YAML 1.1
    path.write_text(text)
    assert read_train(load_params(path), LENET).lr == 0.001
    path.write_text(text.replace("c3_table: true", "c3_table: yes"))
    with pytest.raises(UserError, match=r"train.lenet5.c3_table must be bool \(true or false\), got 'yes'"):
        read_train(load_params(path), LENET)
    path.write_text("train:\n  lenet5:\n    lr: 0.1\n    lr: 0.2\n")
    with pytest.raises(UserError, match=r"is not valid YAML at line 4, column 5: found duplicate key \"lr\""):
        load_params(path)


def test_a_yaml_error_keeps_its_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lenet5:\n    lr: [0.1\n    epochs: 3\n")
    with pytest.raises(UserError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path} is not valid YAML at line 4, column 11")


def test_a_folder_passed_as_params_is_called_a_folder(tmp_path):
    with pytest.raises(UserError, match=r"is a folder: pass the params file itself"):
        load_params(tmp_path)


def test_a_binary_params_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_params(path)


@pytest.mark.parametrize("edit, expected", [
    ({"maps": 0}, "visualize.lenet5.maps must be all or an int >= 1, got 0"),
    ({"steps": 0}, "visualize.lenet5.steps must be >= 1, got 0"),
    ({"scale": [1.1, 0.9]}, "visualize.lenet5.scale must be [low, high] with low <= high, got [1.1, 0.9]"),
    ({"rotate": 200}, "visualize.lenet5.rotate must be <= 180, got 200"),
    ({"amp": "yes"}, "visualize.lenet5.amp must be bool (true or false), got 'yes'"),
    ({"stepz": 8}, "unknown key 'visualize.lenet5.stepz'; did you mean 'visualize.lenet5.steps'?"),
])
def test_a_bad_visualize_key_is_one_line_with_its_line(tmp_path, edit, expected):
    from cnn_internals.pipeline.config import read_visualize

    assert_one_line(tmp_path, "visualize", read_visualize, edit, expected, next(iter(edit)))


def test_visualize_defaults_are_the_committed_lenet5_block_and_the_recipe_of_lucid():
    """The schema's defaults are the committed block's and the engine's Recipe's, key for key (the
    schema does not import the engine: see its comment), and the Recipe's are Lucid's."""
    from cnn_internals.engine.feature_vis import Recipe
    from cnn_internals.pipeline.config import VisualizeConfig, read_visualize

    sys.path.insert(0, str(REPO / "stages"))
    try:
        from visualize import recipe_of
    finally:
        sys.path.remove(str(REPO / "stages"))
    committed_block = read_visualize(committed(), LENET)
    assert committed_block == VisualizeConfig()
    assert recipe_of(VisualizeConfig()) == Recipe()
    lucid = Recipe()
    assert (lucid.steps, lucid.lr, lucid.pad, lucid.jitter, lucid.scale, lucid.rotate, lucid.jitter2) == (
        512, 0.05, 12.0, 8.0, (0.9, 1.1), 10.0, 4.0)
    assert lucid.redirected_relu and not committed_block.amp
