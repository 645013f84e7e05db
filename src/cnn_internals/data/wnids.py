"""ImageNet's 1,000 classes: their wnids in logit order, and their names.

``imagenet_classes.tsv`` (beside this file), one class a line, ``<wnid>\\t<name>``, in the order
of the logits of every net trained on ILSVRC2012 that torchvision publishes (the wnids sorted).
The wnids are timm's ``timm/data/_info/imagenet_synsets.txt`` (timm 1.0.31's wheel); the names
torchvision's ``IMAGENET1K_V1.meta["categories"]`` (torchvision 0.29), which keep ImageNet's two
"crane"s and two "maillot"s apart. tests/test_imagefolder.py holds the file to both.
"""

import functools
from pathlib import Path

TABLE = Path(__file__).with_name("imagenet_classes.tsv")


@functools.cache
def imagenet_names() -> dict:
    """{wnid: name} of the 1,000 classes, in logit order (dicts keep it)."""
    rows = [line.split("\t") for line in TABLE.read_text(encoding="utf-8").splitlines()]
    return {wnid: name for wnid, name in rows}


@functools.cache
def logit_of_name() -> dict:
    """{ImageNet class name: its logit index}: the names are distinct, so a prepared dataset's
    classes.json names (data/imagefolder.py) say which logit scores each class."""
    names = list(imagenet_names().values())
    assert len(set(names)) == len(names)
    return {name: index for index, name in enumerate(names)}


def imagenet_logits(classes: list) -> tuple | None:
    """The logit of each of a prepared dataset's classes (classes.json's entries), in its order,
    when every class is an ImageNet wnid ({"wnid", "name"}); else None."""
    logits = logit_of_name()
    if not classes or not all("wnid" in entry and entry.get("name") in logits for entry in classes):
        return None
    return tuple(logits[entry["name"]] for entry in classes)
