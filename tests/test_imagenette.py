"""Imagenette: the archive read as a stream (unsafe members refused), JPEGs resized and
centre-cropped as the AlexNet paper does, byte-deterministic arrays, the prepared-split reader."""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import load_params
from cnn_internals.data import imagefolder, imagenette
from cnn_internals.data.datasets import get_dataset

from imagenette_fixture import MISPLACED_KINDS, UNSAFE_KINDS, WNIDS, bad_member, build_archive

SIZE = 32
FILES = ["classes.json", "report.json", "train_images.npy", "train_labels.npy", "val_images.npy", "val_labels.npy"]


def reference(image: Image.Image, size: int) -> np.ndarray:
    """Brute force: scale the short side to ``size`` (long side truncated, as torchvision's
    Resize), bilinear, then cut the middle out with numpy (odd leftovers: floor on top/left)."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = size / min(width, height)
    new = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    assert abs(new[0] - width * scale) < 1 and abs(new[1] - height * scale) < 1
    big = np.asarray(rgb.resize(new, Image.Resampling.BILINEAR))
    top, left = (new[1] - size) // 2, (new[0] - size) // 2
    return big[top:top + size, left:left + size]


def folder_bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("imagenette_raw") / "imagenette2-320.tgz")


@pytest.fixture(scope="module")
def prepared(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("imagenette_prepared") / "out"
    report = imagenette.prepare_imagenette(archive["path"], out, size=SIZE, workers=2)
    return out, report


def test_classes_are_the_ten_imagenette_wnids_in_sorted_order():
    assert [wnid for wnid, _ in imagenette.CLASSES] == list(WNIDS) == sorted(WNIDS)
    assert imagenette.CLASSES[0] == ("n01440764", "tench")
    assert imagenette.CLASSES[5] == ("n03394916", "French horn")
    assert imagenette.CLASSES[9] == ("n03888605", "parachute")
    assert imagenette.SPLITS == ("train", "val")


def test_prepare_counts_labels_classes_and_skips_the_corrupt_jpeg(archive, prepared):
    out, report = prepared
    assert sorted(os.listdir(out)) == FILES
    assert sorted(os.listdir(out.parent)) == ["out"]  # no temp folders left beside it
    corrupt = archive["corrupt"]
    assert corrupt.startswith("imagenette2-320/train/n03000684/")
    assert report["size"] == SIZE
    assert report["train"]["images"] == 20 and report["val"]["images"] == 10
    [skip] = report["train"]["skipped"]
    assert skip["path"] == corrupt and "truncated" in skip["reason"] and "\n" not in skip["reason"]
    assert report["val"]["skipped"] == []
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "report.json").read_text().endswith("}\n")
    classes = json.loads((out / "classes.json").read_text())
    assert classes == [{"wnid": wnid, "name": name} for wnid, name in imagenette.CLASSES]
    for split, per_class in (("train", 2), ("val", 1)):
        labels = np.load(out / f"{split}_labels.npy")
        assert labels.dtype == np.int64
        assert labels.tolist() == [c for c in range(10) for _ in range(per_class)]
        images = np.load(out / f"{split}_images.npy")
        assert images.dtype == np.uint8 and images.shape == (10 * per_class, SIZE, SIZE, 3)


def test_fixture_covers_the_hard_cases(archive):
    """What the next test relies on: grayscale, CMYK, portrait, landscape, odd crop leftovers,
    and a tar order that is not the sorted order."""
    images = [e.image for split in ("train", "val") for e in archive[split]]
    assert {im.mode for im in images} == {"RGB", "L", "CMYK"}
    sizes = {im.size for im in images}
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes) and any(w == h for w, h in sizes)
    long_sides = [SIZE * max(w, h) // min(w, h) for w, h in sizes]
    assert any((n - SIZE) % 2 for n in long_sides)
    members = [name for name in archive["order"] if name.endswith(".JPEG")]
    assert members != sorted(members)


@pytest.mark.parametrize("size", [SIZE, 80])  # 80: every fixture image is enlarged on some side
def test_each_image_is_the_resized_centre_crop_in_path_order(archive, prepared, tmp_path, size):
    if size == SIZE:
        out = prepared[0]
    else:
        out = tmp_path / "out"
        imagenette.prepare_imagenette(archive["path"], out, size=size, workers=1)
    for split in ("train", "val"):
        entries = sorted(archive[split], key=lambda e: e.path)
        images = np.load(out / f"{split}_images.npy")
        labels = np.load(out / f"{split}_labels.npy")
        assert len(images) == len(entries)
        for i, entry in enumerate(entries):
            assert labels[i] == entry.label
            assert np.array_equal(images[i], reference(entry.image, size)), (split, i, entry.path, entry.image.mode)


def test_decode_image_matches_reference_for_each_mode(archive):
    for entry in archive["train"][:6]:
        got = imagenette.decode(entry.data, 24)
        assert got.shape == (24, 24, 3) and got.dtype == np.uint8
        assert np.array_equal(got, reference(entry.image, 24)), entry.image.mode


def test_two_runs_and_one_or_two_workers_give_identical_bytes(archive, prepared, tmp_path):
    expected = folder_bytes(prepared[0])
    imagenette.prepare_imagenette(archive["path"], tmp_path / "again", size=SIZE, workers=2)
    imagenette.prepare_imagenette(archive["path"], tmp_path / "serial", size=SIZE, workers=1)
    assert folder_bytes(tmp_path / "again") == expected
    assert folder_bytes(tmp_path / "serial") == expected


def test_no_corrupt_jpeg_keeps_every_image(tmp_path):
    built = build_archive(tmp_path / "clean.tgz", per_class={"train": 1, "val": 1}, corrupt=False)
    report = imagenette.prepare_imagenette(built["path"], tmp_path / "out", size=16, workers=1)
    assert report["train"] == {"images": 10, "skipped": []} and report["val"] == {"images": 10, "skipped": []}


def one_line_error(archive_path, out, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        imagenette.prepare_imagenette(archive_path, out, size=SIZE, workers=2, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("kind", UNSAFE_KINDS)
def test_unsafe_member_fails_naming_it_before_writing(tmp_path, kind):
    info, data = bad_member(kind)
    built = build_archive(tmp_path / "imagenette2-320.tgz", extra_members=[(info, data)])
    message = one_line_error(built["path"], tmp_path / "out")
    assert repr(info.name) in message and "unsafe" in message
    assert "delete data/raw/imagenette and rerun `dvc repro download@imagenette`" in message
    assert sorted(os.listdir(tmp_path)) == ["imagenette2-320.tgz"]  # no out, no temp folder

    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "train_images.npy").write_bytes(b"from an earlier run")
    one_line_error(built["path"], previous)
    assert os.listdir(previous) == ["train_images.npy"]
    assert (previous / "train_images.npy").read_bytes() == b"from an earlier run"


@pytest.mark.parametrize("kind", MISPLACED_KINDS)
def test_member_outside_the_layout_fails_naming_it(tmp_path, kind):
    info, data = bad_member(kind)
    built = build_archive(tmp_path / "imagenette2-320.tgz", extra_members=[(info, data)])
    message = one_line_error(built["path"], tmp_path / "out")
    assert repr(info.name) in message and "outside the Imagenette layout" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_tgz_fails_one_line(archive, tmp_path, cut):
    data = archive["path"].read_bytes()
    # "trailer": the tar itself is whole (tarfile alone would not notice), the gzip CRC is not.
    cut_data = data[: len(data) // 2] if cut == "half" else data[:-6]
    bad = tmp_path / "imagenette2-320.tgz"
    bad.write_bytes(cut_data)
    message = one_line_error(bad, tmp_path / "out")
    assert message.startswith(f"{bad} is not a readable .tgz (") and "truncated or corrupt" in message
    assert "dvc repro download@imagenette" in message
    assert sorted(os.listdir(tmp_path)) == ["imagenette2-320.tgz"]


def test_missing_archive_says_to_download(tmp_path):
    message = one_line_error(tmp_path / "imagenette2-320.tgz", tmp_path / "out")
    assert "not found" in message and "dvc repro download@imagenette" in message


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the patch reaches workers by fork")
def test_a_dead_decoding_process_is_an_error_not_a_hang(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(imagefolder, "decode_image", lambda *args: os._exit(9))
    message = one_line_error(archive["path"], tmp_path / "out")
    assert message.startswith("an image-decoding process died")
    assert not (tmp_path / "out").exists()


def test_load_split_returns_a_read_only_memmap(prepared):
    out, _ = prepared
    images, labels = imagenette.load_split(out, "val")
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert images.shape == (10, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == list(range(10))
    assert np.array_equal(images, np.load(out / "val_images.npy"))


def test_load_split_errors_say_how_to_rebuild(prepared, tmp_path):
    with pytest.raises(UserError, match="unknown Imagenette split 'test'"):
        imagenette.load_split(prepared[0], "test")
    for folder in (tmp_path / "missing", tmp_path / "broken"):
        if folder.name == "broken":
            folder.mkdir()
            for name in FILES:
                (folder / name).write_bytes((prepared[0] / name).read_bytes())
            (folder / "train_images.npy").write_bytes(b"\x93NUMPY garbage")
        with pytest.raises(UserError) as err:
            imagenette.load_split(folder, "train")
        assert "run `dvc repro prepare@imagenette`" in str(err.value) and "\n" not in str(err.value)


def test_stage_prepare_summary(archive, tmp_path):
    """prepare@imagenette as the stage runs it: params.yaml's data.imagenette, the archive where download put it."""
    dataset = get_dataset(load_params(Path(__file__).parents[1] / "params.yaml"), "imagenette")
    summary = dataset.prepare(archive["path"].parent, tmp_path / "out")
    assert summary == (f"imagenette: 20 train and 10 val images of 10 classes at 256x256 in {tmp_path / 'out'} "
                       "(train/ and val/); 1 image did not decode, listed in report.json; converted to RGB: 1 CMYK, 1 L; "
                       "1 file ignored (not images, or outside train/ and val/)")
    images, _ = imagenette.load_split(tmp_path / "out", "train")
    assert images.shape == (20, 256, 256, 3)
