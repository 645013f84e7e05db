"""Stage `validate`: check every params section the pipeline's stages read, before any runs.

    python stages/validate.py                      # what `dvc repro` runs first

DVC removes a stage's outputs before running it, so a typo caught by the stage itself would
cost the model, the metrics or the pictures of the last good run. Every other stage depends on
this one's output, data/params.ok, so `dvc repro` runs it first and stops here, before anything
is removed, on any bad value: one line naming the file and the key (exit 2). It declares the
whole params file, so any edit reruns it (a few seconds, mostly importing torch); its
output's bytes never change, so a valid edit reruns only the stages that declare what changed.

Checked: no unknown section or block (the closest known key named), ``pipeline`` (known nets
and datasets, each net's dataset listed), ``data.<dataset>``
for each listed dataset, ``train``, ``mine``, ``render`` and ``report.<net>`` for each listed
net, that ``train.<net>.device`` exists here, with a GPU for each of ``train.<net>.nproc``
processes when it is CUDA, and ``weights.<net>`` for each listed net whose
``train.<net>.weights`` is imagenet.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys
from pathlib import Path

from cnn_internals.core.atomic import write_text
from cnn_internals.core.params import load_params
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import DATASETS
from cnn_internals.data.pretrained import weights_entry
from cnn_internals.models import get_net
from cnn_internals.pipeline.artifacts import PARAMS_OK
from cnn_internals.pipeline.cli import ArgumentParser, cli
from cnn_internals.pipeline.config import check_layout, read_mine, read_pipeline, read_train
from cnn_internals.pipeline.stage import train_device
from cnn_internals.viz.render import render_params
from cnn_internals.viz.report import report_params

OUT = PARAMS_OK
# The same bytes whatever the params: a valid edit must not make the stages after this rerun.
STAMP = "params checked by stages/validate.py\n"


def validate(params) -> list:
    """Every section the stages of the listed datasets and nets read, checked by its schema (the
    ones those stages read it with); returns the sections checked."""
    check_layout(params)
    pipeline = read_pipeline(params)
    for dataset in pipeline.datasets:
        DATASETS[dataset].read_params(params)
    imagenet = []
    for net in map(get_net, pipeline.nets):
        config = read_train(params, net)
        train_device(net, params, config)
        read_mine(params, net)
        render_params(params, net)
        report_params(params, net)
        if config.weights == "imagenet":
            weights_entry(params, net.name)
            imagenet.append(net.name)
    return ["pipeline"] + [f"data.{d}" for d in pipeline.datasets] + [
        f"{stage}.{net}" for net in pipeline.nets for stage in ("train", "mine", "render", "report")] + [
        f"weights.{net}" for net in imagenet]


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--params", default=Path("params.yaml"), type=user_path,
                        help="params file (default: params.yaml at the project root)")
    parser.add_argument("--out", default=OUT, type=user_path, help=f"stamp file written when valid (default {OUT})")
    args = parser.parse_args(argv)
    checked = validate(load_params(args.params))
    write_text(args.out, STAMP)
    print(f"{args.params}: valid ({', '.join(checked)})")


if __name__ == "__main__":
    sys.exit(main())
