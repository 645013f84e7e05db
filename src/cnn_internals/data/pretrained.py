"""ImageNet weights as torchvision publishes them: fetched by `weights@<net>`, checked on every load.

``weights.<net>`` in params.yaml gives the file's ``url`` and full ``sha256``. The stage
downloads it with the project's own code (``$CNN_INTERNALS_MIRROR`` first, retries, resumption,
atomic) to models/pretrained/<net>.pth, a DVC output. torchvision's own loader checks only the
first 8 hex digits of the hash that its file names carry, once, on download, and knows no
mirror; here the full sha256 is checked again each time the file is loaded, so a file changed or
damaged on disk after the download is refused, not trained from.

That costs one streamed read of the file per load, hashed by OpenSSL through hashlib (1 MiB
blocks, the CPU's SHA instructions) in this process: what it adds to a load against torch.load's own
time, and why neither a thread beside torch.load nor coreutils' ``sha256sum`` is used, is in
docs/benchmarks.md, 'The sha256 on every load' (benchmarks/pretrained_load.py).
"""

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from cnn_internals.core.config import Section, node, read_key, read_section
from cnn_internals.core.errors import UserError, first_line
from cnn_internals.core.params import params_name
from cnn_internals.core.project import find_root
from cnn_internals.data import Weights
from cnn_internals.data.download import DownloadEntry, fetch_file, sha256sum


class Sha256Entry(DownloadEntry):
    """``weights.<net>``: torchvision's file, checked by its full sha256."""

    hashes: ClassVar[tuple] = ("sha256",)


class _WeightsChoice(Section):
    weights: Weights = "scratch"

# What weights@<net> writes for a net trained from scratch: no weights, and a line saying so
# (an empty file would do for train@<net>'s dependency, but DVC warns about empty outputs on
# every run).
SCRATCH = b"no pretrained weights: train.<net>.weights is scratch, the net starts from its own initialisation\n"


def pretrained_file(net: str) -> Path:
    """weights@<net>'s output, as dvc.yaml names it: models/pretrained/<net>.pth (here, not in
    pipeline/artifacts.py, which names every other artifact: see its docstring)."""
    return Path("models/pretrained") / f"{net}.pth"


def pretrained_path(net: str) -> Path:
    """weights@<net>'s output under the project root (found from wherever this runs)."""
    return find_root() / pretrained_file(net)


def weights_entry(params: Mapping, net: str) -> dict:
    """``weights.<net>`` checked: {url, sha256} (``mirrors`` optional), as ``fetch_file`` takes
    it; a one-line UserError naming the key otherwise."""
    if node(params, f"weights.{net}", None) is None:
        raise UserError(f"{params_name(params)}: no weights.{net}: add its {{url, sha256}} (torchvision's file) to use "
                        f"{net}'s ImageNet weights")
    return read_section(params, f"weights.{net}", Sha256Entry).as_dict()


def wants_imagenet(params: Mapping, net: str) -> bool:
    """Whether ``train.<net>.weights`` is imagenet (absent: scratch). The net's whole config
    checks it again (imagenet refused for a net without published weights); this reads it
    without importing any model, so that editing a net's code does not fetch its weights again."""
    return read_key(params, f"train.{net}", _WeightsChoice, "weights") == "imagenet"


def load_pretrained(path: str | Path, sha256: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (torchvision's .pth: an OrderedDict of tensors) on the CPU,
    after checking the whole file's sha256 against ``sha256``, on every call. A mismatch, a
    missing file, or one that is not a state dict is a one-line UserError naming the file and
    the stage that rewrites it (the file's stem is the net's name)."""
    path = Path(path)
    net = path.stem
    if not path.is_file():
        raise UserError(f"{path} missing: run `dvc repro weights@{net}` ({net} must be listed in "
                        "pipeline.nets in params.yaml)")
    if path.stat().st_size in (0, len(SCRATCH)) and path.read_bytes() in (b"", SCRATCH):
        raise UserError(f"{path} holds no weights: weights@{net} fetched nothing because train.{net}.weights was "
                        f"scratch; run `dvc repro weights@{net}` with it set to imagenet")
    got, want = sha256sum(path), sha256.lower()
    if got != want:
        raise UserError(f"{path} has sha256 {got}, expected {want} (weights.{net}.sha256): it changed "
                        f"since it was fetched; run `dvc repro -f weights@{net}`")
    return _state_dict(path, net, path)


def _state_dict(path: Path, net: str, shown: Path) -> dict:
    """The named tensors in ``path``, read without running any pickled code; errors name
    ``shown``, the file as the user knows it."""
    fix = f"check weights.{net}.url in params.yaml, then run `dvc repro -f weights@{net}`"
    try:
        with warnings.catch_warnings():   # torch warns about garbage before failing on it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- unpickling errors come in many types
        raise UserError(f"{shown} is not a torch weights file ({first_line(err)}): {fix}") from None
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"{shown} holds a {type(state).__name__}, not a state dict of named tensors: {fix}")
    return state


def fetch_pretrained(params: Mapping, net: str, dest: Path, **download: Any) -> Path:
    """`weights@<net>`: ``weights.<net>``'s file to ``dest`` (artifacts.pretrained_path),
    which appears only once the file's sha256 matches (checked as it downloads) and it loads as
    a state dict. ``download``: fetch_file's mirror, tries, backoff, timeout."""
    entry = weights_entry(params, net)
    dest = Path(dest)
    return fetch_file(entry, dest, check=lambda part: _state_dict(part, net, dest), **download)
