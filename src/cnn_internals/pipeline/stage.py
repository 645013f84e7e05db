"""What every stage script shares: its command line (--net, --params) and where a net's stages
run (the params sections are typed in pipeline/config.py and the modules it names)."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cnn_internals.core.config import line_of, node
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import Params, load_params, params_name
from cnn_internals.core.project import user_path
from cnn_internals.models import NETS, Net, get_net
from cnn_internals.pipeline.cli import ArgumentParser
from cnn_internals.pipeline.config import train_key
from cnn_internals.runtime.cpu_pin import pin_threads
from cnn_internals.runtime.device import pick_device
from cnn_internals.runtime.distributed import check_processes, under_torchrun
from cnn_internals.training.recipe import Recipe


def net_stage_args(description: str, argv: Sequence[str] | None = None) -> tuple[Net, Params]:
    """The command line every per-net stage shares (--net, --dataset, --params): the registry
    entry on its dataset, and the params file. dvc.yaml passes ``--dataset ${item}``, the dataset
    pipeline.nets maps the net to, so a stage never reads that key (it declares no such param:
    the command itself changes with it); by hand, the mapping's value, else the registry's."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--dataset", help="the net's dataset (default: pipeline.nets.<net> in the params file)")
    parser.add_argument("--params", type=user_path, default=Path("params.yaml"),
                        help="params file (default: params.yaml at the project root)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    return on_its_dataset(get_net(args.net), params, args.dataset), params


def on_its_dataset(net: Net, params: Mapping, given: str | None = None) -> Net:
    """``net`` on ``given``, else on the dataset pipeline.nets maps it to, else the registry's."""
    dataset = given or node(params, f"pipeline.nets.{net.name}", None) or net.dataset
    if not isinstance(dataset, str):
        raise UserError(f"{params_name(params)}: pipeline.nets.{net.name} must name a dataset, got {dataset!r}")
    return net.on(dataset)


def device_for(net: Net, params: Mapping) -> torch.device:
    """``train.<net>.device``: every stage of a net runs where its training was told to. On the
    CPU, with the pinned number of threads (runtime/cpu_pin.py: the same bytes on any machine), except
    in a rank under torchrun, which keeps its share of the cores."""
    key = f"train.{net.name}.device"
    try:
        device = pick_device(train_key(params, net, "device"), f"{params_name(params)}: {key}")
    except UserError as err:         # the device is not on this machine: say where the file names it
        raise UserError(f"{err}{line_of(params, key)}") from None
    if device.type == "cpu" and not under_torchrun():
        pin_threads()
    return device


def train_device(net: Net, params: Mapping, recipe: Recipe) -> torch.device:
    """Where ``train@<net>`` runs: ``device_for``, checked against ``train.<net>.nproc``
    (several processes need CUDA, one GPU each, or the CPU)."""
    device = device_for(net, params)
    check_processes(recipe.nproc, device, params_name(params), f"train.{net.name}")
    return device
