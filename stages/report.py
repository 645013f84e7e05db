"""Stage `report@<net>`: a static HTML report of the net, reports/<net>/index.html.

    python stages/report.py --net lenet5           # then open reports/lenet5/index.html

One page, its images beside it, that opens from disk with no server and no network: the run
(architecture with output shapes, receptive fields and parameter counts; the metrics, the
loss and accuracy curves and the confusion matrix; the data and the params), then for every
depth the net shows (conv, fully connected) and for the classes, every map (unit, class) with
the top-k units of the mine stage, projected into pixel space by each of the six methods
(switchable on the page) beside the input patches they see, with each unit's image and
activation, and the image optimized to excite the map (visualize@<net>); the first
convolution's filters; and the held-out images the net gets most wrong with their Grad-CAM for
the predicted and the true class. Reads ``report.<net>`` and ``train.<net>`` (shown on the page; its device is where the
projections run); the folder is replaced in one rename.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

from cnn_internals.core.atomic import atomic_dir
from cnn_internals.data.prepared import fingerprint
from cnn_internals.pipeline.artifacts import (
    check_mined,
    dataset_splits,
    layer_shapes,
    load_mined,
    load_model,
    load_split,
    load_visualized,
    load_visualized_objectives,
    metrics_paths,
    net_inputs,
    prepared_dir,
    read_metrics,
    reports_dir,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.config import read_train
from cnn_internals.pipeline.stage import device_for, net_stage_args
from cnn_internals.viz.report import build_report, report_params, train_settings


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = report_params(params, net)
    settings = train_settings(read_train(params, net))
    device = device_for(net, params)
    split_name, tables = load_mined(net)
    train_name, held_out_name = dataset_splits(net)
    model, config = load_model(net, device)
    mined_split, held_out = load_split(net, split_name), load_split(net, held_out_name)
    check_mined(net, tables, len(mined_split), layer_shapes(net, model))
    run = read_metrics(metrics_paths(net), held_out.classes, f"rerun `dvc repro -f train@{net.name}`")
    inputs = net_inputs(net, config, device)
    data = {"splits": [(train_name, len(load_split(net, train_name))), (held_out_name, len(held_out))],
            "held_out": held_out_name, "classes": list(held_out.classes),
            "fingerprint": fingerprint(prepared_dir(net.dataset))}
    optimized = {name: load_visualized(net, name) for name in net.shown}
    files, notes = build_report(net, model, inputs, device, p, run,
                                {"split": split_name, "split_data": mined_split, "tables": tables},
                                held_out, settings, data, optimized, load_visualized_objectives(net))
    for note in notes:
        print(f"note: {note}")
    out = reports_dir(net)
    with atomic_dir(out) as tmp:
        for name, blob in sorted(files.items()):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(blob)
    size = sum(len(b) for b in files.values())
    print(f"{net.title}: wrote {out}/index.html and {len(files) - 1} images ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
