"""What the report stage would cost for AlexNet (1,376 maps x 9 units x 5 methods), from timed
units, on a machine without Imagenette.

    python benchmarks/report.py [--device auto|cpu|cuda] [--maps 2] [--repeats 1] [--out FILE]

Workload. A random-weight AlexNet (benchmarks/bench_common.py) on random 224x224 images: at
each of conv1..conv5, ``--maps`` maps x 9 units, each unit its own image and a random valid
position (fixed seeds): what the report pushes through the engine for every map.

Contenders, giving the same tiles:
  ours      report.py's path: render.unit_pictures_by_method with all five methods in one call
            (Grad-CAM's heat and guided backprop's gradients shared: four passes), then the
            tiles shrunk to 48 px (report.to_tiles)
  baseline  render.unit_pictures called once per method (six passes), then the same tiles
Prints seconds per unit for each layer, the ratio, and the estimate for all maps of AlexNet
(96, 256, 384, 384, 256) x 9 units from ours' per-unit time; plus a full forward pass per
image, which the report's most-wrong ranking runs over the held-out split (Imagenette's val:
3,925 images).

Sizes. The tiles of ours encoded as the report encodes them (sprites of 48 px tiles, JPEG
quality 90 and PNG), bytes per tile, extrapolated to 1,376 x 9 units x (5 methods + patches).
On random weights and noise images, whose tiles are noise too and compress worse than photos:
an upper bound, not a measurement of the trained net's report.
"""

import argparse

import numpy as np
import torch

from cnn_internals.viz.methods import get_method, method_names
from cnn_internals.viz.render import unit_pictures, unit_pictures_by_method
from cnn_internals.viz.report import sprite, to_tiles

from bench_common import CONV_LAYERS, INPUT_SHAPE, RESULTS, alexnet, describe, machine, pick_device, timed, write_json

METHODS = method_names()

MAPS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256}
K = 9
THUMB = 48
VAL_IMAGES = 3925


def units(model, layer, maps, device, seed):
    """(images, channels, rows, cols) of maps x K random units of ``layer``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        shape = model_output_shape(model, layer)
    n = maps * K
    images = torch.randn(n, *INPUT_SHAPE, generator=gen).to(device)
    channels = torch.arange(maps).repeat_interleave(K)
    rows = torch.randint(0, shape[-2], (n,), generator=gen)
    cols = torch.randint(0, shape[-1], (n,), generator=gen)
    return images, channels.to(device), rows.to(device), cols.to(device)


def model_output_shape(model, layer):
    from cnn_internals.engine.hooks import forward_to

    param = next(model.parameters())
    out, _ = forward_to(model, layer, torch.zeros(1, *INPUT_SHAPE, device=param.device))
    return tuple(out.shape[1:])


def display(x):
    return x.sigmoid()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--maps", type=int, default=2, help="maps per layer timed (x 9 units)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    model = alexnet(device=device)
    info = machine(device)
    print(describe(info))
    results = {"machine": info, "maps_timed": args.maps, "k": K, "thumb": THUMB, "layers": {}}
    total_ours = total_base = 0.0
    sizes = {"jpeg": 0, "png": 0}
    tiles_encoded = 0
    print(f"{'layer':6} {'ours s/unit':>11} {'baseline s/unit':>15} {'ratio':>6} {'all maps x 9, ours':>19}")
    for i, layer in enumerate(CONV_LAYERS):
        x, ch, rows, cols = units(model, layer, args.maps, device, seed=i)
        n = len(x)

        def ours(layer=layer, x=x, ch=ch, rows=rows, cols=cols):
            pictures, patches, _ = unit_pictures_by_method(model, layer, x, ch, rows, cols, METHODS, INPUT_SHAPE,
                                                           display)
            tiles = {m: to_tiles(p, THUMB, get_method(m).signed) for m, p in pictures.items()}
            return {**tiles, "patches": to_tiles(patches, THUMB, False)}

        def baseline(layer=layer, x=x, ch=ch, rows=rows, cols=cols):
            tiles = {}
            for method in METHODS:
                pictures, patches, _ = unit_pictures(model, layer, x, ch, rows, cols, method, INPUT_SHAPE, display)
                tiles[method] = to_tiles(pictures, THUMB, get_method(method).signed)
            tiles["patches"] = to_tiles(patches, THUMB)
            return tiles

        t_ours, tiles = timed(ours, args.repeats, device)
        t_base, check = timed(baseline, args.repeats, device)
        assert all(np.array_equal(tiles[m], check[m]) for m in tiles), "ours and the baseline differ"
        per_unit, per_unit_base = t_ours / n, t_base / n
        estimate = per_unit * MAPS[layer] * K
        total_ours += estimate
        total_base += per_unit_base * MAPS[layer] * K
        for fmt in sizes:
            sizes[fmt] += sum(len(sprite(t.reshape(args.maps, K, *t.shape[1:]), fmt)) for t in tiles.values())
        tiles_encoded += n * len(tiles)
        results["layers"][layer] = {"units": n, "ours_s": t_ours, "baseline_s": t_base, "ours_s_per_unit": per_unit,
                                    "baseline_s_per_unit": per_unit_base, "all_maps_ours_s": estimate}
        print(f"{layer:6} {per_unit:11.4f} {per_unit_base:15.4f} {t_ours / t_base:6.2f} {estimate:17.0f} s")

    batch = torch.randn(16, *INPUT_SHAPE, generator=torch.Generator().manual_seed(9)).to(device)
    with torch.no_grad():
        t_forward, _ = timed(lambda: model(batch), args.repeats, device)
    forward_val = t_forward / len(batch) * VAL_IMAGES
    all_tiles = sum(MAPS.values()) * K * (len(METHODS) + 1)
    results.update({
        "estimate_projections_s": total_ours, "estimate_projections_baseline_s": total_base,
        "forward_s_per_image": t_forward / len(batch), "estimate_val_forward_s": forward_val,
        "estimate_total_s": total_ours + forward_val,
        "bytes_per_tile": {fmt: size / tiles_encoded for fmt, size in sizes.items()},
        "estimate_sprites_bytes": {fmt: size / tiles_encoded * all_tiles for fmt, size in sizes.items()},
        "tiles_all_maps": all_tiles, "raw_bytes_all_maps": all_tiles * THUMB * THUMB * 3,
    })
    print(f"projections for all {sum(MAPS.values())} maps x {K} units: ours {total_ours / 60:.1f} min, "
          f"baseline {total_base / 60:.1f} min (ratio {total_ours / total_base:.2f}); forward of the "
          f"{VAL_IMAGES} val images {forward_val / 60:.1f} min; total {(total_ours + forward_val) / 60:.1f} min")
    print(f"sprites of {all_tiles:,} tiles at {THUMB} px: raw {all_tiles * THUMB * THUMB * 3 / 2**20:.0f} MiB; "
          + ", ".join(f"{fmt} {size / tiles_encoded:.0f} B/tile -> {size / tiles_encoded * all_tiles / 2**20:.0f} MiB"
                      for fmt, size in sizes.items()) + " (noise tiles: an upper bound)")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write_json(args.out or RESULTS / f"report{suffix}.json", results)


if __name__ == "__main__":
    main()
