"""Image-folder datasets: a user's folder of class folders, ImageNet's wnid layout, the same
images as a folder, a .tar, a .tgz, a .zip or a URL on 127.0.0.1 giving the same bytes, the
val split by a hash of each path (recomputed here by hand), the wnid table against
torchvision's own, and every bad input in one line with nothing written."""

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import load_params
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.imagefolder import ImageFolderConfig, fit_image, known_classes
from cnn_internals.data.manifest import manifest
from cnn_internals.data.wnids import imagenet_logits, imagenet_names
from cnn_internals.models.imagenet import IMAGENETTE_IN_IMAGENET

from imagenette_fixture import class_image, encode

SIZE = 16
PLAIN = ("cat", "dog", "fox")                                      # a user's own classes


def params_of(name: str, block: dict) -> dict:
    return {"data": {name: block}}


def dataset(block: dict, name: str = "mine"):
    merged = {"kind": "imagefolder", "size": SIZE, **block}
    return get_dataset(params_of(name, {k: v for k, v in merged.items() if v is not None}), name)   # None: left out


def write_images(folder: Path, layout: dict) -> dict:
    """{relative path: (label, decoded image)}; ``layout``: {relative folder: (label, count, start)}.
    Sizes and modes vary (grey, CMYK, palette PNG), as a user's photos do."""
    written = {}
    for rel, (label, count, start) in layout.items():
        (folder / rel).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + count):
            pixels = class_image(label, i, ((40 + 7 * i, 30 + 5 * (i % 3)), (31, 45))[i % 2])
            if i % 4 == 1:
                path, data = folder / rel / f"img{i:03d}.png", _png(Image.fromarray(pixels).convert("P"))
            else:
                path, data = folder / rel / f"img{i:03d}.jpg", encode(pixels, ("RGB", None, "L", "CMYK")[i % 4])
            path.write_bytes(data)
            written[path.relative_to(folder).as_posix()] = label
    return written


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def expected_split(rel: str, fraction: float) -> str:
    """The issue's rule, by hand: val iff int(sha256(path)[:16], 16) / 2**64 < fraction."""
    return "val" if int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2 ** 64 < fraction else "train"


def folder_bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def reference(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return fit_image(image, SIZE)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Three plain-named classes in one folder (split by val_fraction), a stray README beside them."""
    folder = tmp_path_factory.mktemp("plain") / "photos"
    written = write_images(folder, {name: (label, 6, 0) for label, name in enumerate(PLAIN)})
    (folder / "README.txt").write_text("my photos\n")
    (folder / "cat" / ".DS_Store").write_bytes(b"\0")
    return folder, written


def prepare(block: dict, raw: Path, out: Path, name: str = "mine") -> str:
    return dataset(block, name).prepare(raw, out)


def test_one_folder_split_by_the_hash_of_each_path_rows_in_path_order(plain, tmp_path):
    folder, written = plain
    summary = prepare({"source": str(folder), "val_fraction": 0.3}, tmp_path / "raw", tmp_path / "out")
    for split in ("train", "val"):
        rows = sorted(rel for rel in written if expected_split(rel, 0.3) == split)
        images, labels = np.load(tmp_path / "out" / f"{split}_images.npy"), np.load(tmp_path / "out" / f"{split}_labels.npy")
        assert labels.tolist() == [written[rel] for rel in rows]
        assert np.array_equal(images, np.stack([reference(folder / rel) for rel in rows]))
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == [{"name": n} for n in PLAIN]
    assert "3 classes" in summary and "val_fraction 0.3" in summary and "1 file ignored" in summary   # .DS_Store: hidden
    # said once, counted: the grey, CMYK and palette images were converted
    assert "converted to RGB: 3 CMYK, 3 L, 6 P" in summary


def test_a_grey_dataset_stores_every_image_converted_to_grey(plain, tmp_path):
    folder, written = plain
    summary = prepare({"source": str(folder), "val_fraction": 0.3, "channels": 1}, tmp_path / "raw", tmp_path / "out")
    rows = sorted(rel for rel in written if expected_split(rel, 0.3) == "train")
    images = np.load(tmp_path / "out" / "train_images.npy")
    assert images.shape == (len(rows), SIZE, SIZE) and images.dtype == np.uint8

    def grey(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").convert("L") if image.mode == "CMYK" else image.convert("L"))
    expected = [fit_image(Image.fromarray(grey(folder / rel)), SIZE, "L") for rel in rows]
    assert np.abs(images.astype(int) - np.stack(expected).astype(int)).max() <= 1     # CMYK goes through RGB
    assert "converted to grey: 3 CMYK, 6 P, 6 RGB" in summary


def test_adding_images_moves_no_image_between_splits_and_changes_the_manifest(plain, tmp_path):
    folder, written = plain
    copy = tmp_path / "photos"
    for rel in written:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes((folder / rel).read_bytes())
    before = manifest("imagefolder", str(copy))
    assert manifest("imagefolder", str(copy)) == before                       # nothing changed: the same
    (copy / "emu").mkdir()                 # an empty class folder: seen, so prepare runs (and refuses it)
    empty = manifest("imagefolder", str(copy))
    assert empty != before and empty["folder"]["files"] == before["folder"]["files"]
    (copy / "emu").rmdir()
    assert manifest("imagefolder", str(copy)) == before
    prepare({"source": str(copy), "val_fraction": 0.3}, tmp_path / "raw", tmp_path / "before")
    added = write_images(copy, {name: (label, 5, 50) for label, name in enumerate(PLAIN)})
    after = manifest("imagefolder", str(copy))
    assert after["folder"]["files"] == before["folder"]["files"] + 15 and after != before
    prepare({"source": str(copy), "val_fraction": 0.3}, tmp_path / "raw", tmp_path / "after")
    for split in ("train", "val"):
        old = np.load(tmp_path / "before" / f"{split}_images.npy")
        new = np.load(tmp_path / "after" / f"{split}_images.npy")
        rows = sorted(rel for rel in {**written, **added} if expected_split(rel, 0.3) == split)
        kept = [i for i, rel in enumerate(rows) if rel in written]           # the old images, where they are now
        assert len(kept) == len(old) and np.array_equal(new[kept], old)


def _archive(folder: Path, path: Path, kind: str, prefix: str = "photos") -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for file in reversed(files):                                  # stored order must not matter
                archive.write(file, f"{prefix}/{file.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(path, "w:gz" if kind == "tgz" else "w") as archive:
            for file in reversed(files):
                archive.add(file, f"{prefix}/{file.relative_to(folder).as_posix()}")
    return path


@pytest.mark.parametrize("kind", ["tar", "tgz", "zip"])
def test_an_archive_prepares_to_the_same_bytes_as_the_folder(plain, tmp_path, kind):
    folder, _ = plain
    prepare({"source": str(folder), "val_fraction": 0.3}, tmp_path / "none", tmp_path / "folder")
    (tmp_path / "raw").mkdir()
    archive = _archive(folder, tmp_path / "raw" / f"photos.{kind}", kind)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    prepare({"source": f"elsewhere/photos.{kind}", "md5": digest, "val_fraction": 0.3}, tmp_path / "raw", tmp_path / "arch")
    assert folder_bytes(tmp_path / "arch") == folder_bytes(tmp_path / "folder")


def test_an_archive_on_127_0_0_1_downloads_and_prepares_to_the_same_bytes(plain, tmp_path, http_server):
    folder, _ = plain
    prepare({"source": str(folder), "val_fraction": 0.3}, tmp_path / "none", tmp_path / "folder")
    data = _archive(folder, tmp_path / "photos.tgz", "tgz").read_bytes()
    http_server.serve("/d/photos.tgz", data)
    block = {"source": f"{http_server.base_url}/d/photos.tgz", "sha256": hashlib.sha256(data).hexdigest(), "val_fraction": 0.3}
    dataset(block).download(tmp_path / "raw")
    assert (tmp_path / "raw" / "photos.tgz").read_bytes() == data
    prepare(block, tmp_path / "raw", tmp_path / "served")
    assert folder_bytes(tmp_path / "served") == folder_bytes(tmp_path / "folder")


def test_the_classes_validate_lists_from_folders_alone_are_those_prepare_finds(tmp_path):
    """``known_classes`` (validate's, from folder listings) against the classes prepare@ writes
    after reading every path: the images one folder down beside a folder of text only, train/
    and val/ beside an unlabelled test/ and a hidden folder, a given root; and None where prepare
    refuses the layout (split folders that are not train/ and val/), or for an archive."""
    nested = tmp_path / "nested"
    write_images(nested, {f"unpacked/{c}": (label, 3, 0) for label, c in enumerate(PLAIN)})
    (nested / "docs").mkdir()
    (nested / "docs" / "notes.txt").write_text("no images here\n")
    wnids = tmp_path / "imagenet"
    write_images(wnids, {f"{split}/{w}": (label, 3, 0) for split in ("train", "val")
                         for label, w in enumerate(("n01440764", "n02102040", "n03888257"))})
    write_images(wnids, {"test": (0, 2, 0), ".cache/n09999999": (0, 1, 0)})
    rooted = tmp_path / "rooted"
    write_images(rooted, {f"photos/{c}": (label, 3, 0) for label, c in enumerate(PLAIN)})
    (rooted / "other").mkdir()
    (rooted / "other" / "licence.txt").write_text("CC-BY\n")
    for n, (folder, keys) in enumerate(((nested, {"val_fraction": 0.4}), (wnids, {}),
                                        (rooted, {"root": "photos", "val_fraction": 0.4}))):
        config = dataset({"source": str(folder), **keys}).config
        prepare({"source": str(folder), **keys}, tmp_path / "raw", tmp_path / f"out{n}")
        prepared = [entry.get("wnid", entry["name"]) for entry in json.loads((tmp_path / f"out{n}/classes.json").read_text())]
        assert known_classes(config) == prepared, folder
    splits = tmp_path / "splits"
    write_images(splits, {f"{split}/{c}": (0, 2, 0) for split in ("train", "test") for c in "ab"})
    assert known_classes(dataset({"source": str(splits), "val_fraction": 0.2}).config) is None
    assert known_classes(dataset({"source": "photos.tgz", "md5": "0" * 32, "val_fraction": 0.2}).config) is None
    assert known_classes(dataset({"source": str(tmp_path / "nowhere"), "val_fraction": 0.2}).config) is None


def test_imagenet_layout_is_named_by_imagenet_and_scored_at_its_logits(tmp_path):
    """train/ and val/ of wnid folders (JPEGs of several sizes and modes, one corrupt): classes
    named by ImageNet's table, labels by sorted wnid, the corrupt one skipped and listed."""
    folder = tmp_path / "imagenet"
    wnids = ("n01440764", "n02102040", "n03888257")
    written = {}
    for split, count in (("train", 3), ("val", 2)):
        written.update(write_images(folder, {f"{split}/{w}": (label, count, 10 * (split == "val")) for label, w in
                                             enumerate(wnids)}))
    whole = encode(class_image(1, 99, (50, 40)), "RGB")
    (folder / "train" / wnids[1] / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "train" / wnids[2] / "text.jpg").write_bytes(b"not an image at all")
    (folder / "test").mkdir()
    (folder / "test" / "unlabelled.jpg").write_bytes(whole)                 # outside train/ and val/: ignored
    summary = prepare({"source": str(folder)}, tmp_path / "raw", tmp_path / "out")
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert classes == [{"wnid": "n01440764", "name": "tench"}, {"wnid": "n02102040", "name": "English springer"},
                       {"wnid": "n03888257", "name": "parachute"}]
    assert imagenet_logits(classes) == (0, 217, 701)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cut, text = report["train"]["skipped"]
    assert (cut["path"], text["path"]) == (f"train/{wnids[1]}/cut.jpg", f"train/{wnids[2]}/text.jpg")
    assert "\n" not in cut["reason"] + text["reason"]
    # Pillow's message names a BytesIO by its address: left out, so report.json is the same every run
    assert text["reason"] == "UnidentifiedImageError: cannot identify image file <_io.BytesIO object>"
    rows = sorted(rel for rel in written if rel.startswith("val/"))
    assert np.load(tmp_path / "out" / "val_labels.npy").tolist() == [written[rel] for rel in rows]
    assert report["train"]["images"] == 9 and report["val"]["images"] == 6 and "1 file ignored" in summary


# ImageNet logit -> (wnid, torchvision's name), by hand from Keras's imagenet_class_index.json
# (keras.applications' decode_predictions): both ends of the table, classes across it, and the
# two wnids Imagenette's parachute folder mixes up (702, its folder's name; 701, its images').
KNOWN_LOGITS = {0: ("n01440764", "tench"), 1: ("n01443537", "goldfish"), 2: ("n01484850", "great white shark"),
                7: ("n01514668", "cock"), 8: ("n01514859", "hen"), 281: ("n02123045", "tabby"),
                285: ("n02124075", "Egyptian cat"), 340: ("n02391049", "zebra"), 386: ("n02504458", "African elephant"),
                701: ("n03888257", "parachute"), 702: ("n03888605", "parallel bars"), 954: ("n07753592", "banana"),
                980: ("n09472597", "volcano"), 998: ("n13133613", "ear"), 999: ("n15075141", "toilet tissue")}


def test_the_wnid_table_is_torchvisions_order_and_names_and_knows_imagenettes_logits():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = imagenet_names()
    assert list(names) == sorted(names) and len(names) == 1000 and len(set(names.values())) == 1000
    assert list(names.values()) == list(_IMAGENET_CATEGORIES)
    wnids = list(names)
    assert {logit: (wnids[logit], names[wnids[logit]]) for logit in KNOWN_LOGITS} == KNOWN_LOGITS
    assert imagenet_logits([{"wnid": w, "name": n} for w, n in KNOWN_LOGITS.values()]) == tuple(KNOWN_LOGITS)
    # models/imagenet.py's hand-written table of Imagenette's ten, through params.yaml's aliases
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    config = get_dataset(params, "imagenette").config
    entries = [{"wnid": w, "name": names[config.wnid_aliases.get(w, w)]} for w in config.classes]
    assert imagenet_logits(entries) == tuple(IMAGENETTE_IN_IMAGENET[w] for w in config.classes)
    assert imagenet_logits([{"name": "cat"}, {"name": "dog"}]) is None


def one_line(block: dict, raw: Path, out: Path) -> str:
    with pytest.raises(UserError) as err:
        prepare(block, raw, out)
    assert "\n" not in str(err.value) and not out.exists()
    return str(err.value)


def test_bad_folders_fail_in_one_line_and_write_nothing(plain, tmp_path):
    folder, written = plain
    empty = tmp_path / "empty_class"
    write_images(empty, {"cat": (0, 2, 0), "dog": (1, 2, 0)})
    (empty / "owl").mkdir()
    message = one_line({"source": str(empty), "val_fraction": 0.5}, tmp_path, tmp_path / "o1")
    assert "class folder 'owl' holds no images" in message
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"{i}.jpg").write_bytes((folder / sorted(written)[i]).read_bytes())
    assert "holds images but no class folders" in one_line({"source": str(flat), "val_fraction": 0.5}, tmp_path, tmp_path / "o2")
    (flat / "cats").mkdir()
    (flat / "0.jpg").rename(flat / "cats" / "0.jpg")
    assert "member '1.jpg' is outside the mine layout" in one_line({"source": str(flat), "val_fraction": 0.5}, tmp_path,
                                                                   tmp_path / "o2")
    for i in (1, 2):
        (flat / f"{i}.jpg").rename(flat / "cats" / f"{i}.jpg")
    message = one_line({"source": str(flat), "val_fraction": 0.5}, tmp_path, tmp_path / "o2")
    assert "cats holds images but no class folders" in message
    assert "set val_fraction" in one_line({"source": str(folder)}, tmp_path, tmp_path / "o3")
    split = tmp_path / "split"
    write_images(split, {"train/a": (0, 2, 0), "val/a": (0, 1, 0), "train/b": (1, 2, 0), "val/b": (1, 1, 0)})
    message = one_line({"source": str(split), "val_fraction": 0.2}, tmp_path, tmp_path / "o4")
    assert "data.mine.val_fraction is for one folder of class folders; remove it" in message
    assert "is not a folder" in one_line({"source": str(tmp_path / "nowhere")}, tmp_path, tmp_path / "o5")


def test_a_finder_zip_made_by_writestr_with_hidden_members_prepares_as_the_folder(plain, tmp_path):
    """zipfile.writestr stores a bare 0o600 mode (no file type), and macOS's Finder adds
    __MACOSX/._* twins and .DS_Store: a plain zip, not an unsafe one, and none of those images."""
    folder, written = plain
    prepare({"source": str(folder), "val_fraction": 0.3}, tmp_path / "none", tmp_path / "folder")
    path = tmp_path / "raw" / "photos.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        for rel in written:
            archive.writestr(zipfile.ZipInfo(f"photos/{rel}"), (folder / rel).read_bytes())
            archive.writestr(f"__MACOSX/photos/{rel.rsplit('/', 1)[0]}/._{rel.rsplit('/', 1)[1]}", b"\0\5\x16\7")
        archive.writestr("photos/cat/.DS_Store", b"\0")
    for info in zipfile.ZipFile(path).infolist():
        assert info.external_attr >> 16 in (0, 0o600)
    prepare({"source": "photos.zip", "md5": "0" * 32, "val_fraction": 0.3}, tmp_path / "raw", tmp_path / "zip")
    assert folder_bytes(tmp_path / "zip") == folder_bytes(tmp_path / "folder")


def test_split_folders_class_folders_without_training_images_and_shared_aliases_are_refused(plain, tmp_path):
    folder, written = plain
    splits = tmp_path / "splits"
    write_images(splits, {"train/a": (0, 2, 0), "test/a": (0, 1, 0), "train/b": (1, 2, 0), "test/b": (1, 1, 0)})
    message = one_line({"source": str(splits), "val_fraction": 0.2}, tmp_path, tmp_path / "o1")
    assert "holds test/, train/, split folders, not classes" in message and "(data.mine.root)" in message
    pinned = {"source": str(folder), "val_fraction": 0.3, "classes": ["cat", "dog", "fox", "owl"]}
    assert "class 'owl' has no training images" in one_line(pinned, tmp_path, tmp_path / "o2")
    pinned["classes"] = ["cat", "dog"]                                  # fox/ is not one of them
    assert "<one of the classes listed in data.mine.classes>" in one_line(pinned, tmp_path, tmp_path / "o2")
    wnids = tmp_path / "wnids"
    write_images(wnids, {"n03888605": (0, 3, 0), "n03888257": (1, 3, 0)})
    aliased = {"source": str(wnids), "val_fraction": 0.3, "wnid_aliases": {"n03888605": "n03888257"}}
    assert ("two classes are scored as ImageNet's n03888257 (parachute) through data.mine.wnid_aliases"
            in one_line(aliased, tmp_path, tmp_path / "o3"))


@pytest.mark.parametrize("member", ["../evil.jpg", "/abs/evil.jpg", "link"])
def test_an_unsafe_archive_member_is_refused_before_anything_is_written(plain, tmp_path, member):
    folder, written = plain
    path = tmp_path / "raw" / "photos.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        for rel in written:
            archive.write(folder / rel, f"photos/{rel}")
        info = zipfile.ZipInfo(member if member != "link" else "photos/cat/link.jpg")
        if member == "link":
            info.external_attr = (0o120777 << 16)
        archive.writestr(info, b"/etc/passwd")
    block = {"source": "photos.zip", "md5": "0" * 32, "val_fraction": 0.3}
    message = one_line(block, tmp_path / "raw", tmp_path / "out")
    assert "unsafe" in message and "delete data/raw/mine and rerun `dvc repro download@mine`" in message
    assert os.listdir(tmp_path) == ["raw"]


@pytest.mark.parametrize("block, says", [
    ({"source": "https://example.org/photos"}, "must name an archive"),
    ({"source": "photos.tgz"}, "give exactly one of md5 and sha256"),
    ({"source": "photos.tgz", "md5": "0" * 32, "sha256": "0" * 64}, "give exactly one of md5 and sha256"),
    ({"source": "photos", "md5": "0" * 32}, "is a folder"),
    ({"source": "photos", "val_fraction": 1.0}, "val_fraction"),
    ({"source": "photos", "classes": ["a"]}, "at least two distinct"),
    ({"source": "photos", "wnid_aliases": {"a": "b"}}, "not one of the 1,000"),
    ({"source": "photos", "kind": "folder"}, "kind must be one of mnist, imagefolder"),
    ({"source": "photos", "size": None}, "data.mine.size"),
])
def test_bad_params_fail_in_one_line(block, says):
    with pytest.raises(UserError) as err:
        dataset(block)
    assert says in str(err.value) and "\n" not in str(err.value) and "data.mine" in str(err.value)


def test_the_config_knows_an_archive_from_a_folder():
    assert ImageFolderConfig.model_validate({"kind": "imagefolder", "source": "/data/x", "size": 256}).is_folder
    archive = ImageFolderConfig.model_validate({"kind": "imagefolder", "source": "x.tar.gz", "md5": "a" * 32, "size": 256})
    assert not archive.is_folder and archive.download_entry()["url"].startswith("file:///")
