"""The report stage: reports/lenet5/ as `dvc repro` builds it on the tiny MNIST of
test_pipeline.py's `built` fixture, its figures checked against independent computations
(Captum, the engine called unit by unit, hand-made crops, brute-force rankings), and the page
in a real browser: Debian's chromium driven by Playwright."""

import csv
import io
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnn_internals.engine.hooks import forward_to
from cnn_internals.engine.projection import project, receptive_field, unit_grad_cam
from cnn_internals.models import NETS
from cnn_internals.viz.methods import signed_to_unit
from cnn_internals.viz.report import sprite, to_tiles

from repo_copy import run
from test_pipeline import built, refused, server, trained_lenet  # noqa: F401 -- module fixtures: the pipeline built once here

NET = NETS["lenet5"]
REPORT = Path("reports/lenet5")
METHODS = ("gradient", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam", "saliency")
# DESIGN.md's receptive fields of LeNet-5 on 32x32 (size, stride, padding), written out here
# rather than computed by the code under test.
FIELDS = {"conv1": (5, 1, 0), "pool1": (6, 2, 0), "conv2": (14, 2, 0), "pool2": (16, 4, 0), "conv3": (32, 4, 0)}
CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """What the report's HTML shows: units per map, table rows, references to files."""

    def __init__(self, text):
        super().__init__()
        self.units, self.maps, self.rows, self.refs = {}, {}, {}, []
        self.section = self.map = self.table = self.row = None
        self.cell = None
        self.assets = None
        self._script = False
        self.feed(text)
        self.refs += re.findall(r'url\("([^"]+)"\)', text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.refs.append(a[key])
        if tag == "section":
            self.section = a["id"]
        elif tag == "article":
            self.map = a["id"]
            self.units[self.map] = []
            self.maps.setdefault(self.section, []).append(self.map)
        elif tag == "span" and "data-value" in a:
            self.units[self.map].append((int(a["data-image"]), float(a["data-value"]), ""))
            self.cell = "unit"
        elif tag == "table":
            self.table = a.get("class", "")
            self.rows.setdefault(self.table, [])
        elif tag == "tr":
            self.row = {"attrs": a, "cells": []}
            self.rows[self.table].append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.row["cells"].append({"text": "", **a})
            self.cell = "td"
        elif tag == "script" and a.get("id") == "assets":
            self._script = True

    def handle_endtag(self, tag):
        if tag in ("span", "td", "th"):
            self.cell = None
        elif tag == "article":
            self.map = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self._script:
            self.assets, self._script = json.loads(data), False
        elif self.cell == "unit":
            image, value, text = self.units[self.map][-1]
            self.units[self.map][-1] = (image, value, text + data)
        elif self.cell == "td":
            self.row["cells"][-1]["text"] += data


@pytest.fixture(scope="module")
def report(built):
    repo = built["repo"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    model, inputs = trained_lenet(repo)
    test = np.load(repo / "data/prepared/mnist/test_images.npy"), np.load(repo / "data/prepared/mnist/test_labels.npy")
    return {"repo": repo, "dir": repo / REPORT, "page": Page((repo / REPORT / "index.html").read_text()),
            "model": model, "inputs": inputs, "test": test, "params": params,
            "mined": json.loads((repo / "data/mined/lenet5.json").read_text())}


def tile(path, row, col, size):
    """Cell (row, col) of a PNG sprite of ``size``-pixel tiles, as an int array (h, w[, 3])."""
    with Image.open(path) as img:
        pixels = np.asarray(img).astype(int)
    return pixels[row * size:(row + 1) * size, col * size:(col + 1) * size]


def as_uint8(x):
    return np.rint(np.clip(x, 0, 1) * 255).astype(int)


def signed_grey(x):
    """A signed picture as the report draws it: zero at mid grey, scaled by its largest magnitude."""
    return as_uint8(0.5 + 0.5 * x / max(np.abs(x).max(), 1e-12))


def crop(image, layer, row, col):
    """The window unit (row, col) of ``layer`` sees in (C, 32, 32) ``image``, zero outside."""
    size, stride, pad = FIELDS[layer]
    padded = np.pad(image, ((0, 0), (pad, size), (pad, size)))
    top, left = row * stride, col * stride
    return padded[:, top:top + size, left:left + size]


def inferno_over(heat, grey):
    """Grad-CAM as the report draws it: heat scaled to [0, 1] through inferno, over the grey patch."""
    coloured = matplotlib.colormaps["inferno"](heat / max(heat.max(), 1e-12))[..., :3]
    return as_uint8(0.55 * coloured + 0.45 * grey[..., None])


def test_every_map_of_every_layer_shows_its_mined_units_with_image_and_activation(report):
    page, mined = report["page"], report["mined"]
    assert mined["k"] == 9
    for layer in (*NET.layers, "classes"):              # F6's 84 units (under fc_units' 256) and the classes
        table = mined["classes"] if layer == "classes" else mined["layers"][layer]
        assert page.maps[layer] == [f"{layer}-{c}" for c in range(len(table["values"]))]     # every map
        for c, map_id in enumerate(page.maps[layer]):
            shown = page.units[map_id]
            assert [(i, v) for i, v, _ in shown] == list(zip(table["images"][c], table["values"][c]))
            assert [text for _, _, text in shown] == [f"#{i}{v:.3g}" for i, v in zip(table["images"][c],
                                                                                     table["values"][c])]


@pytest.mark.parametrize("layer", [layer for layer in NET.layers if layer in FIELDS])
def test_sprite_tiles_are_the_projections_of_those_units(report, layer):
    """The first unit of the first map and the last unit of the last map, under every method:
    the gradient from Captum, the other methods from the engine called for that unit alone,
    cropped, scaled and coloured here."""
    from captum.attr import NeuronGradient

    model, table = report["model"], report["mined"]["layers"][layer]
    size = FIELDS[layer][0]
    images = report["test"][0]
    for c, u in ((0, 0), (len(table["values"]) - 1, 8)):
        index, row, col = (table[f][c][u] for f in ("images", "rows", "cols"))
        x = report["inputs"].eval(torch.from_numpy(images[index:index + 1]))
        grads = {m: project(model, layer, x, [c], [row], [col], m)[0].numpy()
                 for m in ("deconvnet", "guided_backprop")}
        grads["gradient"] = NeuronGradient(model, getattr(model, layer)).attribute(
            x, neuron_selector=(c, row, col))[0].detach().numpy()
        heat = crop(unit_grad_cam(model, layer, x, [c], [row], [col])[0, None].numpy(), layer, row, col)[0]
        patch = crop(((x[0] + 0.1) / 1.275).clamp(0, 1).numpy(), layer, row, col)
        expected = {m: signed_grey(crop(grads[m], layer, row, col))[0] for m in grads}
        expected["guided_grad_cam"] = signed_grey(crop(grads["guided_backprop"], layer, row, col) * heat)[0]
        expected["grad_cam"] = inferno_over(heat, patch[0])
        expected["patches"] = as_uint8(patch)[0]
        for name, want in expected.items():
            got = tile(report["dir"] / layer / f"{name}.png", c, u, size)
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() <= (3 if name == "grad_cam" else 1), (layer, c, u, name)


@pytest.mark.parametrize("depth", ["f6", "classes"])
def test_f6_and_class_tiles_are_whole_image_projections_of_those_units(report, depth):
    """F6's units and the classes see the whole 32x32 input: the first and the last row's
    tiles, under every method, against Captum (the gradient, Simonyan's saliency from it, and
    Grad-CAM at S4 with the unit or class as target) and the engine called for that one unit
    (deconvnet, guided backprop); the patch is the whole image."""
    from captum.attr import LayerAttribution, LayerGradCam, NeuronGradient, Saliency

    model, mined = report["model"], report["mined"]
    table = mined["classes"] if depth == "classes" else mined["layers"][depth]
    assert set(table) == {"values", "images"}
    page = report["page"]
    assert page.maps[depth] == [f"{depth}-{c}" for c in range(len(table["values"]))]
    path = None if depth == "classes" else depth

    def scores_of(inp):                                    # what the unit or class is read from
        return model(inp) if path is None else forward_to(model, path, inp)[0]

    for c, u in ((0, 0), (len(table["values"]) - 1, 8)):
        index = table["images"][c][u]
        assert page.units[f"{depth}-{c}"][u][:2] == (index, table["values"][c][u])
        x = report["inputs"].eval(torch.from_numpy(report["test"][0][index:index + 1]))
        grads = {m: project(model, path, x, [c], method=m)[0].numpy() for m in ("deconvnet", "guided_backprop")}
        if path is None:
            grads["gradient"] = Saliency(model).attribute(x, target=c, abs=False)[0].detach().numpy()
        else:
            grads["gradient"] = NeuronGradient(model, model.f6).attribute(x, neuron_selector=c)[0].detach().numpy()
        cam = LayerGradCam(scores_of, model.pool2).attribute(x, target=c, relu_attributions=True)
        heat = LayerAttribution.interpolate(cam, (32, 32), "bilinear")[0, 0].detach().numpy()
        grey = ((x[0, 0] + 0.1) / 1.275).clamp(0, 1).numpy()
        magnitude = np.abs(grads["gradient"]).max(0)
        expected = {m: signed_grey(grads[m])[0] for m in grads}
        expected["guided_grad_cam"] = signed_grey(grads["guided_backprop"] * heat)[0]
        expected["grad_cam"] = inferno_over(heat, grey)
        expected["saliency"] = as_uint8(magnitude / magnitude.max())
        expected["patches"] = as_uint8(grey)
        for name, want in expected.items():
            got = tile(report["dir"] / depth / f"{name}.png", c, u, 32)
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() <= (3 if name == "grad_cam" else 1), (depth, c, u, name)


@pytest.mark.parametrize("layer", ["conv2", "f6", "classes"])
def test_each_maps_optimized_image_is_the_visualize_stages_beside_its_tiles(report, layer):
    """visualize.lenet5.maps = 2 in the build: the first two maps (units, classes) show their
    optimized image, the tile of their row in <layer>/optimized.png, the stored uint8 image
    itself (32 px at thumb 32); the others show none."""
    stored = np.load(report["repo"] / f"data/visualized/lenet5/{layer}.npy")
    assert stored.shape[0] == 2
    for row in range(2):
        assert np.array_equal(tile(report["dir"] / layer / "optimized.png", row, 0, 32), stored[row, 0].astype(int))
    html = (report["dir"] / "index.html").read_text()
    section = html.split(f'<section id="{layer}"')[1].split("</section>")[0]
    articles = section.split('<article class="map"')[1:]
    assert [('class="v"' in a) for a in articles[:3]] == [True, True, False]
    # Under each, its objective: the map's mean over positions, the unit's value, the class score,
    # recomputed through a forward hook from the paper's input levels (-0.1 page, 1.175 ink).
    model = report["model"]
    x = torch.from_numpy(stored).float() / 255 * 1.275 - 0.1
    acts = {}
    hook = (None if layer == "classes" else model.get_submodule(NET.module_path(layer)).register_forward_hook(
        lambda m, a, out: acts.setdefault("a", out.detach())))
    with torch.no_grad():
        scores = model(x)
    if hook:
        hook.remove()
    values = scores if layer == "classes" else acts["a"]
    expected = [values[row, row].mean().item() for row in range(2)]
    shown = [float(a.split("optimized<br>")[1].split("<")[0]) for a in articles[:2]]
    assert shown == pytest.approx(expected, rel=5.1e-3, abs=1e-6)      # printed to 3 significant digits


def test_conv1_tiles_and_the_filters_are_the_filters_themselves(report):
    weight = report["model"].conv1.weight.detach().numpy()         # (6, 1, 5, 5)
    for c in range(6):
        want = signed_grey(weight[c])[0]
        assert np.array_equal(tile(report["dir"] / "filters.png", 0, c, 5), want)
        for u in range(9):   # nothing nonlinear lies below conv1: every unit's gradient is its filter
            assert np.abs(tile(report["dir"] / "conv1/gradient.png", c, u, 5) - want).max() <= 1


def test_most_wrong_are_the_lowest_true_class_probabilities_with_their_grad_cam(report):
    from captum.attr import LayerAttribution, LayerGradCam

    model, (images, labels) = report["model"], report["test"]
    x = report["inputs"].eval(torch.from_numpy(images))
    with torch.no_grad():
        probs = model(x).softmax(1).numpy()
    predicted = probs.argmax(1)
    p_true = probs[np.arange(len(labels)), labels]
    wrong = np.flatnonzero(predicted != labels)
    ranked = wrong[np.lexsort((wrong, p_true[wrong]))][:24]      # lowest p(true), then image order
    assert len(ranked) >= 3
    rows = report["page"].rows["wrong"][1:]
    assert [int(r["attrs"]["data-image"]) for r in rows] == ranked.tolist()
    assert [[cell["text"] for cell in r["cells"][1:6]] for r in rows] == [
        [str(i), str(labels[i]), str(predicted[i]), f"{p_true[i]:.3g}", f"{probs[i, predicted[i]]:.3g}"]
        for i in ranked]
    for rank in (0, len(ranked) - 1):
        i = ranked[rank]
        grey = ((x[i, 0] + 0.1) / 1.275).clamp(0, 1).numpy()
        assert np.array_equal(tile(report["dir"] / "wrong.png", rank, 0, 32), as_uint8(np.stack([grey] * 3, -1)))
        for col, target in ((1, predicted[i]), (2, labels[i])):
            cam = LayerGradCam(model, model.pool2).attribute(x[i:i + 1], target=int(target), relu_attributions=True)
            heat = LayerAttribution.interpolate(cam, (32, 32), "bilinear")[0, 0].detach().numpy()
            assert np.abs(tile(report["dir"] / "wrong.png", rank, col, 32) - inferno_over(heat, grey)).max() <= 3


def test_architecture_table_counts_parameters_and_receptive_fields(report):
    model = report["model"]
    modules = dict(model.named_modules())
    rows = report["page"].rows["architecture"][1:]
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in modules.items() if n and not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, 1, 32, 32))
    for h in hooks:
        h.remove()
    body = {r["attrs"]["data-layer"]: r["cells"] for r in rows if "data-layer" in r["attrs"]}
    assert list(body) == list(shapes)                                  # every leaf, in forward order
    for name, cells in body.items():
        assert int(cells[4]["data-params"]) == sum(p.numel() for p in modules[name].parameters())
        assert cells[2]["text"] == "x".join(map(str, shapes[name]))
        if len(shapes[name]) == 3:
            size, stride, pad = receptive_field(model, name, (1, 32, 32))
            assert cells[3]["text"] == f"{size} (stride {stride}, offset {pad})"
    for layer, (size, stride, pad) in FIELDS.items():
        assert body[layer][3]["text"] == f"{size} (stride {stride}, offset {pad})"
    total = rows[-1]["cells"][-1]
    assert int(total["data-params"]) == sum(p.numel() for p in model.parameters()) == 60_900


def test_results_show_the_metrics_and_the_confusion_of_the_models_predictions(report):
    repo, model, (images, labels) = report["repo"], report["model"], report["test"]
    metrics = json.loads((repo / "metrics/lenet5.json").read_text())
    shown = {r["cells"][1]["data-key"]: r["cells"][1]["text"] for r in report["page"].rows["metrics"]}
    assert shown.keys() == metrics.keys()
    assert all(shown[k] == (f"{v:,}" if isinstance(v, int) else f"{v:.4g}") for k, v in metrics.items())
    with torch.no_grad():
        predicted = model(report["inputs"].eval(torch.from_numpy(images))).argmax(1).numpy()
    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    rows = report["page"].rows["confusion"]
    assert [c["text"] for c in rows[0]["cells"][1:]] == [str(d) for d in range(10)]
    assert [[int(c["text"]) for c in r["cells"][1:]] for r in rows[1:]] == counts.tolist()
    recorded = list(csv.DictReader(io.StringIO((repo / "metrics/lenet5_confusion.csv").read_text())))
    assert [int(r["predicted"]) for r in recorded] == predicted.tolist()


def test_the_folder_is_self_contained_and_every_file_is_referenced(report):
    folder, page = report["dir"], report["page"]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    sprites = [f"{layer}/{name}.png" for layer in (*NET.layers, "classes")
               for name in (*METHODS, "patches", "optimized")]
    assert files == sorted(["index.html", "curves.png", "filters.png", "wrong.png", *sprites])
    assert page.assets == sorted(f for f in files if f != "index.html")
    refs = {r for r in page.refs if not r.startswith("#")}
    assert refs == set(page.assets)                   # relative, all there, none left out
    assert not re.search(r"https?:|file:|//", " ".join(page.refs))
    for name in page.assets:
        with Image.open(folder / name) as img:
            img.load()
            assert img.format == "PNG" and not img.info.keys() & {"Software", "Creation Time", "date:create"}


def test_a_second_run_writes_the_same_bytes(built, tmp_path):
    repo = shutil.copytree(built["repo"], tmp_path / "repo", symlinks=True)
    first = {p.relative_to(repo): p.read_bytes() for p in (repo / REPORT).rglob("*") if p.is_file()}
    run([sys.executable, "stages/report.py", "--net", "lenet5"], repo, built["mirror"])
    again = {p.relative_to(repo): p.read_bytes() for p in (repo / REPORT).rglob("*") if p.is_file()}
    assert again.keys() == first.keys() and all(again[k] == first[k] for k in first)


def test_the_notes_name_the_bound_that_cut_a_layer(built, tmp_path):
    """maps: 2 cuts F6 (84 units) to 2 before fc_units (256) could: the page notes maps, and
    does not blame fc_units for it."""
    repo = shutil.copytree(built["repo"], tmp_path / "repo", symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["report"]["lenet5"]["maps"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run([sys.executable, "stages/report.py", "--net", "lenet5"], repo, built["mirror"])
    assert "note: report.lenet5.maps = 2: the first 2 maps (or units) of each layer only" in result.stdout
    assert "fc_units" not in result.stdout
    page = Page((repo / REPORT / "index.html").read_text())
    assert page.maps["f6"] == ["f6-0", "f6-1"] and len(page.maps["classes"]) == 10


def test_fc_units_caps_the_fully_connected_tabs_only_and_says_so(built, tmp_path):
    """report.lenet5.fc_units = 5: F6's tab shows its first 5 units of 84 (their sprites 5 rows),
    the conv tabs and the classes stay whole; the stage prints the cap. Mining is untouched."""
    repo = shutil.copytree(built["repo"], tmp_path / "repo", symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["report"]["lenet5"]["fc_units"] == 256
    params["report"]["lenet5"]["fc_units"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run([sys.executable, "stages/report.py", "--net", "lenet5"], repo, built["mirror"])
    assert "note: report.lenet5.fc_units = 5: the first units of f6 (5 of 84) only (all are mined)" in result.stdout
    page = Page((repo / REPORT / "index.html").read_text())
    assert page.maps["f6"] == [f"f6-{c}" for c in range(5)]
    assert len(page.maps["conv3"]) == 120 and len(page.maps["classes"]) == 10
    for name in (*METHODS, "patches"):
        with Image.open(repo / REPORT / "f6" / f"{name}.png") as img:
            assert img.size == (9 * 32, 5 * 32)
    before = (built["repo"] / REPORT / "f6" / "gradient.png").read_bytes()
    with Image.open(io.BytesIO(before)) as img:                    # the first 5 rows of the full sheet
        full = np.asarray(img)
    with Image.open(repo / REPORT / "f6" / "gradient.png") as img:
        assert np.array_equal(np.asarray(img), full[:5 * 32])


@pytest.mark.parametrize("fmt,cell", [("png", 11), ("jpeg", 16)])
def test_a_sprite_puts_tile_r_c_at_the_top_left_of_cell_r_c(fmt, cell):
    # a flat colour per tile (JPEG keeps those; noise it would not), different in every cell
    tiles = np.broadcast_to(np.random.default_rng(0).integers(0, 256, (3, 4, 1, 1, 3), dtype=np.uint8),
                            (3, 4, 11, 11, 3)).copy()
    with Image.open(io.BytesIO(sprite(tiles, fmt))) as img:
        assert img.format == fmt.upper() and img.size == (4 * cell, 3 * cell) and not img.info.keys() - {"jfif",
               "jfif_version", "jfif_unit", "jfif_density", "dpi"}
        pixels = np.asarray(img).astype(int)
    for r in range(3):
        for c in range(4):
            got = pixels[r * cell:r * cell + 11, c * cell:c * cell + 11]
            assert np.abs(got - tiles[r, c]).mean() < (1e-9 if fmt == "png" else 6)


def test_shrunk_signed_tiles_are_the_shrunk_values_scaled_again():
    """A 96 px projection shown at 48 px: 2x2 means of the signed values, scaled to their own
    largest magnitude (averaging alone would pull a noisy gradient towards grey)."""
    values = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    means = values.reshape(2, 3, 48, 2, 48, 2).mean((3, 5)).numpy()
    for b in range(2):
        want = signed_grey(means[b]).transpose(1, 2, 0)
        assert np.abs(to_tiles(signed_to_unit(values), 48, signed=True)[b] - want).max() <= 1
    faded = to_tiles(signed_to_unit(values), 48)                  # heat maps, patches: averaged only
    assert np.abs(faded.astype(int) - 128).max() < 0.6 * np.abs(to_tiles(signed_to_unit(values), 48, True).astype(int) - 128).max()


# ---------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM}: `apt-get install chromium` "
                    "(.ci/run does, as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, report):
    """A fresh tab on the report with every console error, page error and failed request noted."""
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    tab.problems = problems
    tab.url_of = lambda anchor="": (report["dir"] / "index.html").as_uri() + anchor
    yield tab
    tab.close()


def visible_section(tab):
    return tab.evaluate("Array.from(document.querySelectorAll('main > section')).filter(s => !s.hidden).map(s => s.id)")


def shown_section(tab, expected):
    """The visible section once the page has shown ``expected``: a click or key sets
    location.hash, and the page shows the tab in its hashchange handler, which the browser runs
    after the click or key press returns (CI has looked before it ran, twice). A wrong tab still
    fails: the wait ends after 5 s and the assert that follows names what is shown."""
    try:
        tab.wait_for_function(f"!document.getElementById('{expected}').hidden", timeout=5000)
    except Exception:  # noqa: BLE001 -- playwright's TimeoutError: the assert below says what is shown
        pass
    return visible_section(tab)


def first_tile_image(tab):
    return tab.evaluate("getComputedStyle(document.querySelector('main > section:not([hidden]) i.x')).backgroundImage")


def test_in_chromium_every_tab_and_method_loads_its_images_without_errors(page, report):
    page.goto(page.url_of())
    assert visible_section(page) == ["run"]
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    for layer in (*NET.layers, "classes"):                     # conv maps, F6's units, the classes
        page.click(f"#tabs a[href='#{layer}']")
        assert shown_section(page, layer) == [layer]
        table = report["mined"]["classes"] if layer == "classes" else report["mined"]["layers"][layer]
        assert page.locator(f"#{layer} article.map").count() == len(table["values"])
        for method in METHODS:
            page.check(f"#methods input[value={method}]")
            assert first_tile_image(page).endswith(f'/{layer}/{method}.png")')
    page.click("#tabs a[href='#wrong']")
    assert shown_section(page, "wrong") == ["wrong"]
    page.wait_for_load_state("networkidle")
    sizes = page.evaluate("""() => Promise.all(JSON.parse(document.getElementById('assets').textContent).map(
        src => new Promise(done => { const i = new Image(); i.onload = () => done([src, i.naturalWidth]);
                                     i.onerror = () => done([src, 0]); i.src = src; })))""")
    assert sorted(src for src, _ in sizes) == report["page"].assets and all(width > 0 for _, width in sizes)
    assert page.problems == []


@pytest.mark.parametrize("anchor", ["conv2-0", "f6-0", "classes-3"])
def test_in_chromium_switching_the_method_changes_the_pictures(page, anchor):
    page.goto(page.url_of(f"#{anchor}"))
    units = page.locator(f"#{anchor} ol")
    shots = {}
    for method in ("guided_backprop", "gradient", "grad_cam", "saliency"):
        page.check(f"#methods input[value={method}]")
        page.wait_for_load_state("networkidle")
        shots[method] = units.screenshot()
    assert len(set(shots.values())) == 4
    assert page.problems == []


def test_in_chromium_anchors_and_keys_navigate_maps_layers_and_methods(page):
    page.goto(page.url_of("#conv3-100"))
    assert shown_section(page, "conv3") == ["conv3"]
    assert page.locator("#conv3-100").is_visible()
    box, height = page.locator("#conv3-100").bounding_box(), page.viewport_size["height"]
    assert 0 <= box["y"] < height                               # scrolled to the map
    page.keyboard.press("j")
    assert page.evaluate("location.hash") == "#conv3-101"
    page.keyboard.press("ArrowLeft")
    assert shown_section(page, "pool2") == ["pool2"]
    page.keyboard.press("4")
    assert page.evaluate("document.body.dataset.method") == "grad_cam"
    assert first_tile_image(page).endswith('/pool2/grad_cam.png")')
    page.click("#pool2 nav.index a[href='#pool2-7']")
    assert page.evaluate("location.hash") == "#pool2-7"
    assert page.problems == []


def test_in_chromium_the_screenshot_is_not_blank(page, tmp_path):
    page.goto(page.url_of("#conv2"))
    page.wait_for_load_state("networkidle")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(float)
    assert shot.shape == (900, 1280, 3)
    assert shot.std() > 30 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 100
    assert page.problems == []
