"""Where each stage's artifacts live, and how a later stage loads an earlier one's."""

import json
import warnings
from pathlib import Path

import torch

from cnn_internals.core.atomic import torch_bytes
from cnn_internals.core.errors import UserError, first_line
from cnn_internals.data import stats_dir
from cnn_internals.data.datasets import get_dataset, open_split
from cnn_internals.data.statistics import load_statistics


def weights_path(net) -> Path:
    return Path("models") / f"{net.name}.pt"


def mined_path(net) -> Path:
    return Path("data/mined") / f"{net.name}.json"


def renders_dir(net) -> Path:
    """render@<net>'s pictures: renders/<net>/<layer>.png, DVC-cached; the gallery stage copies
    them to images/ under flat names (see stages/gallery.py for why two steps)."""
    return Path("renders") / net.name


def gallery_name(net, layer: str) -> str:
    """The picture's name in images/, the README's and the issues' name: <net>_<layer>.png."""
    return f"{net.name}_{layer}.png"


def reports_dir(net) -> Path:
    """report@<net>'s HTML report: reports/<net>/index.html and its images beside it."""
    return Path("reports") / net.name


def metrics_paths(net) -> dict:
    """train@<net>'s metrics files: final figures, one row per epoch, one row per held-out image."""
    folder = Path("metrics")
    return {"metrics": folder / f"{net.name}.json", "history": folder / f"{net.name}_history.tsv",
            "confusion": folder / f"{net.name}_confusion.csv"}


def load_stats(dataset: str) -> dict:
    directory = stats_dir(dataset)
    if not (directory / "stats.json").is_file():
        raise UserError(f"{directory} missing: run `dvc repro stats@{dataset}` first"
                        f" ({dataset} must be listed in pipeline.datasets in params.yaml)")
    return load_statistics(directory, f"rerun `dvc repro -f stats@{dataset}`")


def load_split(net, split: str):
    return open_split(net.dataset, split)


def net_inputs(net, config, device, stats=None):
    """The net's batch transform from its ``train.<net>`` keys (or a weights file's config),
    built from its dataset's statistics."""
    stats = load_stats(net.dataset) if stats is None else stats
    return net.inputs(stats, config, device)


def model_file(net, model, config) -> bytes:
    """models/<net>.pt's bytes: {"config": the net's own config it was built with (its config
    class's keys of ``train.<net>``, defaults included), "state_dict": the weights on the CPU}.
    Not the recipe: a recipe edit that leaves the weights as they were (amp on the CPU) must
    leave the file's bytes as they were, or mine and render would rerun for nothing."""
    return torch_bytes({"config": net.settings(config).model_dump(),
                        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})


def load_model(net, device):
    """The trained ``net`` from models/<net>.pt, in eval mode on ``device``, and the config it
    was built with (checked by the net's config class), for ``net_inputs``."""
    path = weights_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro train@{net.name}` first")
    try:
        with warnings.catch_warnings():   # torch warns about garbage before failing on it
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
        config = net.settings(saved["config"])
        model = net.build(config)
        model.load_state_dict(saved["state_dict"])
    except Exception as err:  # noqa: BLE001 -- unpickling errors come in many types
        raise UserError(f"{path} does not hold {net.title} weights ({first_line(err)}): "
                        f"rerun `dvc repro -f train@{net.name}`") from None
    return model.to(device).eval(), config


def load_mined(net):
    """data/mined/<net>.json checked: (split, {layer: values/images/rows/cols tensors}), each
    table (maps, k), best first."""
    path = mined_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro mine@{net.name}` first")
    fix = f"rerun `dvc repro -f mine@{net.name}`"
    try:
        mined = json.loads(path.read_text())
        mined_split = mined["split"]
        layers = {layer: {f: torch.tensor(mined["layers"][layer][f]) for f in ("values", "images", "rows", "cols")}
                  for layer in net.layers}
    except (ValueError, KeyError, TypeError, RuntimeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is truncated or malformed ({type(err).__name__}): {fix}") from None
    if any(t.dim() != 2 or t.shape != top["values"].shape or not len(t) for top in layers.values()
           for t in top.values()):
        raise UserError(f"{path} holds tables of the wrong shape: {fix}")
    if mined_split not in get_dataset(net.dataset).splits:
        raise UserError(f"{path} names an unknown split {mined_split!r}: {fix}")
    return mined_split, layers
