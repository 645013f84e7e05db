"""Training on two processes: torchrun and DDP over gloo on the CPU, through `dvc repro` on the
small MNIST files served from 127.0.0.1 (see test_pipeline.py), and DDP's gradient against one
process's on the same global batch."""

import json
import shutil
import socket
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from cnn_internals.models import NETS
from cnn_internals.models.lenet5 import lenet5_loss
from cnn_internals.runtime.distributed import World, parallel, shard, threads_per_process, weighted

from repo_copy import copy_repo, edit_params, run
from test_pipeline import EPOCHS, refused, server, set_params, snapshot  # noqa: F401 -- fixtures

TRAINED = ["models/lenet5.pt", "metrics/lenet5.json", "metrics/lenet5_history.tsv", "metrics/lenet5_confusion.csv"]

# Run as the stage's command: rank 1 dies (SIGKILL) when it reaches the held-out evaluation of
# epoch 3, so rank 0 has written at least the checkpoint of epoch 1 (each save waits for the
# one before). The stage is imported, not run with runpy, so that sys.argv[0] stays this file
# and torchrun's ranks run it too.
KILL_RANK_1 = """
import os, signal, sys
sys.path.insert(0, "stages")
from cnn_internals.training import loop as training
evaluate, calls = training.evaluate, []
def evaluate_or_die(*args, **kwargs):
    calls.append(1)
    if os.environ.get("RANK") == "1" and len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate(*args, **kwargs)
training.evaluate = evaluate_or_die
import train
train.main()
"""


def test_the_shares_of_a_global_batch_cover_it_in_order_and_weigh_to_its_mean():
    rng = np.random.default_rng(0)
    for length in (16, 13, 5, 1):
        chunk, losses = rng.permutation(100)[:length], rng.random(100)
        for size in (1, 2, 3):
            shares = [shard(chunk, World(rank=r, size=size)) for r in range(size)]
            assert np.array_equal(np.concatenate([part for part, w in shares if w]), chunk)
            assert max(len(p) for p, w in shares if w) - min(len(p) for p, w in shares if w) <= 1
            # DDP averages the ranks' gradients: the weighted mean losses average to the global mean
            average = sum(float(weighted(torch.tensor(losses[p].mean(), dtype=torch.float64), w))
                          for p, w in shares) / size
            assert average == pytest.approx(losses[chunk].mean(), rel=1e-12, abs=0)
            if length % size == 0:
                assert all(w == 1.0 for _, w in shares)       # an even split leaves the loss untouched


GLOBAL_BATCHES = (13, 1)      # uneven (7 + 6 images), and smaller than the ranks (rank 1: weight 0)


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(max(GLOBAL_BATCHES), 1, 32, 32, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (max(GLOBAL_BATCHES),), generator=generator)
    return x, y


def _lenet():
    torch.manual_seed(0)
    return NETS["lenet5"].build({"c3_table": True, "prototypes": "learned"}).double()


def _gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _ddp_rank(rank, port, out):
    """One rank: the training step's gradient (its share, weighted, DDP) for each global batch."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    world = World(rank=rank, size=2)
    model = _lenet()
    ranks = parallel(model, world, torch.device("cpu"))
    x, y = _data()
    found = []
    for length in GLOBAL_BATCHES:
        part, weight = shard(np.arange(length), world)
        model.zero_grad(set_to_none=True)
        weighted(lenet5_loss(ranks(x[part]), y[part]), weight).backward()
        found.append(_gradients(model))
    if rank == 0:
        torch.save(found, out)
    dist.destroy_process_group()


def test_the_all_reduced_gradient_is_the_gradient_of_the_global_batch(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_rank, args=(port, tmp_path / "grads.pt"), nprocs=2)
    found = torch.load(tmp_path / "grads.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as in the ranks: a reduction's order depends on the threads
    try:
        x, y = _data()
        for length, ddp in zip(GLOBAL_BATCHES, found):
            model = _lenet()
            lenet5_loss(model(x[:length]), y[:length]).backward()
            whole = _gradients(model)
            shares = []
            for rank in range(2):
                part, weight = shard(np.arange(length), World(rank=rank, size=2))
                model.zero_grad(set_to_none=True)
                weighted(lenet5_loss(model(x[part]), y[part]), weight).backward()
                shares.append(_gradients(model))
            for name, grad in ddp.items():
                # exactly the mean of the two ranks' gradients (gloo adds two numbers; halving is exact)...
                assert torch.equal(grad, (shares[0][name] + shares[1][name]) / 2), name
                # ...which is one process's gradient of the whole batch, up to float64 rounding
                torch.testing.assert_close(grad, whole[name], rtol=1e-12, atol=1e-14)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two(tmp_path_factory, server, refused, mnist_files):  # noqa: F811 -- the imported fixtures
    """A copy of the repo whose train@lenet5 ran on two processes through `dvc repro`."""
    repo = copy_repo(tmp_path_factory.mktemp("two"))
    set_params(repo, refused, mnist_files["md5"], **{"train.lenet5.nproc": 2})
    mirror = f"{server.base_url}/mirror"
    result = run(["dvc", "repro", "train@lenet5"], repo, mirror)
    return {"repo": repo, "mirror": mirror, "log": result.stdout, "outputs": trained(repo)}


def trained(repo):
    return {name: (repo / name).read_bytes() for name in TRAINED}


def test_two_processes_under_dvc_repro_write_once_and_match_one_process(two, tmp_path):
    repo, log = two["repo"], two["log"]
    assert "Running stage 'train@lenet5'" in log
    # rank 0 alone logs and writes: one line per epoch, one final line
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("epoch ")] == [
        f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert sum(line.startswith("LeNet-5: test accuracy") for line in log.splitlines()) == 1
    # ... and says first how it runs: one line from the launching process, none from the ranks
    threads = threads_per_process(2)
    assert [line for line in log.splitlines() if "training on" in line] == [
        f"LeNet-5: training on 2 processes under torchrun on the CPU, {threads} thread{'s' * (threads != 1)} each, gloo"]
    assert not (repo / "checkpoints/lenet5").exists() and not list(repo.rglob("*.tmp"))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@lenet5"]
    assert lock["params"]["params.yaml"]["train.lenet5"]["nproc"] == 2

    one = tmp_path / "one"
    shutil.copytree(repo, one, symlinks=True)
    edit_params(one, {"train.lenet5.nproc": 1})
    single = run([sys.executable, "stages/train.py", "--net", "lenet5"], one, two["mirror"])
    assert single.stdout.startswith("LeNet-5: training on 1 process on cpu, 2 threads\n")   # the CPU pin's 2
    metrics = {n: json.loads((r / "metrics/lenet5.json").read_text()) for n, r in (("two", repo), ("one", one))}
    # The same global batches and learning rate: only the order of float additions differs
    # (each rank sums its half, then gloo adds the halves), a float32 rounding (1.2e-7 of a
    # value) per sum. After the 12 AdamW steps the weights differed by at most 2.7e-8 and the
    # losses in the 8th digit on the machine this was written on; the bounds leave 40x room for
    # another machine's kernels. The held-out counts agree exactly.
    for key in ("epochs", "train_images", "test_images", "test_accuracy", "test_top5_accuracy"):
        assert metrics["two"][key] == metrics["one"][key], key
    for key in ("train_loss", "test_loss"):
        assert metrics["two"][key] == pytest.approx(metrics["one"][key], rel=1e-6), key
    two_weights = torch.load(repo / "models/lenet5.pt", weights_only=True)["state_dict"]
    one_weights = torch.load(one / "models/lenet5.pt", weights_only=True)["state_dict"]
    for name, weight in two_weights.items():
        torch.testing.assert_close(weight, one_weights[name], rtol=0, atol=1e-6)


def test_a_killed_rank_fails_in_one_line_keeps_the_last_good_outputs_and_resumes_to_the_same_bytes(two, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(two["repo"], repo, symlinks=True)
    (repo / "kill_rank_1.py").write_text(KILL_RANK_1)
    dvc_yaml = repo / "dvc.yaml"
    original = dvc_yaml.read_text()
    dvc_yaml.write_text(original.replace("cmd: python stages/train.py", "cmd: python kill_rank_1.py"))
    before = snapshot(repo)

    result = run(["dvc", "repro", "train@lenet5"], repo, two["mirror"], check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in ("training rank 1 of 2 failed first, killed by SIGKILL (exit code -9)",
                     "checkpoints/lenet5/torchrun.log",
                     "the last good outputs of train@lenet5 (dvc.lock) are back in place"):
        assert fragment in ours[0], ours[0]
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoints/")} == before
    assert not list(repo.rglob("*.tmp"))
    assert (repo / "checkpoints/lenet5/last.pt").is_file()
    assert "Root Cause" in (repo / "checkpoints/lenet5/torchrun.log").read_text()

    dvc_yaml.write_text(original)
    resumed = run([sys.executable, "stages/train.py", "--net", "lenet5"], repo, two["mirror"])
    assert "resuming from epoch 1" in resumed.stdout or "resuming from epoch 2" in resumed.stdout, resumed.stdout
    assert trained(repo) == two["outputs"]
    assert not (repo / "checkpoints/lenet5").exists()

