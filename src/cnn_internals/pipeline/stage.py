"""What every stage script shares: its command line (--net, --params), where a net's stages
run, and the checks of the params sections a stage reads (the validate stage runs them all)."""

from pathlib import Path

import torch

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import get, load_params, params_name
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import DATASETS, get_dataset
from cnn_internals.models import NETS, get_net, weights_choice
from cnn_internals.pipeline.cli import ArgumentParser
from cnn_internals.runtime.cpu_pin import pin_threads
from cnn_internals.runtime.device import pick_device
from cnn_internals.runtime.distributed import check_processes, under_torchrun
from cnn_internals.training.recipe import read_recipe


def net_stage_args(description, argv=None):
    """The command line every per-net stage shares (--net, --params): the registry entry and
    the params file."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--params", type=user_path, default=Path("params.yaml"),
                        help="params file (default: params.yaml at the project root)")
    args = parser.parse_args(argv)
    return get_net(args.net), load_params(args.params)


# What a stage reads from the params is checked by one function (train_params, mine_params
# below, viz.render.render_params, viz.report.report_params, each dataset's read_params) that the
# stage calls, and so does the validate stage, which runs them all before `dvc repro` removes any
# stage's outputs.

def train_params(params, net):
    """``train.<net>``: the recipe (common keys) after the net's own keys (``weights`` first,
    every net's) are checked."""
    weights_choice(params, net)
    net.validate(params)
    return read_recipe(params, net.name)


def pipeline_lists(params) -> tuple:
    """``pipeline.nets`` and ``pipeline.datasets``: known names, each net's dataset listed."""
    name = params_name(params)
    lists = []
    for key, known in (("nets", NETS), ("datasets", DATASETS)):
        items = get(params, f"pipeline.{key}", kind=list)
        unknown = [item for item in items if item not in known]
        if unknown or not items or len(set(map(str, items))) != len(items):
            raise UserError(f"{name}: pipeline.{key} must list distinct names out of {', '.join(known)}; "
                            f"got {items!r}")
        lists.append(items)
    nets, datasets = lists
    for net in map(get_net, nets):
        if net.dataset not in datasets:
            raise UserError(f"{name}: {net.name} is trained on {net.dataset}, so {net.dataset} must be listed in "
                            "pipeline.datasets")
    return nets, datasets


def device_for(net, params) -> torch.device:
    """``train.<net>.device``: every stage of a net runs where its training was told to. On the
    CPU, with the pinned number of threads (runtime/cpu_pin.py: the same bytes on any machine), except
    in a rank under torchrun, which keeps its share of the cores."""
    device = pick_device(get(params, f"train.{net.name}.device", kind=str))
    if device.type == "cpu" and not under_torchrun():
        pin_threads()
    return device


def train_device(net, params, recipe) -> torch.device:
    """Where ``train@<net>`` runs: ``device_for``, checked against ``train.<net>.nproc``
    (several processes need CUDA, one GPU each, or the CPU)."""
    device = device_for(net, params)
    check_processes(recipe.nproc, device, params_name(params), f"train.{net.name}")
    return device


def mine_params(params, net) -> dict:
    """``mine.<net>``: k (top images per map) and the split they come from."""
    return {"k": get(params, f"mine.{net.name}.k", kind=int, minimum=1),
            "split": get(params, f"mine.{net.name}.split", kind=str, choices=get_dataset(net.dataset).splits)}
