"""Pictures: what each method shows is the projection cropped to the receptive field without
losing anything, in [0, 1]; patches are the exact input windows; PNGs are reproducible."""

import io

import pytest
import torch
from PIL import Image

from cnn_internals.engine.projection import project
from cnn_internals.models.lenet5 import LeNet5
from cnn_internals.viz.methods import method_names, signed_to_unit
from cnn_internals.viz.render import layer_figure, mosaic, unit_pictures


@pytest.fixture(scope="module")
def units():
    torch.manual_seed(0)
    model = LeNet5().double()
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64)
    return model, x, torch.tensor([0, 3, 7, 15]), torch.tensor([0, 4, 9, 2]), torch.tensor([9, 0, 5, 2])


@pytest.mark.parametrize("method", method_names())
def test_pictures_are_unit_range_tiles_of_the_receptive_field(method, units):
    model, x, ch, rows, cols = units
    shown, patches, rf = unit_pictures(model, "conv2", x, ch, rows, cols, method, (1, 32, 32), torch.sigmoid)
    assert rf == (14, 2, 0)
    assert shown.shape[0] == 4 and shown.shape[-2:] == (14, 14)
    assert shown.min() >= 0 and shown.max() <= 1
    for b in range(4):   # conv2 unit (r, c) sees rows 2r..2r+13 and columns 2c..2c+13
        r, c = 2 * rows[b], 2 * cols[b]
        assert torch.allclose(patches[b], torch.sigmoid(x[b, :, r:r + 14, c:c + 14]), rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided_backprop"])
def test_cropping_to_the_receptive_field_loses_nothing(method, units):
    model, x, ch, rows, cols = units
    full = project(model, "conv2", x, ch, rows, cols, method)
    shown, _, _ = unit_pictures(model, "conv2", x, ch, rows, cols, method, (1, 32, 32), lambda v: v)
    for b in range(4):
        r, c = 2 * rows[b], 2 * cols[b]
        inside = full[b, :, r:r + 14, c:c + 14]
        assert full[b].abs().sum() == pytest.approx(inside.abs().sum().item(), rel=1e-12)
        assert torch.allclose(shown[b], signed_to_unit(inside[None])[0])


def test_a_method_is_one_row_of_the_table(units, monkeypatch):
    # A new row and nothing else (the negated gradient, from the engine's gradient pass): render's
    # params accept it, the pictures come from the table, and the existing methods are unchanged.
    from types import SimpleNamespace

    from cnn_internals.viz import methods
    from cnn_internals.viz.render import render_params, unit_pictures_by_method

    model, x, ch, rows, cols = units
    before, _, _ = unit_pictures_by_method(model, "conv2", x, ch, rows, cols, method_names(), (1, 32, 32), torch.sigmoid)
    row = methods.Method("negative_gradient", "negative gradient", True, ("gradient",),
                         lambda done, patches: signed_to_unit(-done["gradient"]))
    monkeypatch.setattr(methods, "METHODS", (*methods.METHODS, row))
    after, _, _ = unit_pictures_by_method(model, "conv2", x, ch, rows, cols, method_names(), (1, 32, 32), torch.sigmoid)
    assert list(after) == [*before, "negative_gradient"]
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert torch.allclose(after["negative_gradient"], 1 - after["gradient"], rtol=0, atol=1e-15)
    net = SimpleNamespace(name="lenet5")
    params = {"render": {"lenet5": {"channels": 2, "method": "negative_gradient"}}}
    assert render_params(params, net).method == "negative_gradient"


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(units):
    # The one composed method, against the engine's two passes by hand (Selvaraju et al. 2017).
    from cnn_internals.engine.projection import crop_patches, receptive_field, unit_grad_cam

    model, x, ch, rows, cols = units
    shown, _, rf = unit_pictures(model, "conv2", x, ch, rows, cols, "guided_grad_cam", (1, 32, 32), torch.sigmoid)
    assert rf == receptive_field(model, "conv2", (1, 32, 32))
    guided = crop_patches(project(model, "conv2", x, ch, rows, cols, "guided_backprop"), rf, rows, cols)
    heat = crop_patches(unit_grad_cam(model, "conv2", x, ch, rows, cols).unsqueeze(1), rf, rows, cols)
    assert torch.equal(shown, signed_to_unit(guided * heat))


def test_signed_to_unit_keeps_zero_at_mid_grey_and_scales_per_tile():
    tiles = torch.tensor([[[[-2.0, 0.0, 1.0]]], [[[0.0, 0.5, 0.25]]]])
    assert signed_to_unit(tiles).flatten().tolist() == [0.0, 0.5, 0.75, 0.5, 1.0, 0.75]


def test_mosaic_places_tiles_row_major_with_white_gaps():
    tiles = torch.arange(4, dtype=torch.float64).view(4, 1, 1, 1).expand(4, 1, 2, 2) / 4
    grid = mosaic(tiles, 2)
    assert grid.shape == (5, 5, 3)
    assert grid[0, 0, 0] == 0.0 and grid[0, 3, 0] == 0.25 and grid[3, 0, 0] == 0.5 and grid[4, 4, 1] == 0.75
    assert (grid[2, :, :] == 1).all() and (grid[:, 2, :] == 1).all()


def test_figure_png_has_no_metadata_and_equal_inputs_give_equal_bytes():
    g = torch.Generator().manual_seed(1)
    pictures, patches = torch.rand(3, 9, 1, 5, 5, generator=g), torch.rand(3, 9, 1, 5, 5, generator=g)
    first = layer_figure(pictures, patches, [0, 1, 2], [1.0, 2.0, 3.0], "t")
    assert first == layer_figure(pictures, patches, [0, 1, 2], [1.0, 2.0, 3.0], "t")
    with Image.open(io.BytesIO(first)) as img:
        assert img.format == "PNG" and not img.info.get("Software")


def test_sees_whole_input_by_hand():
    """Every unit reads the whole input iff the last unit's window starts at or before pixel 0
    and the first unit's ends at or after the last pixel: LeNet-5's C5 (32-px field on 1x1
    maps) yes; a 31-px field, C3's 14-px one on 5x5 maps and GoogLeNet's inception5b (379 px,
    stride 32, padding 167 on 7x7 maps: unit 0 sees rows -167..211 of 224) no."""
    from cnn_internals.viz.render import sees_whole_input

    assert sees_whole_input((32, 1, 0), (1, 1), (32, 32))
    assert not sees_whole_input((31, 1, 0), (1, 1), (32, 32))
    assert not sees_whole_input((14, 2, 0), (5, 5), (32, 32))
    assert not sees_whole_input((379, 32, 167), (7, 7), (224, 224))
    assert sees_whole_input(((32, 40), (1, 1), (0, 0)), (1, 1), (32, 40))
