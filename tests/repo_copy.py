"""Run the pipeline in a temporary copy of this repository (shared by the end-to-end tests)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """The working tree as git sees it, less the committed outputs, as a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if not src.is_file() or name == "dvc.lock" or name.startswith(("metrics/", "images/", "tests/")):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def env(mirror: str) -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "CNN_INTERNALS_MIRROR": mirror, "DVC_NO_ANALYTICS": "1"}


def run(cmd, cwd, mirror, check=True, extra_env=None):
    result = subprocess.run(cmd, cwd=cwd, env={**env(mirror), **(extra_env or {})}, capture_output=True, text=True,
                            timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def edit_params(repo: Path, changes: dict) -> dict:
    """Set (or, with None, delete) dotted keys of repo/params.yaml; returns the new params."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params
