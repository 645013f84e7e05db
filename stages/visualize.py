"""Stage `visualize@<net>`: what each unit wants, by optimization: for every map of each shown
layer (and every unit of a fully connected one) and for every class, an input image that
maximizes it, data/visualized/<net>/<layer>.npy and classes.npy.

    python stages/visualize.py --net lenet5

The objective is the one mining ranks by, on the shown module's output with the net in eval
mode: a map's mean activation over its positions (Lucid's ``channel``), a fully connected
unit's value, a class's score as the net's forward returns it. The recipe is Distill's
"Feature Visualization" (Olah et al. 2017) as Lucid and Lucent run it, every number a key of
``visualize.<net>`` (engine/feature_vis.py says where we depart): Fourier-parameterized images
with colour decorrelated by the dataset's own RGB PCA (the stats stage's), a sigmoid to pixels,
the net's input normalization, random pad, jitter, scale and rotation every step, Adam. The
maps of a layer are optimized ``visualize.<net>.batch`` at a time, one optimizer step for all;
each image's randomness comes from its own generator, seeded from (seed, layer, map), so it
does not depend on its batch-mates. Images are uint8 (maps, C, H, W) at the net's input size
(LeNet-5: 1 x 32 x 32, the padded frame), pixels as the net's ``display`` gives them; classes in
classes.json order.

data/visualized/<net>/objectives.json: per layer, each map's objective on its stored image and
on the best of its mined images (the report shows the first). Both are computed ``batch``
images a pass.

metrics/<net>_visualize.json: per layer, the fraction of maps whose image (as stored, uint8)
beats the best of the map's mined images (mine@<net>) on the same objective, the median
difference of the two, and the median objective of the images.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import hashlib

import torch
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir, json_bytes, write_all
from cnn_internals.core.config import first
from cnn_internals.data.loader import gather
from cnn_internals.engine.feature_vis import Recipe, colour_matrix, objectives_in_chunks, visualize
from cnn_internals.pipeline.artifacts import (
    check_mined,
    layer_shapes,
    load_mined,
    load_model,
    load_split,
    load_stats,
    net_inputs,
    visualize_metrics_path,
    visualized_dir,
    visualized_file,
    visualized_objectives_path,
    visualized_path,
)
from cnn_internals.pipeline.cli import cli
from cnn_internals.pipeline.config import read_visualize
from cnn_internals.pipeline.stage import device_for, net_stage_args


def seed_of(seed: int, layer: str, unit: int) -> int:
    """A generator seed from (seed, layer, map): the same wherever the map sits in a batch, and
    on every machine (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{seed}/{layer}/{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# The keys of visualize.<net> that are the engine's Recipe fields of the same names
RECIPE_KEYS = ("steps", "lr", "decay_power", "init_std", "pad", "jitter", "jitter2", "redirected_relu")


def recipe_of(p) -> Recipe:
    return Recipe(**{key: getattr(p, key) for key in RECIPE_KEYS}, scale=tuple(p.scale), rotate=float(p.rotate))


def best_mined(model, path, inputs, split, top, units, chunk) -> torch.Tensor:
    """(units,) the best objective over each unit's mined images (its top k by the mining rank,
    the spatial maximum for a map; the objective here is the mean over positions), ``chunk``
    images a pass."""
    k = top["images"].shape[1]
    images = top["images"][units].reshape(-1).numpy()
    device = next(model.parameters()).device
    values = objectives_in_chunks(model, path, torch.as_tensor(units).repeat_interleave(k),
                                  lambda rows: inputs.eval(gather(split.images, images[rows.numpy()]).to(device)), chunk)
    return values.reshape(len(units), k).amax(1)


def rounded(values: torch.Tensor) -> list:
    """Six decimals, as the metrics: the file's bytes do not carry the last bits of a float."""
    return [round(float(v), 6) for v in values]


@cli
def main(argv=None):
    net, params = net_stage_args(__doc__, argv)
    p = read_visualize(params, net)
    device = device_for(net, params)
    model, config = load_model(net, device)
    stats = load_stats(net.dataset)
    inputs = net_inputs(net, config, device, stats)
    split_name, tables = load_mined(net)
    split = load_split(net, split_name)
    shapes = layer_shapes(net, model)
    check_mined(net, tables, len(split), shapes)
    recipe = recipe_of(p)
    # bfloat16 autocast on CUDA only (visualize.<net>.amp); the CPU runs float32 whatever it says,
    # so the committed CPU bytes do not depend on it
    autocast = torch.bfloat16 if p.amp and torch.device(device).type == "cuda" else None
    colour = None
    if p.decorrelate and net.input_size[0] > 1:
        colour = colour_matrix(torch.as_tensor(stats["pca_eigvecs"]), torch.as_tensor(stats["pca_eigvals"]))
    names = net.shown
    counts = {name: first(p.maps, shapes[name][0]) for name in names}
    images, metrics, objectives = {}, {}, {}
    with tqdm(total=sum(-(-n // p.batch) for n in counts.values()) * p.steps, desc=f"visualize {net.name}",
              unit="step", disable=None, leave=False) as bar:
        for name in names:
            bar.set_description(f"visualize {net.name} {name}")
            path = net.module_path(name)
            units = list(range(counts[name]))
            pixels = []
            for start in range(0, len(units), p.batch):
                chunk = units[start:start + p.batch]
                generators = [torch.Generator().manual_seed(seed_of(p.seed, name, u)) for u in chunk]
                got, _ = visualize(model, path, chunk, net.input_size, inputs.from_pixels, generators, recipe, colour,
                                   progress=bar.update, autocast=autocast, score=False)
                pixels.append(got)
            stored = torch.cat(pixels).mul(255).round_().clamp_(0, 255).to(torch.uint8)
            images[name] = stored.numpy()
            # the objective of the image as stored (what a user sees), not of the float one
            values = objectives_in_chunks(model, path, torch.as_tensor(units),
                                          lambda rows: inputs.from_pixels(stored[rows].to(device).float() / 255),
                                          p.batch)
            mined = best_mined(model, path, inputs, split, tables[name], units, p.batch)
            objectives[name] = {"objective": rounded(values), "best_mined": rounded(mined)}
            gain = values - mined
            metrics[name] = {"maps": len(units), "beats_best_mined": round(float((gain > 0).float().mean()), 6),
                             "median_gain": round(float(gain.median()), 6),
                             "median_objective": round(float(values.median()), 6)}
    out = visualized_dir(net)
    with atomic_dir(out) as tmp:
        for name, array in images.items():
            (tmp / visualized_path(net, name).name).write_bytes(visualized_file(array))
        (tmp / visualized_objectives_path(net).name).write_bytes(json_bytes({"layers": objectives}))
    write_all({visualize_metrics_path(net): json_bytes({"split": split_name, "steps": p.steps, "layers": metrics})})
    print(f"{net.title}: " + ", ".join(f"{name} {m['beats_best_mined']:.0%} of {m['maps']} beat the mined"
                                       for name, m in metrics.items()))


if __name__ == "__main__":
    main()
