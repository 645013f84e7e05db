"""The DVC workflow a user lives in, on LeNet-5: `dvc exp run -S`, `dvc exp show`, a queued
sweep run by `dvc queue start -j 2`, and forced reruns giving the same bytes.

Everything runs in temporary copies of one baseline: this repo with the small MNIST files served
from 127.0.0.1 through CNN_INTERNALS_MIRROR (tests/test_pipeline.py's params: 3 epochs,
batch 16, CPU), built once by `dvc repro` and committed to git, so `dvc exp` has a baseline
commit to branch from. Each test copies it (git history, DVC cache and all) before changing it.
"""

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from types import SimpleNamespace

import pytest
import yaml

from repo_copy import copy_repo, edit_params, run
from test_pipeline import refused, server, set_params, stages_run  # noqa: F401 -- fixtures too

AFTER_TRAIN = ["validate", "train@lenet5", "mine@lenet5", "visualize@lenet5", "render@lenet5", "gallery", "report@lenet5"]
EVERY_STAGE = ["validate", "weights@lenet5", "download@mnist", "prepare@mnist", "stats@mnist", *AFTER_TRAIN[1:]]
QUEUE_TIMEOUT_S = 900
# Appended to the temporary repo's src/cnn_internals/viz/render.py in the queued sweep: prints
# where the library was imported from (a line the queue's log keeps) and changes every
# figure's title (so the pictures' bytes change). /work/main's library has neither.
LIBRARY_MARKER = """

print({marker!r}, __file__)
_layer_figure_before_the_marker = layer_figure


def layer_figure(pictures, patches, channel_ids, values, title, **kwargs):
    return _layer_figure_before_the_marker(pictures, patches, channel_ids, values, title + " " + {marker!r}, **kwargs)
"""


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def git_bytes(repo, rev, path) -> bytes:
    """``path`` as commit ``rev`` holds it."""
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, check=True, capture_output=True).stdout


def lock_outs(lock_text) -> dict:
    """{output path: md5} over every stage of a dvc.lock (cache: false outputs included)."""
    lock = yaml.safe_load(lock_text)["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


def workspace(repo) -> dict:
    """Every file the stages write in the workspace: {path: (bytes, mtime_ns)}."""
    roots = ["data", "models", "metrics", "images", "reports", "checkpoints"]
    return {p.relative_to(repo).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for root in roots if (repo / root).exists() for p in sorted((repo / root).rglob("*")) if p.is_file()}


def experiments(repo, mirror) -> dict:
    """`dvc exp show --json` as {name: {"rev", "params" (params.yaml), "metrics" (metrics/lenet5.json)}}."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, mirror).stdout)
    found = {}
    for commit in shown:
        for group in commit.get("experiments") or []:
            for exp in group["revs"]:
                data = exp.get("data") or {}
                found[exp["name"]] = {
                    "rev": exp["rev"],
                    "params": data.get("params", {}).get("params.yaml", {}).get("data"),
                    "metrics": data.get("metrics", {}).get("metrics/lenet5.json", {}).get("data")}
    return found


def copy_of(baseline, dest):
    """A copy of the committed baseline: working tree, .git (so its experiment refs) and .dvc/cache."""
    shutil.copytree(baseline["repo"], dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, server, refused, mnist_files):
    """The pipeline built once by `dvc repro` in a fresh copy, everything committed."""
    repo = copy_repo(tmp_path_factory.mktemp("exp_baseline"))
    set_params(repo, refused, mnist_files["md5"])
    mirror = f"{server.base_url}/mirror"
    result = run(["dvc", "repro"], repo, mirror)
    assert stages_run(result) == EVERY_STAGE
    git(repo, "config", "user.name", "CNN Internals tests")
    git(repo, "config", "user.email", "tests@cnn-internals.invalid")
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline: the pipeline built with the test params")
    assert git(repo, "status", "--porcelain") == ""
    return {"repo": repo, "mirror": mirror, "lock": (repo / "dvc.lock").read_text(),
            "metrics": json.loads((repo / "metrics/lenet5.json").read_text()), "files": workspace(repo)}


@pytest.fixture(scope="module")
def direct_two_epochs(tmp_path_factory, baseline):
    """What `dvc repro` without experiments gives for train.lenet5.epochs = 2, in another copy."""
    repo = copy_of(baseline, tmp_path_factory.mktemp("direct") / "repo")
    edit_params(repo, {"train.lenet5.epochs": 2})
    result = run(["dvc", "repro", "train@lenet5"], repo, baseline["mirror"])
    assert stages_run(result) == ["validate", "train@lenet5"]
    git(repo, "commit", "-q", "-am", "two epochs")          # on top of the baseline: HEAD~1
    return {"repo": repo, "metrics": json.loads((repo / "metrics/lenet5.json").read_text()),
            "outs": lock_outs((repo / "dvc.lock").read_text())}


def queue_status(repo, mirror) -> dict:
    """`dvc queue status` as {experiment name: status} (Queued, Running, Success, Failed, ...)."""
    lines = run(["dvc", "queue", "status"], repo, mirror).stdout.splitlines()
    rows = {}
    for line in lines[1:]:                      # after the header: Task Name Created Status
        if not line.strip():
            break                               # then a blank line and "Worker status: ..."
        words = line.split()
        rows[words[1]] = words[-1]
    return rows


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, baseline):
    """A copy whose committed library prints a marker, with train.lenet5.epochs = 1 and 2
    queued and run by two detached workers (`dvc queue start -j 2`) until neither is queued or
    running. Returns the repo, the marker, each experiment's final status and queue log, and the
    workspace before and after."""
    repo = copy_of(baseline, tmp_path_factory.mktemp("sweep") / "repo")
    mirror = baseline["mirror"]
    marker = f"cnn-internals-test-marker-{uuid.uuid4().hex}"
    library = repo / "src/cnn_internals/viz/render.py"
    library.write_text(library.read_text() + LIBRARY_MARKER.format(marker=marker))
    git(repo, "commit", "-q", "-am", "render.py: a marker in every figure title")
    before = workspace(repo)
    names = {1: "epochs-1", 2: "epochs-2"}
    for epochs, name in names.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lenet5.epochs={epochs}"], repo, mirror)
    assert queue_status(repo, mirror) == {name: "Queued" for name in names.values()}
    try:
        run(["dvc", "queue", "start", "-j", "2"], repo, mirror)
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            status = queue_status(repo, mirror)
            if not {"Queued", "Running"} & set(status.values()):
                break
            assert time.monotonic() < deadline, f"queue still busy after {QUEUE_TIMEOUT_S} s: {status}"
            time.sleep(5)           # each `dvc queue status` costs a CPU second the workers could use
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, mirror, check=False)
    logs = {name: run(["dvc", "queue", "logs", name], repo, mirror, check=False) for name in names.values()}
    return {"repo": repo, "mirror": mirror, "marker": marker, "library_md5": hashlib.md5(library.read_bytes()).hexdigest(),
            "names": names, "status": status, "logs": {n: r.stdout + r.stderr for n, r in logs.items()},
            "before": before, "after": workspace(repo)}


def test_exp_run_records_the_set_param_and_the_metrics_a_direct_repro_gives(baseline, direct_two_epochs, tmp_path):
    repo = copy_of(baseline, tmp_path / "repo")
    result = run(["dvc", "exp", "run", "-n", "two-epochs", "-S", "train.lenet5.epochs=2"], repo, baseline["mirror"])
    assert stages_run(result) == AFTER_TRAIN
    shown = experiments(repo, baseline["mirror"])
    assert list(shown) == ["two-epochs"]
    exp = shown["two-epochs"]
    assert exp["params"]["train"]["lenet5"]["epochs"] == 2
    assert exp["metrics"] == direct_two_epochs["metrics"]
    assert exp["metrics"]["epochs"] == 2 and "test_accuracy" in exp["metrics"]
    assert exp["metrics"]["train_loss"] != baseline["metrics"]["train_loss"]
    outs = lock_outs(git_bytes(repo, exp["rev"], "dvc.lock"))
    assert outs["models/lenet5.pt"] == direct_two_epochs["outs"]["models/lenet5.pt"]
    assert outs["models/lenet5.pt"] != lock_outs(baseline["lock"])["models/lenet5.pt"]


def test_exp_run_of_a_render_setting_reruns_only_validate_and_render(baseline, tmp_path):
    repo = copy_of(baseline, tmp_path / "repo")
    result = run(["dvc", "exp", "run", "-n", "three-maps", "-S", "render.lenet5.channels=3"], repo,
                 baseline["mirror"])
    assert stages_run(result) == ["validate", "render@lenet5", "gallery"]
    exp = experiments(repo, baseline["mirror"])["three-maps"]
    assert exp["params"]["render"]["lenet5"]["channels"] == 3
    assert exp["metrics"] == baseline["metrics"]
    outs, before = lock_outs(git_bytes(repo, exp["rev"], "dvc.lock")), lock_outs(baseline["lock"])
    redrawn = ("renders/lenet5", "images")
    assert {p: md5 for p, md5 in outs.items() if p not in redrawn} == \
           {p: md5 for p, md5 in before.items() if p not in redrawn}
    assert all(outs[p] != before[p] for p in redrawn)
    assert (repo / "images/lenet5_conv1.png").read_bytes() != baseline["files"]["images/lenet5_conv1.png"][0]


def test_a_queued_sweep_runs_every_setting_and_dvc_exp_show_has_their_metrics(sweep, direct_two_epochs):
    assert sweep["status"] == {"epochs-1": "Success", "epochs-2": "Success"}, sweep["logs"]
    shown = experiments(sweep["repo"], sweep["mirror"])
    for epochs, name in sweep["names"].items():
        assert stages_run(SimpleNamespace(stdout=sweep["logs"][name])) == AFTER_TRAIN, sweep["logs"][name]
        assert shown[name]["params"]["train"]["lenet5"]["epochs"] == epochs
        assert shown[name]["metrics"]["epochs"] == epochs and "test_accuracy" in shown[name]["metrics"]
    assert shown["epochs-2"]["metrics"] == direct_two_epochs["metrics"]
    assert shown["epochs-1"]["metrics"]["train_loss"] != shown["epochs-2"]["metrics"]["train_loss"]
    model = lock_outs(git_bytes(sweep["repo"], shown["epochs-2"]["rev"], "dvc.lock"))["models/lenet5.pt"]
    assert model == direct_two_epochs["outs"]["models/lenet5.pt"]


def test_queued_experiments_leave_the_workspace_alone(sweep):
    """They run in copies under .dvc/tmp/exps: not a byte nor a timestamp of the user's
    workspace outputs changes (DVC sets DVC_ROOT to the workspace for them, so a stage
    that took DVC_ROOT for its own root would write there)."""
    assert sweep["after"] == sweep["before"]
    assert git(sweep["repo"], "status", "--porcelain") == ""


def test_a_queued_experiment_runs_the_library_of_its_own_checkout(sweep, baseline):
    """The venv's editable install points at the main checkout's src/; a queued experiment
    runs in a copy under .dvc/tmp/exps and must import that copy's library (the one its
    dvc.lock credits): the marker committed only to this repo's render.py shows in its log,
    printed from a file under .dvc/tmp/exps, and in its pictures."""
    repo, marker = sweep["repo"], sweep["marker"]
    shown = experiments(repo, sweep["mirror"])
    executors = str(repo.resolve() / ".dvc" / "tmp" / "exps")
    for name in sweep["names"].values():
        assert sweep["status"][name] == "Success", sweep["logs"][name]
        printed = [line.split(" ", 1)[1] for line in sweep["logs"][name].splitlines() if line.startswith(marker)]
        assert printed and all(p.startswith(executors) and p.endswith("src/cnn_internals/viz/render.py")
                               for p in printed), sweep["logs"][name]
        lock = yaml.safe_load(git_bytes(repo, shown[name]["rev"], "dvc.lock"))["stages"]["render@lenet5"]
        credited = {dep["path"]: dep["md5"] for dep in lock["deps"]}
        assert credited["src/cnn_internals/viz/render.py"] == sweep["library_md5"]
        assert git_bytes(repo, shown[name]["rev"], "images/lenet5_conv1.png") != \
               baseline["files"]["images/lenet5_conv1.png"][0]


def test_a_forced_rerun_gives_every_output_the_same_hash_and_bytes(baseline, tmp_path):
    """On the CPU the pipeline is byte-deterministic: `dvc repro --force` in a copy of the
    baseline (whose outputs came from a first full run) writes the same dvc.lock hashes for
    every output (weights, arrays, metrics, pictures) and the same bytes on disk."""
    repo = copy_of(baseline, tmp_path / "repo")
    result = run(["dvc", "repro", "--force"], repo, baseline["mirror"])
    assert stages_run(result) == EVERY_STAGE
    assert lock_outs((repo / "dvc.lock").read_text()) == lock_outs(baseline["lock"])
    assert (repo / "dvc.lock").read_text() == baseline["lock"]
    assert {p: data for p, (data, _) in workspace(repo).items()} == \
           {p: data for p, (data, _) in baseline["files"].items()}
    assert git(repo, "status", "--porcelain") == ""


def tsv_rows(text, sep="\t") -> list:
    """A TSV/CSV file as a list of {column: str}, the way DVC hands rows to Vega."""
    header, *lines = text.strip().splitlines()
    return [dict(zip(header.split(sep), line.split(sep))) for line in lines]


def test_metrics_and_plots_diff_show_both_commits_and_render_offline(baseline, direct_two_epochs, tmp_path):
    """After a param change rerun and committed on top: `dvc metrics diff HEAD~1` has every
    metric of both commits and their difference, and `dvc plots diff HEAD~1 HEAD` (as specs,
    then as PNGs via vl-convert) carries each commit's training curve and confusion matrix row
    for row as the files hold them."""
    from PIL import Image

    repo, mirror = direct_two_epochs["repo"], baseline["mirror"]
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], repo, mirror).stdout)
    old, new = baseline["metrics"], direct_two_epochs["metrics"]
    changed = {key for key in old if old[key] != new[key]}
    assert set(diff["metrics/lenet5.json"]) == changed and {"epochs", "train_loss"} <= changed
    for key, row in diff["metrics/lenet5.json"].items():
        assert (row["old"], row["new"]) == (old[key], new[key])
        assert row["diff"] == pytest.approx(new[key] - old[key])

    result = run(["python", "-c", "import json; from cnn_internals.viz.plots_png import plot_specs; "
                  "print(json.dumps(plot_specs(['HEAD~1', 'HEAD'])))"], repo, mirror)
    specs = json.loads(result.stdout)
    for name in ("lenet5_history.tsv", "lenet5_confusion.csv"):
        plot = next(spec for plot_id, spec in specs.items() if plot_id.endswith(name))
        values = plot["data"]["values"]
        for rev in ("HEAD~1", "HEAD"):
            got = [{k: str(v) for k, v in row.items() if not k.startswith(("rev", "dvc_", "filename", "field", "step"))}
                   for row in values if row["rev"] == rev]
            expected = tsv_rows(git_bytes(repo, rev, f"metrics/{name}").decode(),
                                "\t" if name.endswith(".tsv") else ",")
            if name.endswith(".tsv"):       # one y field drawn: each row keeps every column
                assert [{k: row[k] for k in expected[0]} for row in got] == expected
            else:
                assert sorted(tuple(sorted(row.items())) for row in got) == \
                       sorted(tuple(sorted(row.items())) for row in expected)

    out = tmp_path / "charts"
    rendered = run(["python", "-m", "cnn_internals.plots_png", "--out", str(out), "HEAD~1", "HEAD"], repo, mirror)
    assert "wrote" in rendered.stdout
    pngs = sorted(p.name for p in out.iterdir())
    assert "metrics-lenet5_confusion.csv.png" in pngs and "LeNet-5-accuracy.png" in pngs, pngs
    for name in pngs:
        with Image.open(out / name) as image:
            pixels = image.convert("L")
            assert image.width > 200 and image.height > 200
            assert pixels.getextrema()[0] < 100 < pixels.getextrema()[1]   # ink on paper, not blank

    # DVC's own HTML charts go to dvc_plots/, which git ignores: a diff leaves the tree clean
    run(["dvc", "plots", "diff", "HEAD~1", "HEAD"], repo, mirror)
    assert (repo / "dvc_plots" / "index.html").is_file()
    assert "dvc_plots" not in run(["git", "status", "--porcelain", "--untracked-files=all"], repo, mirror).stdout
