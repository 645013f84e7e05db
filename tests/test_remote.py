"""Issue 7, artifacts through a DVC remote: the pipeline is built once in a copy of this repo
(one epoch, small MNIST served on 127.0.0.1), then pushed to and pulled from moto's S3 server on
127.0.0.1 with DVC and dvc-s3, as a user runs them: a fresh clone pulls, or restores from the
run-cache, what the first copy built; a push cut off mid-upload completes on the next try; a bad
remote fails loudly and leaves the workspace and the local cache as they were.

A bucket is checked the way DVC lays it out, ``cache/files/md5/XX/YYYY...`` with XXYYYY... the
md5 of the object's bytes: every object listed is read back and hashed."""

import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import FakeServer
from moto.core import enable_iam_authentication
from moto.server import ThreadedMotoServer

from repo_copy import copy_repo, run
from test_pipeline import set_params, stages_run

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",  # not the caller's ~/.aws
       "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
# A push or pull that must fail: botocore's own retries and backoff would only add minutes.
FEW_RETRIES = {"AWS_MAX_ATTEMPTS": "2"}
PREFIX = "cache/files/md5/"


class S3:
    """moto's S3 on a free loopback port, in this process (so its IAM checks can be switched on)."""

    def __init__(self):
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client = self.connect("testing", "testing")

    def connect(self, key_id, secret, service="s3"):
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def bucket(self, name):
        self.client.create_bucket(Bucket=name)
        return name

    def read(self, bucket, prefix):
        """{key: bytes} of every object under prefix."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"]: self.client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                for page in pages for item in page.get("Contents", [])}

    def objects(self, bucket):
        """{name DVC gives the object (XXYYYY..., ``.dir`` kept): md5 of its bytes} of the bucket."""
        return {key[len(PREFIX):].replace("/", ""): hashlib.md5(body).hexdigest()
                for key, body in self.read(bucket, PREFIX).items()}

    def stop(self):
        self._server.stop()


def intact(objects: dict) -> bool:
    return all(name.removesuffix(".dir") == md5 for name, md5 in objects.items())


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``port``. Armed with ``cut_after(marker, n)``, it
    forwards n bytes past the first ``marker`` (a request line) going upstream, then closes every
    connection and drops each new one at once until ``heal()``: a link that dies mid-upload and
    stays down for the rest of that push."""

    def __init__(self, port):
        self._target = ("127.0.0.1", port)
        self._lock = threading.Lock()
        self._sockets = set()
        self._marker, self._after = None, 0
        self.cut = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, marker: bytes, n: int):
        with self._lock:
            self._marker, self._after = marker, n

    def heal(self):
        with self._lock:
            self._marker, self.cut = None, False

    def close(self):
        self._listener.close()
        self._close_all()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, outgoing):
        tail, past_marker = b"", None        # bytes sent after the marker on this connection
        try:
            while chunk := src.recv(65536):
                if outgoing:
                    with self._lock:
                        if self.cut:
                            break
                        if self._marker and past_marker is None:
                            window = tail + chunk
                            at = window.find(self._marker)
                            if at >= 0:
                                past_marker = len(window) - at - len(self._marker)
                            tail = window[-len(self._marker):]
                        elif past_marker is not None:
                            past_marker += len(chunk)
                        if past_marker is not None and past_marker >= self._after:
                            chunk = chunk[: len(chunk) - (past_marker - self._after)]
                            self.cut = True
                dst.sendall(chunk)
                if self.cut:
                    break
        except OSError:
            pass
        if self.cut:
            self._close_all()
        else:
            _close(src)
            _close(dst)

    def _close_all(self):
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)


def _close(sock):
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def digest(root: Path, under: str = "") -> dict:
    """{path: md5} of every file below root/under, less git's files and DVC's scratch (.dvc/tmp)."""
    base = root / under
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files
            if not p.relative_to(root).as_posix().startswith((".git/", ".dvc/tmp/"))}


def lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def assert_same_outputs(copy: Path, origin: Path):
    """Every output dvc.lock lists is in copy, file for file as in origin; a file's md5 is the lock's."""
    for stage, entry in lock(origin).items():
        for out in entry["outs"]:
            assert digest(copy, out["path"]) == digest(origin, out["path"]) != {}, (stage, out["path"])
            if not out["md5"].endswith(".dir"):
                assert digest(copy, out["path"]) == {out["path"]: out["md5"]}


def cached_objects(repo: Path) -> set:
    """What a push must upload: each output of dvc.lock that git does not track (the DVC-cached
    ones), and for a folder its .dir listing and every file in it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.split()
    wanted = set()
    for entry in lock(repo).values():
        for out in entry["outs"]:
            if any(t == out["path"] or t.startswith(out["path"] + "/") for t in tracked):
                continue
            wanted.add(out["md5"])
            if out["md5"].endswith(".dir"):
                listing = repo / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
                wanted.update(item["md5"] for item in json.loads(listing.read_text()))
    return wanted


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=repo,
                   check=True, capture_output=True)


def dvc(repo, *args, check=True, env=None):
    return run(["dvc", *args], repo, "", check=check, extra_env={**AWS, **(env or {})})


def clone(origin, dest):
    """A fresh git clone: git-tracked files only, no DVC cache."""
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True)
    return dest


def working_copy(origin, dest):
    """origin as it is, workspace and .dvc/cache included: the machine that built it."""
    shutil.copytree(origin, dest, symlinks=True)
    return dest


def use_remote(repo, bucket, endpoint):
    """Point the default remote at another bucket and endpoint, in .dvc/config.local."""
    dvc(repo, "remote", "modify", "--local", "store", "url", f"s3://{bucket}/cache")
    dvc(repo, "remote", "modify", "--local", "store", "endpointurl", endpoint)


@pytest.fixture(scope="module")
def s3():
    server = S3()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mirror(mnist_files):
    fake = FakeServer().start()
    for name, data in mnist_files["bytes"].items():
        fake.serve(f"/mirror/{name}", data)
    yield f"{fake.base_url}/mirror"
    fake.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory, mirror, mnist_files, s3):
    """The whole pipeline built once (one epoch) and committed to git with dvc.lock and the
    cache: false outputs; its default remote ``store`` is s3://store/cache on the moto server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    repo = copy_repo(tmp_path_factory.mktemp("origin"))
    set_params(repo, refused, mnist_files["md5"], **{"train.lenet5.epochs": 1})
    run(["dvc", "repro"], repo, mirror)
    dvc(repo, "remote", "add", "-d", "store", f"s3://{s3.bucket('store')}/cache")
    dvc(repo, "remote", "modify", "store", "endpointurl", s3.endpoint)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "built")
    return repo


def test_push_then_pull_in_a_fresh_clone_restores_every_output_byte_for_byte(origin, s3, tmp_path):
    dvc(origin, "push")
    objects = s3.objects("store")
    assert intact(objects) and set(objects) == cached_objects(origin), objects

    copy = clone(origin, tmp_path / "clone")
    assert not (copy / "models/lenet5.pt").exists()
    dvc(copy, "pull")
    assert_same_outputs(copy, origin)
    status = dvc(copy, "status")
    assert status.stdout.split() == ["scan@mnist:", "always", "changed"], status.stdout    # nothing else
    before = digest(copy)
    again = dvc(copy, "repro")
    assert stages_run(again) == [], again.stdout
    assert [s for s in lock(origin) if f"Stage '{s}' didn't change, skipping" not in again.stdout
            and not s.startswith("scan@")] == [], again.stdout
    assert digest(copy) == before


def test_run_cache_restores_every_stage_of_a_fresh_clone_without_running_it(origin, s3, tmp_path):
    """`python -m cnn_internals.push_runs` (`dvc push --run-cache` and the git-tracked outputs
    its entries name), then in a clone without dvc.lock `dvc repro --pull --allow-missing`:
    each stage is found in the run-cache and checked out, none runs, and the outputs and the
    rebuilt dvc.lock are the originals."""
    builder = working_copy(origin, tmp_path / "builder")
    use_remote(builder, s3.bucket("runs"), s3.endpoint)
    run([sys.executable, "-m", "cnn_internals.push_runs"], builder, "", extra_env=AWS)
    objects = s3.objects("runs")
    assert intact(objects), objects
    runs = [yaml.safe_load(body)["cmd"] for body in s3.read("runs", "cache/runs/").values()]

    copy = clone(origin, tmp_path / "clone")
    use_remote(copy, "runs", s3.endpoint)
    (copy / "dvc.lock").unlink()
    restored = dvc(copy, "repro", "--pull", "--allow-missing")
    log = restored.stdout + restored.stderr
    found = {stage: {"run-cache pushed": entry["cmd"] in runs,
                     "restored": f"Stage '{stage}' is cached - skipping run, checking out outputs" in log,
                     "ran": f"Running stage '{stage}'" in log} for stage, entry in lock(origin).items()}
    # scan@<dataset> runs on every repro (data/manifest.py, always changed): it is run, not restored
    scans = {stage for stage in found if stage.startswith("scan@")}
    assert scans and all(found.pop(stage)["ran"] for stage in scans), log
    assert found == {stage: {"run-cache pushed": True, "restored": True, "ran": False} for stage in lock(origin)
                     if stage not in scans}, log
    assert lock(copy) == lock(origin)
    assert_same_outputs(copy, origin)


def test_push_cut_mid_upload_fails_then_completes_and_every_object_verifies(origin, s3, tmp_path):
    work = working_copy(origin, tmp_path / "work")
    proxy = CuttingProxy(s3.port)
    use_remote(work, s3.bucket("cut"), proxy.endpoint)
    model = next(out for out in lock(work)["train@lenet5"]["outs"] if out["path"] == "models/lenet5.pt")
    before = digest(work)
    # half of the model's upload gets through, then the link is down for the rest of the push
    proxy.cut_after(f"PUT /cut/{PREFIX}{model['md5'][:2]}/{model['md5'][2:]} ".encode(), model["size"] // 2)
    try:
        failed = dvc(work, "push", check=False, env=FEW_RETRIES)
        assert failed.returncode != 0 and proxy.cut, failed.stdout + failed.stderr
        assert f"ERROR: failed to transfer '{model['md5']}'" in failed.stderr, failed.stderr
        assert "failed to push data to the cloud" in failed.stderr, failed.stderr
        partial = s3.objects("cut")
        assert model["md5"] not in partial and intact(partial), partial
        assert digest(work) == before

        proxy.heal()
        dvc(work, "push")
    finally:
        proxy.close()
    objects = s3.objects("cut")
    assert intact(objects) and set(objects) == cached_objects(work), objects
    assert digest(work) == before


@pytest.mark.parametrize("fault,message", [
    ("unreachable", "Could not connect to the endpoint URL: \"{endpoint}/store/cache/files/md5"),
    ("missing bucket", "An error occurred (NoSuchBucket) when calling the ListObjectsV2 operation"),
    ("wrong credentials", "Forbidden: An error occurred (403) when calling the HeadObject operation"),
])
def test_bad_remote_fails_with_dvc_error_and_changes_nothing(origin, s3, tmp_path, fault, message):
    work = working_copy(origin, tmp_path / "work")   # pushes its cache
    copy = clone(origin, tmp_path / "clone")         # pulls into an empty workspace
    endpoint, auth = s3.endpoint, contextlib.nullcontext()
    if fault == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    use_remote(work, "no-such-bucket" if fault == "missing bucket" else "store", endpoint)
    if fault == "wrong credentials":
        dvc(work, "remote", "modify", "--local", "store", "access_key_id", "AKIAIOSFODNN7EXAMPLE")
        dvc(work, "remote", "modify", "--local", "store", "secret_access_key", "not-the-secret")
        auth = enable_iam_authentication()
        good = iam_user(s3)
    shutil.copy(work / ".dvc/config.local", copy / ".dvc/config.local")
    before = {repo: digest(repo) for repo in (work, copy)}
    with auth:
        if fault == "wrong credentials":   # the server takes a real key: it is the credentials that fail
            assert s3.connect(*good).head_bucket(Bucket="store")["ResponseMetadata"]["HTTPStatusCode"] == 200
        pushed = dvc(work, "push", check=False, env=FEW_RETRIES)
        pulled = dvc(copy, "pull", check=False, env=FEW_RETRIES)
    for result in (pushed, pulled):
        assert result.returncode != 0, result.stdout
        assert result.stderr.startswith("ERROR: "), result.stderr
        assert message.format(endpoint=endpoint) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert {repo: digest(repo) for repo in (work, copy)} == before


def iam_user(s3):
    """(key id, secret) of a new IAM user allowed everything."""
    iam = s3.connect("testing", "testing", service="iam")
    iam.create_user(UserName="builder")
    iam.put_user_policy(UserName="builder", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="builder")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
