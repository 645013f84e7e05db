"""Writes that fail for lack of room or rights: the error names the user's output, and putting
the last good outputs back says when that failed too."""

import errno
import os
import shutil
from pathlib import Path

import pytest
import yaml

from cnn_internals.core import atomic, project
from cnn_internals.pipeline.cli import cli


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))       # as torch and numpy raise it: no file named


def test_a_full_disk_names_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    dest = tmp_path / "models" / "net.pt"
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError) as err:
        atomic.write_bytes(dest, b"weights")
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(dest))
    assert not dest.exists() and not list(dest.parent.iterdir())        # no temporary file left
    with pytest.raises(OSError) as err:
        with atomic.atomic_dir(tmp_path / "renders") as folder:
            (folder / "conv1.png").write_bytes(b"png")
    assert err.value.filename == str(tmp_path / "renders") and sorted(os.listdir(tmp_path)) == ["models"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        with atomic.atomic_path(tmp_path / "x.bin"):
            raise FileNotFoundError(errno.ENOENT, "gone", "/somewhere/else")
    assert err.value.filename == "/somewhere/else"


def test_the_stage_error_line_names_the_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.setattr(project, "_STARTED_IN", None)
    monkeypatch.setattr(Path, "write_bytes", full_disk)

    @cli
    def main():
        atomic.write_bytes(Path("metrics/net.json"), b"{}")

    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: cannot write metrics/net.json: No space left on device\n"


def test_putting_back_on_a_full_disk_says_it_failed_not_that_the_cache_lacks_it(tmp_path, monkeypatch):
    """restore_outputs under dvc repro: the output is in the cache, but copying it back fails
    for lack of room: the note must say that, not 'not in the local cache'."""
    data = b"the last good model"
    md5 = "0123456789abcdef0123456789abcdef"
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"train@net": {"outs": [{"path": "models/net.pt", "md5": md5}]}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "train@net")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert project.restore_outputs() == "; the last good outputs of train@net (dvc.lock) are back in place"
    assert (tmp_path / "models/net.pt").read_bytes() == data
    monkeypatch.setattr(shutil, "copyfile", full_disk)
    note = project.restore_outputs()
    assert note == ("; putting back models/net.pt (No space left on device) failed too: make room, then "
                    "`dvc checkout train@net` brings back what is tracked")
    cached.unlink()
    assert "models/net.pt not in the local cache" in project.restore_outputs()
