"""Where each stage's artifacts live, and how a later stage loads an earlier one's."""

from pathlib import Path

import torch

from .data import raw_dir, stats_dir
from .data.datasets import load_split
from .errors import ArgumentParser, UserError
from .models import NETS, VALIDATORS, get_net
from .params import load_params
from .stats import load_statistics


def net_stage_args(description, argv=None):
    """The command line every per-net stage shares (--net, --params): returns the registry
    entry and the params, whose net-specific keys are already checked."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    net, params = get_net(args.net), load_params(args.params)
    VALIDATORS[net.name](params)
    return net, params


def weights_path(net):
    return Path("models") / f"{net.name}.pt"


def mined_path(net):
    return Path("data/mined") / f"{net.name}.json"


def load_stats(dataset):
    directory = stats_dir(dataset)
    if not (directory / "stats.json").is_file():
        raise UserError(f"{directory} missing: run `dvc repro stats@{dataset}` first")
    return load_statistics(directory)


def load_model(net, params, device):
    """The trained ``net`` from models/<net>.pt, in eval mode on ``device``."""
    path = weights_path(net)
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro train@{net.name}` first")
    model = net.build(params["train"][net.name])
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as err:
        raise UserError(f"{path} does not hold {net.title} weights ({str(err).splitlines()[0]}): "
                        f"rerun `dvc repro -f train@{net.name}`") from None
    return model.to(device).eval()


def load_inputs(net, params, split, stats=None):
    """(inputs as the model sees them, labels) of ``split``."""
    stats = load_stats(net.dataset) if stats is None else stats
    images, labels = load_split(net.dataset, raw_dir(net.dataset), split)
    return net.inputs(images, stats, params["train"][net.name]), torch.as_tensor(labels)
