"""ImageNet weights (cnn_internals.pretrained, stage weights@<net>): a small state dict written in
torchvision's file format, served on 127.0.0.1 through CNN_INTERNALS_MIRROR, checked by its full
sha256 on download and on every load."""

import hashlib
import os
import re
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import PARAMS_LOG
from cnn_internals.data import download
from cnn_internals.data.pretrained import SCRATCH, fetch_pretrained, load_pretrained, wants_imagenet, weights_entry
from cnn_internals.pipeline.artifacts import pretrained_path

from repo_copy import copy_repo, edit_params, run

REPO = Path(__file__).resolve().parents[1]
NET = "resnet18"           # a net with published weights (the weights code never builds it)
FAST = {"backoff": 0.01, "timeout": 5}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A state dict as torchvision publishes one: ``torch.save`` of an OrderedDict of tensors to
    a file, the default zipfile format, named ``<net>-<first 8 hex digits of its sha256>.pth``.
    Returns {"state", "data", "sha256", "name", "dir"} (``dir`` holds the file: a mirror folder)."""
    gen = torch.Generator().manual_seed(0)
    state = OrderedDict([
        ("features.0.weight", torch.randn(4, 3, 3, 3, generator=gen)),
        ("features.0.bias", torch.randn(4, generator=gen)),
        ("bn.num_batches_tracked", torch.tensor(7)),                      # int64, as BatchNorm keeps it
        ("classifier.weight", torch.randn(10, 4, generator=gen).half()),
        ("classifier.bias", torch.arange(10, dtype=torch.float32)),
    ])
    folder = tmp_path_factory.mktemp("mirror")
    staging = folder / "staging.pth"
    torch.save(state, staging)
    data = staging.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    name = f"{NET}-{sha256[:8]}.pth"
    staging.rename(folder / name)
    assert data[:2] == b"PK"                                              # a zip archive, as torchvision's are
    return {"state": state, "data": data, "sha256": sha256, "name": name, "dir": folder}


def params_for(url, sha256):
    return {"train": {NET: {"weights": "imagenet"}}, "weights": {NET: {"url": url, "sha256": sha256}}}


def assert_same_state(got, expected):
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


def only_file(folder):
    """The one file in ``folder``: no temporary file was left beside it."""
    files = os.listdir(folder)
    assert len(files) == 1, files
    return folder / files[0]


@pytest.mark.parametrize("form", ["folder", "http"])
def test_fetched_through_the_mirror_the_file_is_the_served_bytes_and_loads_the_written_tensors(
        tmp_path, monkeypatch, http_server, refused_url, weights, form):
    http_server.serve(f"/mirror/{weights['name']}", weights["data"])
    mirror = str(weights["dir"]) if form == "folder" else f"{http_server.base_url}/mirror"
    monkeypatch.setenv("CNN_INTERNALS_MIRROR", mirror)
    dest = tmp_path / "models" / "pretrained" / f"{NET}.pth"
    params = params_for(f"{refused_url}/models/{weights['name']}", weights["sha256"])
    assert fetch_pretrained(params, NET, dest, **FAST) == dest
    assert only_file(dest.parent) == dest
    assert dest.read_bytes() == weights["data"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == weights["sha256"] == download.sha256sum(dest)
    assert http_server.requests == ([] if form == "folder" else [f"/mirror/{weights['name']}"])
    assert_same_state(load_pretrained(dest, weights["sha256"]), weights["state"])


def test_a_wrong_sha256_is_refused_in_one_line_naming_both_and_nothing_is_written(tmp_path, refused_url, weights):
    wrong = hashlib.sha256(b"another file").hexdigest()
    url = f"{refused_url}/models/{weights['name']}"
    dest = tmp_path / "pretrained" / f"{NET}.pth"
    with pytest.raises(UserError) as err:
        fetch_pretrained(params_for(url, wrong), NET, dest, mirror=str(weights["dir"]), **FAST)
    name = weights["name"]
    assert str(err.value) == (
        f"could not fetch {name}: {(weights['dir'] / name).as_uri()} (sha256 mismatch: expected {wrong}, got "
        f"{weights['sha256']}); {url} (connection refused) — check the network or set CNN_INTERNALS_MIRROR to a "
        f"folder/URL holding {name}")
    assert os.listdir(tmp_path / "pretrained") == []


def test_a_file_changed_after_download_is_refused_on_the_next_load(tmp_path, refused_url, weights):
    dest = tmp_path / f"{NET}.pth"
    fetch_pretrained(params_for(f"{refused_url}/{weights['name']}", weights["sha256"]), NET, dest,
                     mirror=str(weights["dir"]), **FAST)
    assert_same_state(load_pretrained(dest, weights["sha256"]), weights["state"])   # the first load is fine
    damaged = bytearray(weights["data"])
    damaged[len(damaged) // 2] ^= 0x01                                  # one bit, inside a tensor's bytes
    dest.write_bytes(bytes(damaged))
    with pytest.raises(UserError) as err:
        load_pretrained(dest, weights["sha256"])                         # every load hashes the file
    got = hashlib.sha256(bytes(damaged)).hexdigest()
    assert str(err.value) == (f"{dest} has sha256 {got}, expected {weights['sha256']} (weights.{NET}.sha256): it "
                              f"changed since it was fetched; run `dvc repro -f weights@{NET}`")
    dest.unlink()
    with pytest.raises(UserError, match=rf"{NET}\.pth missing: run `dvc repro weights@{NET}`"):
        load_pretrained(dest, weights["sha256"])


@pytest.mark.parametrize("content, says", [
    (b"\x80\x04 not a zip, not a pickle", "is not a torch weights file"),
    ("nested", "holds a dict, not a state dict of named tensors"),        # models/<net>.pt's layout
    ("list", "holds a list, not a state dict of named tensors"),
])
def test_a_file_that_is_not_a_state_dict_is_one_line_even_with_the_right_hash(tmp_path, weights, content, says):
    path = tmp_path / f"{NET}.pth"
    if content == "nested":
        torch.save({"config": {}, "state_dict": weights["state"]}, path)
    elif content == "list":
        torch.save(list(weights["state"].values()), path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_pretrained(path, download.sha256sum(path))
    message = str(err.value)
    assert message.startswith(f"{path} {says}") and "\n" not in message
    assert message.endswith(f"check weights.{NET}.url in params.yaml, then run `dvc repro -f weights@{NET}`")


def test_a_served_file_with_the_params_hash_that_is_not_a_state_dict_is_not_written(tmp_path, http_server, weights):
    data = b"right hash, wrong content"
    http_server.serve("/w/x.pth", data)
    dest = tmp_path / "pretrained" / f"{NET}.pth"
    with pytest.raises(UserError, match=f"^{re.escape(str(dest))} is not a torch weights file"):
        fetch_pretrained(params_for(f"{http_server.base_url}/w/x.pth", hashlib.sha256(data).hexdigest()), NET, dest,
                         **FAST)
    assert os.listdir(dest.parent) == []


def test_a_refused_port_fails_fast_in_one_line(tmp_path, refused_url, weights):
    url = f"{refused_url}/models/{weights['name']}"
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_pretrained(params_for(url, weights["sha256"]), NET, tmp_path / f"{NET}.pth", tries=3, backoff=1.0)
    assert time.monotonic() - t0 < 3
    assert str(err.value) == (f"could not fetch {weights['name']}: {url} (connection refused) — check the network or "
                              f"set CNN_INTERNALS_MIRROR to a folder/URL holding {weights['name']}")
    assert os.listdir(tmp_path) == []


def test_a_server_failing_once_is_retried_and_a_dropped_transfer_resumes_under_the_same_sha256(
        tmp_path, http_server, weights):
    path, data = f"/models/{weights['name']}", weights["data"]
    http_server.serve(path, data)
    http_server.plan(path, 503, ("drop", 1000))
    dest = tmp_path / f"{NET}.pth"
    fetch_pretrained(params_for(f"{http_server.base_url}{path}", weights["sha256"]), NET, dest, tries=3, **FAST)
    assert [(e["range"], e["status"], e["sent"]) for e in http_server.log] == [
        (None, 503, len(b"planned failure\n")), (None, 200, 1000), ("bytes=1000-", 206, len(data) - 1000)]
    assert dest.read_bytes() == data and only_file(tmp_path) == dest
    assert_same_state(load_pretrained(dest, weights["sha256"]), weights["state"])


def test_a_failed_fetch_keeps_the_file_that_was_there(tmp_path, refused_url, weights):
    dest = tmp_path / f"{NET}.pth"
    dest.write_bytes(b"the last good file")
    with pytest.raises(UserError):
        fetch_pretrained(params_for(f"{refused_url}/{weights['name']}", weights["sha256"]), NET, dest, **FAST)
    assert only_file(tmp_path) == dest and dest.read_bytes() == b"the last good file"


SHA = "ab" * 32


@pytest.mark.parametrize("entry, message", [
    (None, f"params.yaml: no weights.{NET}: add its {{url, sha256}}"),
    ({"url": "https://h/a.pth", "md5": "0" * 32},
     f"weights.{NET} must carry one hash, sha256 (64 hex digits); it has md5, not accepted here"),
    ({"url": "https://h/a.pth", "md5": "0" * 32, "sha256": SHA}, "it has both md5 and sha256"),
    ({"url": "https://h/a.pth"}, "it has none"),
    ({"url": "https://h/a.pth", "sha256": SHA[:-1]}, f"weights.{NET}.sha256 must be 64 hex digits, got '{SHA[:-1]}'"),
    ({"url": "https://h/a.pth", "sha256": "g" * 64}, f"weights.{NET}.sha256 must be 64 hex digits"),
    ({"url": 5, "sha256": SHA}, f"weights.{NET}.url must be a URL string, got 5"),
    ({"url": "https://h/a.pth", "sha256": SHA, "size": 1}, "has unknown keys ['size']: use url, sha256, mirrors"),
    ("https://h/a.pth", f"weights.{NET} must be a mapping with url and sha256"),
])
def test_weights_entries_are_checked_in_one_line_naming_the_key(entry, message):
    params = {"weights": {} if entry is None else {NET: entry}}
    with pytest.raises(UserError) as err:
        weights_entry(params, NET)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_only_train_weights_imagenet_asks_for_the_file():
    assert wants_imagenet({"train": {NET: {"weights": "imagenet"}}}, NET)
    assert not wants_imagenet({"train": {NET: {"weights": "scratch"}}}, NET)
    assert not wants_imagenet({"train": {"lenet5": {"epochs": 1}}}, "lenet5")      # absent: scratch


def test_the_file_lives_under_the_project_root(monkeypatch):
    monkeypatch.chdir(REPO / "src" / "cnn_internals")
    assert pretrained_path("vgg16") == REPO / "models" / "pretrained" / "vgg16.pth"


def test_the_committed_entries_are_torchvision_files_named_after_their_hash():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert not any(wants_imagenet(params, net) for net in params["pipeline"]["nets"])  # no network by default
    for net in ("vgg16", "resnet18"):
        entry = weights_entry(params, net)
        name = download.file_name(entry["url"])
        assert entry["url"] == f"https://download.pytorch.org/models/{name}"
        assert name == f"{net}-{entry['sha256'][:8]}.pth"


# --- The stage, in a copy of the repository ------------------------------------------------

def stage_params(repo, url, sha256):
    return edit_params(repo, {"pipeline.nets": {NET: "imagenette"}, "pipeline.datasets": ["imagenette"], f"train.{NET}.weights":
                              "imagenet", f"weights.{NET}": {"url": url, "sha256": sha256}})


def test_the_stage_refuses_a_wrong_sha256_in_one_line_and_leaves_no_file(tmp_path, refused_url, weights):
    repo = copy_repo(tmp_path)
    wrong = "0" * 64
    stage_params(repo, f"{refused_url}/{weights['name']}", wrong)
    result = run([sys.executable, "stages/weights.py", "--net", NET], repo, str(weights["dir"]), check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: could not fetch {weights['name']}: ")
    assert f"(sha256 mismatch: expected {wrong}, got {weights['sha256']})" in lines[0]
    assert not (repo / "models" / "pretrained" / f"{NET}.pth").exists()
    assert not [p for p in (repo / "models").rglob("*") if p.is_file()]      # no temporary file either


def test_dvc_repro_fetches_through_the_weights_stage_and_records_the_file(tmp_path, refused_url, weights):
    repo = copy_repo(tmp_path / "repo")
    # a net from scratch (the default LeNet-5): a one-line file, no network, so train@lenet5 has its
    # dependency; not empty, which DVC would warn about on every run
    scratch = run(["dvc", "repro", "weights@lenet5"], repo, "")
    assert "models/pretrained/lenet5.pth: no weights, train.lenet5.weights is scratch" in scratch.stdout
    assert (repo / "models/pretrained/lenet5.pth").read_bytes() == SCRATCH
    assert "is empty" not in scratch.stdout + scratch.stderr
    with pytest.raises(UserError, match="holds no weights: weights@lenet5 fetched nothing"):
        load_pretrained(repo / "models/pretrained/lenet5.pth", SHA)
    stage_params(repo, f"{refused_url}/models/{weights['name']}", weights["sha256"])
    reads = tmp_path / "params_read.tsv"
    result = run(["dvc", "repro", f"weights@{NET}"], repo, str(weights["dir"]), extra_env={PARAMS_LOG: str(reads)})
    assert [line for line in result.stdout.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'validate':", f"Running stage 'weights@{NET}':"]
    numbers = sum(t.numel() for t in weights["state"].values())
    assert f"models/pretrained/{NET}.pth: sha256 {weights['sha256'][:8]}... verified, 5 tensors, {numbers} numbers" \
        in result.stdout
    out = repo / "models" / "pretrained" / f"{NET}.pth"
    assert out.read_bytes() == weights["data"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"weights@{NET}"]
    assert lock["outs"] == [{"path": f"models/pretrained/{NET}.pth", "hash": "md5",
                             "md5": hashlib.md5(weights["data"]).hexdigest(), "size": len(weights["data"])}]
    declared = lock["params"]["params.yaml"]
    assert declared[f"train.{NET}.weights"] == "imagenet"
    assert declared[f"weights.{NET}"] == {"url": f"{refused_url}/models/{weights['name']}", "sha256": weights["sha256"]}
    read = {key for stage, key in (line.split("\t") for line in reads.read_text().splitlines())
            if stage == f"weights@{NET}"}
    assert read - {"weights", f"weights.{NET}", "train", f"train.{NET}"} == {f"train.{NET}.weights", f"weights.{NET}.url",
                                                    f"weights.{NET}.sha256"}
    again = run(["dvc", "repro", f"weights@{NET}"], repo, str(weights["dir"]))
    assert "Running stage" not in again.stdout          # weights@ needs no scan@: none runs


def test_validate_wants_a_weights_entry_for_a_net_on_imagenet_weights(tmp_path):
    repo = copy_repo(tmp_path)
    stage_params(repo, "https://h/a.pth", SHA)
    edit_params(repo, {f"weights.{NET}": None})
    result = run([sys.executable, "stages/validate.py"], repo, "", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: params.yaml: no weights.{NET}: add its {{url, sha256}}")
    assert not (repo / "data").exists()
