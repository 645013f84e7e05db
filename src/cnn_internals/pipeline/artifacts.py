"""Every artifact of the pipeline: its path, how it is written and how it is read, side by side.

Stages and viz/ name a file only through this module, and ``stage_outputs`` lists what each
stage writes: a test holds dvc.yaml's outs, metrics and plots to it. Paths are relative to the
project root, where every stage runs (pipeline/cli.py).

Three exceptions: scan@<dataset>'s manifest (``manifest_path``), named in data/manifest.py so
that the stage, run on every `dvc repro`, imports no torch; a dataset's folders (``raw_dir``,
``prepared_dir``, ``stats_dir``, ``stats_metrics_path``), named in data/paths.py so that its
stages import no model code (an edit of a net must not prepare ImageNet again); and weights@<net>'s file
(``pretrained_file``/``pretrained_path``), named in data/pretrained.py beside its fetcher and
its loader. All are re-exported here. The weights stage
must not import this module: through the registry it would depend on every net's code, and an
edit of a model would fetch hundreds of MB again (tests/test_dvc_yaml.py holds it to that).

    data/params.ok                     validate    the same bytes whenever the params are valid
    models/pretrained/<net>.pth        weights@    torchvision's file, or the SCRATCH line
    data/manifests/<dataset>.json      scan@       what the source holds now (paths, sizes, mtimes of a folder)
    data/raw/<dataset>/                download@   the files as published
    data/prepared/<dataset>/           prepare@    uint8 arrays, labels, classes.json (data/prepared.py)
    data/stats/<dataset>/              stats@      mean image, channel mean/std, RGB PCA (data/statistics.py)
    metrics/<dataset>_stats.json       stats@      their summary
    models/<net>.pt                    train@      {"config": the net's own config, "state_dict"}
    metrics/<net>.json                 train@      final held-out figures
    metrics/<net>_history.tsv          train@      one row per epoch (HISTORY_COLUMNS)
    metrics/<net>_confusion.csv        train@      one row per held-out image: actual, predicted class names
    checkpoints/<net>/                 train@      resume state while it runs (not an output)
    data/mined/<net>.json              mine@       per shown layer, top-k values/images[/rows/cols] per map or
                                                   unit; per class the same, its top-k by score
    data/visualized/<net>/<layer>.npy  visualize@  per shown layer (and classes.npy), each map's optimized image
    data/visualized/<net>/objectives.json          each map's objective on it and on its best mined image
    metrics/<net>_visualize.json       visualize@  per layer: how often it beats the best mined image
    renders/<net>/<layer>.png          render@     the pictures (and classes.png)
    images/<net>_<layer>.png           gallery     the same pictures under flat names, in git
    reports/<net>/                     report@     index.html and its images
"""

import csv
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cnn_internals.core.atomic import json_bytes, torch_bytes
from cnn_internals.core.errors import UserError, first_line
from cnn_internals.data.datasets import open_split
from cnn_internals.data.manifest import manifest_path  # noqa: F401 -- re-exported
from cnn_internals.data.paths import prepared_dir, raw_dir, stats_dir, stats_metrics_path  # noqa: F401 -- re-exported
from cnn_internals.data.prepared import Split, read_classes, splits_in
from cnn_internals.data.pretrained import pretrained_file, pretrained_path  # noqa: F401 -- re-exported
from cnn_internals.data.statistics import load_statistics
from cnn_internals.engine import CLASSES
from cnn_internals.engine.hooks import eval_mode, forward_to
from cnn_internals.models import NETS, Inputs, Net, NetConfig
from cnn_internals.models.registry import Classes, ConfigLike

PARAMS_OK = Path("data/params.ok")
GALLERY = Path("images")


# ---------------------------------------------------------------- data

def load_stats(dataset: str) -> dict:
    directory = stats_dir(dataset)
    if not (directory / "stats.json").is_file():
        raise UserError(f"{directory} missing: run `dvc repro stats@{dataset}` first"
                        f" ({dataset} must be listed in pipeline.datasets in params.yaml)")
    return load_statistics(directory, f"rerun `dvc repro -f stats@{dataset}`")


def dataset_splits(net: Net) -> tuple:
    """(training split, held-out split) of the net's dataset, as its prepared folder holds them;
    a folder that holds no two is a UserError saying how to rebuild it."""
    splits = splits_in(prepared_dir(net.dataset))
    if len(splits) != 2 or splits[0] != "train":
        raise UserError(f"{prepared_dir(net.dataset)} holds no train and held-out split ({', '.join(splits) or 'none'}): "
                        f"run `dvc repro prepare@{net.dataset}`")
    return splits


def dataset_classes(net: Net) -> Classes:
    """The classes of the net's dataset, from its prepared classes.json: what its head scores."""
    directory = prepared_dir(net.dataset)
    try:
        return Classes.of(read_classes(directory))
    except FileNotFoundError:
        raise UserError(f"{directory / 'classes.json'} missing: run `dvc repro prepare@{net.dataset}`") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{directory / 'classes.json'} is unreadable ({first_line(err)}): run "
                        f"`dvc repro -f prepare@{net.dataset}`") from None


def load_split(net: Net, split: str) -> Split:
    """``split`` of the net's dataset, from its prepared folder (images memory-mapped)."""
    return open_split(net.dataset, split, prepared_dir(net.dataset))


def net_inputs(net: Net, config: ConfigLike, device: torch.device | str, stats: dict | None = None) -> Inputs:
    """The net's batch transform from its config (a ``train.<net>`` section, or a weights file's
    config), built from its dataset's statistics."""
    stats = load_stats(net.dataset) if stats is None else stats
    side = np.shape(stats["mean_image"])[:2]
    if net.stored_size is None and min(side) < net.input_size[1]:   # validate says so first, but its run may be cached
        raise UserError(f"{net.dataset}'s images are {side[0]}x{side[1]}, but {net.title} takes {net.input_size[1]} px crops "
                        f"of them: set data.{net.dataset}.size to {net.input_size[1]} or more")
    return net.inputs(stats, config, device)


# ---------------------------------------------------------------- train

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "test_top5_accuracy")


def weights_path(net: Net) -> Path:
    return Path("models") / f"{net.name}.pt"


def metrics_paths(net: Net) -> dict:
    """train@<net>'s metrics files: final figures, one row per epoch, one row per held-out image."""
    folder = Path("metrics")
    return {"metrics": folder / f"{net.name}.json", "history": folder / f"{net.name}_history.tsv",
            "confusion": folder / f"{net.name}_confusion.csv"}


def checkpoint_dir(net: Net) -> Path:
    """Where train@<net> keeps its resume state (and its progress, history.tsv) while it runs."""
    return Path("checkpoints") / net.name


def model_file(net: Net, model: torch.nn.Module, config: ConfigLike) -> bytes:
    """models/<net>.pt's bytes: {"config": the net's own config it was built with (its config
    class's keys of ``train.<net>``, defaults included), "state_dict": the weights on the CPU}.
    Not the recipe: a recipe edit that leaves the weights as they were (amp on the CPU) must
    leave the file's bytes as they were, or mine and render would rerun for nothing."""
    return torch_bytes({"config": net.settings(config).model_dump(),
                        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})


def load_model(net: Net, device: torch.device | str) -> tuple[torch.nn.Module, NetConfig]:
    """The trained ``net`` from models/<net>.pt, in eval mode on ``device``, and the config it
    was built with (checked by the net's config class), for ``net_inputs``."""
    path = weights_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro train@{net.name}` first")
    classes = dataset_classes(net)
    try:
        with warnings.catch_warnings():   # torch warns about garbage before failing on it
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
        config = net.settings(saved["config"])
        model = net.build(config, classes)
        model.load_state_dict(saved["state_dict"])
    except Exception as err:  # noqa: BLE001 -- unpickling errors come in many types
        raise UserError(f"{path} does not hold {net.title} weights ({first_line(err)}): "
                        f"rerun `dvc repro -f train@{net.name}`") from None
    return model.to(device).eval(), config


def history_tsv(history: list) -> str:
    """train's per-epoch rows (HISTORY_COLUMNS, tab-separated, 6 significant digits)."""
    rows = ["\t".join(HISTORY_COLUMNS)] + [
        "\t".join(str(h[c]) if c == "epoch" else f"{h[c]:.6g}" for c in HISTORY_COLUMNS) for h in history]
    return "\n".join(rows) + "\n"


def confusion_csv(classes: Sequence[str], actual: np.ndarray | torch.Tensor, predicted: np.ndarray | torch.Tensor) -> str:
    """One row per held-out image, class names (DVC's confusion template reads it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(actual.tolist(), predicted.tolist()))
    return buf.getvalue()


def train_outputs(net: Net, model: torch.nn.Module, config: ConfigLike, metrics: dict, history: list, classes: Sequence[str],
                  actual: np.ndarray | torch.Tensor, predicted: np.ndarray | torch.Tensor) -> dict:
    """{path: bytes} of the four files train@<net> writes together (core.atomic.write_all)."""
    paths = metrics_paths(net)
    return {weights_path(net): model_file(net, model, config),
            paths["history"]: history_tsv(history).encode(),
            paths["confusion"]: confusion_csv(classes, actual, predicted).encode(),
            paths["metrics"]: json_bytes(metrics)}


def read_metrics(paths: dict, classes: tuple, fix: str) -> dict:
    """train's metrics files (``metrics_paths``): {"metrics": {...}, "history": [rows],
    "confusion": (classes x classes) counts, rows actual, columns predicted}. A missing or damaged
    file is a UserError naming it and ending in ``fix``."""
    index = {name: i for i, name in enumerate(classes)}

    def metrics(text):
        found = json.loads(text)
        if not isinstance(found, dict) or not found:
            raise ValueError("not a mapping")
        return found

    def history(text):
        rows = [{key: float(value) for key, value in row.items()}
                for row in csv.DictReader(io.StringIO(text), delimiter="\t")]
        if not rows or any(f"{split}_{what}" not in rows[0] for split in ("train", "test")
                           for what in ("loss", "accuracy")):
            raise ValueError("no per-epoch losses and accuracies")
        return rows

    def confusion(text):
        counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for row in csv.DictReader(io.StringIO(text)):
            counts[index[row["actual"]], index[row["predicted"]]] += 1
        return counts

    found = {}
    for key, parse in (("metrics", metrics), ("history", history), ("confusion", confusion)):
        path = paths[key]
        if not path.is_file():
            raise UserError(f"{path} missing: {fix}")
        try:
            found[key] = parse(path.read_text())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is damaged ({type(err).__name__}): {fix}") from None
    return found


# ---------------------------------------------------------------- mine

MINED_FIELDS = ("values", "images", "rows", "cols")
UNIT_FIELDS = MINED_FIELDS[:2]     # a unit without positions (a fully connected layer's, a class)


def mined_path(net: Net) -> Path:
    return Path("data/mined") / f"{net.name}.json"


def mined_file(split: str, k: int, top: dict) -> bytes:
    """data/mined/<net>.json's bytes: {"split", "k", "layers": {layer: {values, images, rows,
    cols}}, "classes": {values, images}}, each a (maps or units or classes, k) table, best first
    (engine.mining.TopK per shown layer and for CLASSES, the net's scores: one row per class, in
    classes.json order); a layer of units without positions (fully connected) has no rows and
    cols."""
    def fields(t):
        return {field: getattr(t, field).tolist() for field in MINED_FIELDS if getattr(t, field) is not None}

    return json_bytes({"split": split, "k": k,
                       "layers": {layer: fields(t) for layer, t in top.items() if layer != CLASSES},
                       **({CLASSES: fields(top[CLASSES])} if CLASSES in top else {})})


def layer_shapes(net: Net, model: torch.nn.Module) -> dict:
    """{shown layer: (maps, height, width) or (units,)} of ``model``'s outputs for one input of
    the net's size, and {CLASSES: (classes,)}, the scores its forward returns."""
    device = next(model.parameters()).device
    probe = torch.zeros(1, *net.input_size, device=device)
    with torch.no_grad(), eval_mode(model):
        scores, captured = forward_to(model, None, probe, capture=tuple(net.layer_paths.values()))
    return {**{layer: tuple(captured[path].shape[1:]) for layer, path in net.layer_paths.items()},
            CLASSES: tuple(scores.shape[1:])}


def load_mined(net: Net, split_size: int | None = None, shapes: dict | None = None) -> tuple:
    """data/mined/<net>.json checked: (split, {layer: values/images[/rows/cols] tensors, and
    CLASSES: values/images}), each table (maps or units or classes, k), best first. With
    ``split_size`` (the named split's length) and ``shapes`` (``layer_shapes``), also that every
    image is one of the split, every position inside its map, every layer has all its maps or
    units (positions exactly where it has maps) and every value is finite: a file that is not is
    refused in one line, before it draws wrong pictures."""
    path = mined_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro mine@{net.name}` first")
    fix = f"rerun `dvc repro -f mine@{net.name}`"
    try:
        mined = json.loads(path.read_text())
        mined_split = mined["split"]
        found = {**{layer: mined["layers"][layer] for layer in net.layers}, CLASSES: mined[CLASSES]}
        tables = {name: {f: torch.tensor(top[f]) for f in MINED_FIELDS if f in top or f in UNIT_FIELDS}
                  for name, top in found.items()}
    except (ValueError, KeyError, TypeError, RuntimeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is truncated or malformed ({type(err).__name__}: {first_line(err)}): {fix}") from None
    if any(t.dim() != 2 or t.shape != top["values"].shape or not len(t) or len(top) == 3
           for top in tables.values() for t in top.values()):
        raise UserError(f"{path} holds tables of the wrong shape: {fix}")
    held = splits_in(prepared_dir(net.dataset))      # where the data is here (the stages reading it check it)
    if held and mined_split not in held:
        raise UserError(f"{path} names an unknown split {mined_split!r}: {fix}")
    if split_size is not None or shapes is not None:
        check_mined(net, tables, split_size, shapes)
    return mined_split, tables


def check_mined(net: Net, tables: dict, split_size: int | None, shapes: dict | None) -> None:
    """``load_mined``'s tables against the split's length and the net's ``layer_shapes``: for a
    stage that learns the split from the file itself, so reads the file once and checks after."""
    for name, top in tables.items():
        problem = _mined_problem(top, split_size, None if shapes is None else shapes[name], name == CLASSES)
        if problem:
            raise UserError(f"{mined_path(net)}: {name} {problem}: rerun `dvc repro -f mine@{net.name}`")


def _mined_problem(top: dict, split_size: int | None, shape: tuple | None, classes: bool) -> str | None:
    """What is wrong with one layer's (or the classes') tables, or None."""
    if any(t.is_floating_point() or t.dtype == torch.bool for f, t in top.items() if f != "values"):
        return "has image indices or positions that are not whole numbers"
    if top["values"].is_floating_point() and not bool(torch.isfinite(top["values"]).all()):
        return "has values that are not finite"
    if top["images"].min() < 0 or (split_size is not None and top["images"].max() >= split_size):
        return "names images outside its split" + (f" of {split_size}" if split_size is not None else "")
    if shape is not None:
        if len(top["values"]) != shape[0]:
            what = "classes" if classes else "maps" if len(shape) == 3 else "units"
            return f"has {len(top['values'])} {what}; the net's {'scores have' if classes else 'layer has'} {shape[0]}"
        if ("rows" in top) != (len(shape) == 3):
            return "has positions for units that have none" if "rows" in top else "has no positions for its maps"
        if "rows" in top:
            height, width = shape[1:]
            if (top["rows"].min() < 0 or top["rows"].max() >= height or top["cols"].min() < 0
                    or top["cols"].max() >= width):
                return f"has positions outside its {height}x{width} maps"
    return None


# ---------------------------------------------------------------- visualize

def visualized_dir(net: Net) -> Path:
    """visualize@<net>'s images: data/visualized/<net>/<layer>.npy and classes.npy, DVC-cached."""
    return Path("data/visualized") / net.name


def visualized_path(net: Net, name: str) -> Path:
    """One shown layer's (or the classes') optimized images: uint8 (maps, C, H, W) at the net's
    input size, pixels as the net's ``display`` gives them."""
    return visualized_dir(net) / f"{name}.npy"


def visualized_objectives_path(net: Net) -> Path:
    """Beside the images: {"layers": {layer or CLASSES: {"objective": [per map], "best_mined":
    [per map]}}}, each map's objective on its stored image and on the best of its mined ones."""
    return visualized_dir(net) / "objectives.json"


def load_visualized_objectives(net: Net) -> dict:
    """{layer or CLASSES: [objective per map]} from visualize@<net>, checked against the images' counts."""
    path = visualized_objectives_path(net)
    fix = f"rerun `dvc repro -f visualize@{net.name}`"
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro visualize@{net.name}` first")
    try:
        layers = json.loads(path.read_text())["layers"]
        values = {name: [float(v) for v in layers[name]["objective"]] for name in net.shown}
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is malformed ({first_line(err)}): {fix}") from None
    return values


def visualize_metrics_path(net: Net) -> Path:
    return Path("metrics") / f"{net.name}_visualize.json"


def visualized_file(images: np.ndarray) -> bytes:
    """A .npy of uint8 (maps, C, H, W), its header fixed by numpy: equal images, equal bytes."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"visualized images are uint8 (maps, C, H, W), got {images.dtype} {images.shape}")
    buf = io.BytesIO()
    np.save(buf, images, allow_pickle=False)
    return buf.getvalue()


def load_visualized(net: Net, name: str) -> np.ndarray:
    """One layer's optimized images, checked against the net's input size."""
    path = visualized_path(net, name)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro visualize@{net.name}` first")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is truncated or malformed ({first_line(err)}): "
                        f"rerun `dvc repro -f visualize@{net.name}`") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != tuple(net.input_size):
        raise UserError(f"{path} holds {images.dtype} {images.shape}, not uint8 (maps, {', '.join(map(str, net.input_size))}): "
                        f"rerun `dvc repro -f visualize@{net.name}`")
    return images


# ---------------------------------------------------------------- pictures and report

def renders_dir(net: Net) -> Path:
    """render@<net>'s pictures: renders/<net>/<layer>.png, DVC-cached; the gallery stage copies
    them to images/ under flat names (see stages/gallery.py for why two steps)."""
    return Path("renders") / net.name


def render_path(net: Net, layer: str) -> Path:
    """The picture of a shown layer, or of the classes (``layer`` CLASSES)."""
    return renders_dir(net) / f"{layer}.png"


OPTIMIZED = "_optimized"      # a picture's suffix for the feature visualizations: conv3_optimized.png


def rendered(net: Net) -> tuple:
    """What render@<net> draws, in order: every shown layer, then the classes, then the same
    with their optimized images (feature visualization) beside their mined ones."""
    shown = net.shown
    return (*shown, *(f"{name}{OPTIMIZED}" for name in shown))


def gallery_name(net: Net, layer: str) -> str:
    """The picture's name in images/, the README's and the issues' name: <net>_<layer>.png."""
    return f"{net.name}_{layer}.png"


def reports_dir(net: Net) -> Path:
    """report@<net>'s HTML report: reports/<net>/index.html and its images beside it."""
    return Path("reports") / net.name


# ---------------------------------------------------------------- what each stage writes

def stage_outputs(stage: str, item: str | None = None) -> list:
    """The paths (as dvc.yaml writes them) of what ``stage`` (``item``: its net or dataset)
    declares as outs, metrics and plots."""
    if stage in ("scan", "download", "prepare", "stats"):
        if not item or item in NETS:
            raise ValueError(f"{stage} runs per dataset, not for {item!r}")
        return {"download": [raw_dir(item)], "prepare": [prepared_dir(item)], "scan": [manifest_path(item)],
                "stats": [stats_dir(item), stats_metrics_path(item)]}[stage]
    if stage in ("validate", "gallery"):
        return [PARAMS_OK] if stage == "validate" else [GALLERY]
    if item not in NETS:
        raise ValueError(f"{stage} runs per net, not for {item!r}")
    net = NETS[item]
    outputs = {"weights": [pretrained_file(item)],
               "train": [weights_path(net), *metrics_paths(net).values()],
               "mine": [mined_path(net)], "render": [renders_dir(net)], "report": [reports_dir(net)],
               "visualize": [visualized_dir(net), visualize_metrics_path(net)]}
    if stage not in outputs:
        raise ValueError(f"unknown stage {stage!r}")
    return outputs[stage]

