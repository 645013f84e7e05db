"""Where each stage's artifacts live, and how a later stage loads an earlier one's."""

import warnings
from pathlib import Path

import torch

from .data import stats_dir
from .data.datasets import open_split
from .errors import ArgumentParser, UserError, first_line
from .models import NETS, get_net
from .params import load_params
from .stats import load_statistics
from .training import pick_device


def net_stage_args(description, argv=None):
    """The command line every per-net stage shares (--net, --params): returns the registry
    entry and the params, whose net-specific keys are already checked."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    net, params = get_net(args.net), load_params(args.params)
    net.validate(params)
    return net, params


def weights_path(net) -> Path:
    return Path("models") / f"{net.name}.pt"


def mined_path(net) -> Path:
    return Path("data/mined") / f"{net.name}.json"


def images_dir(net) -> Path:
    """render@<net>'s pictures: images/<net>/<layer>.png (one folder per net: DVC cannot
    template a per-net list of file names, see dvc.yaml)."""
    return Path("images") / net.name


def device_for(net, params) -> torch.device:
    """``train.<net>.device``: every stage of a net runs where its training was told to."""
    return pick_device(params["train"][net.name]["device"])


def load_stats(dataset: str) -> dict:
    directory = stats_dir(dataset)
    if not (directory / "stats.json").is_file():
        raise UserError(f"{directory} missing: run `dvc repro stats@{dataset}` first"
                        f" ({dataset} must be listed in pipeline.datasets in params.yaml)")
    return load_statistics(directory, f"rerun `dvc repro -f stats@{dataset}`")


def load_split(net, split: str):
    return open_split(net.dataset, split)


def net_inputs(net, params, device, stats=None):
    """The net's batch transform, built from its dataset's statistics."""
    stats = load_stats(net.dataset) if stats is None else stats
    return net.inputs(stats, params["train"][net.name], device)


def load_model(net, params, device):
    """The trained ``net`` from models/<net>.pt, in eval mode on ``device``."""
    path = weights_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro train@{net.name}` first")
    model = net.build(params["train"][net.name])
    try:
        with warnings.catch_warnings():   # torch warns about garbage before failing on it
            warnings.simplefilter("ignore")
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 -- unpickling errors come in many types
        raise UserError(f"{path} does not hold {net.title} weights ({first_line(err)}): "
                        f"rerun `dvc repro -f train@{net.name}`") from None
    return model.to(device).eval()
