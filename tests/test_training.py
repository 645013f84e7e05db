"""The training loop: a run stopped after any epoch and resumed ends in the same weights as
one that never stopped (augmentation draws and dropout included); a checkpoint from other
params, or one that does not fit the model, is not resumed; a diverging loss stops the run."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cnn_internals.core.errors import UserError
from cnn_internals.data.prepared import Split
from cnn_internals.training.loop import Checkpoint, evaluate, train
from cnn_internals.training.recipe import Recipe

RECIPE = Recipe(epochs=4, batch_size=8, lr=1e-2, seed=3)


class FlipInputs:
    """uint8 (B, 6, 6) -> (B, 1, 6, 6) in [-0.5, 0.5]; training flips half the images at random."""

    def eval(self, images):
        return images.float().unsqueeze(1) / 255 - 0.5

    def train(self, images, generator):
        flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
        x = self.eval(images)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def views(self, images):
        return [self.eval(images), self.eval(images).flip(-1)]


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    return Split(images=x, labels=(x.reshape(40, -1).mean(1) > 127.5).astype(np.int64), classes=("dark", "light"))


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(48, 2))


def run(checkpoint, recipe=RECIPE):
    model = net()
    logs = []
    history = train(model, nn.functional.cross_entropy, FlipInputs(), data(), data(), recipe, checkpoint,
                    log=logs.append)
    return model.state_dict(), history, logs


class Stop(Exception):
    pass


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    whole, history, _ = run(Checkpoint(tmp_path / "a", "tag"))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for stop_after in (1, 3):
        checkpoint = Checkpoint(tmp_path / f"b{stop_after}", "tag")
        save = checkpoint.save

        def save_then_stop(state, save=save, stop_after=stop_after):
            save(state)
            if state["epoch"] == stop_after:
                raise Stop

        checkpoint.save = save_then_stop
        try:
            run(checkpoint)
        except Stop:
            pass
        checkpoint.save = save
        resumed, resumed_history, logs = run(checkpoint)
        assert f"resuming from epoch {stop_after}" in logs
        assert resumed_history == history
        assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    Checkpoint(tmp_path, "old-params").save({"epoch": 2})
    _, history, logs = run(Checkpoint(tmp_path, "new-params"))
    assert not any(line.startswith("resuming") for line in logs)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_checkpoint_that_does_not_fit_the_model_is_discarded_with_a_notice(tmp_path):
    checkpoint = Checkpoint(tmp_path, "tag")
    checkpoint.save({"epoch": 2, "model": {"0.weight": torch.zeros(1)}, "optimizer": {}, "scheduler": {},
                     "history": []})
    _, history, logs = run(checkpoint)
    assert any(line.startswith("notice: the checkpoint does not fit") for line in logs)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_diverging_loss_stops_training_naming_the_epoch_and_keeps_the_last_checkpoint(tmp_path):
    checkpoint = Checkpoint(tmp_path, "tag")
    calls = []

    calls_per_epoch = 40 // 8 + 1            # five training batches and one evaluation batch

    def loss_fn(scores, targets):            # finite in epoch 1, NaN from epoch 2 on
        calls.append(1)
        loss = nn.functional.cross_entropy(scores, targets)
        return loss * float("nan") if len(calls) > calls_per_epoch else loss
    with pytest.raises(UserError, match="loss became nan in epoch 2"):
        train(net(), loss_fn, FlipInputs(), data(), data(), RECIPE, checkpoint, log=lambda s: None)
    assert torch.load(checkpoint.path, weights_only=True)["epoch"] == 1


def test_evaluate_top1_top5_and_multiview_match_a_direct_computation():
    model = net().eval()
    split, inputs = data(), FlipInputs()
    result = evaluate(model, nn.functional.cross_entropy, inputs, split, torch.device("cpu"), batch_size=7,
                      views=True)
    x, y = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    with torch.no_grad():
        scores = model(inputs.eval(x))
        averaged = sum(model(v).softmax(1) for v in inputs.views(x))
    assert result["accuracy"] == pytest.approx((scores.argmax(1) == y).double().mean().item())
    assert result["top5_accuracy"] == 1.0                      # two classes: always in the top 5
    assert result["views_accuracy"] == pytest.approx((averaged.argmax(1) == y).double().mean().item())
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(scores, y).item(), rel=1e-6)


def test_zero_epochs_trains_nothing_and_its_one_row_is_the_initial_models_evaluation(tmp_path):
    checkpoint = Checkpoint(tmp_path, "tag")
    model, initial = net(), net()
    history = train(model, nn.functional.cross_entropy, FlipInputs(), data(), data(), RECIPE.model_copy(update={"epochs": 0}),
                    checkpoint, log=lambda s: None)
    expected = evaluate(initial, nn.functional.cross_entropy, FlipInputs(), data(), torch.device("cpu"))
    (row,) = history
    assert {k: row[k] for k in ("epoch", "test_loss", "test_accuracy", "test_top5_accuracy")} == {
        "epoch": 0, "test_loss": expected["loss"], "test_accuracy": expected["accuracy"],
        "test_top5_accuracy": expected["top5_accuracy"]}
    assert all(math.isnan(row[k]) for k in ("lr", "train_loss", "train_accuracy"))   # nothing was trained
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in model.state_dict().items())
    assert not checkpoint.path.exists()


def test_train_stage_with_zero_epochs_writes_its_four_files_from_the_initial_model(tmp_path, monkeypatch):
    """stages/train.py on LeNet-5 with epochs 0, in a project folder of its own: the model file
    holds the initial weights; the metrics and confusion are those weights' evaluation; the
    history is one epoch-0 row that the report reads; no train_loss is claimed."""
    import json
    import runpy

    from cnn_internals.core import project
    from cnn_internals.data.prepared import write_classes, write_split
    from cnn_internals.data.statistics import image_statistics, save_statistics
    from cnn_internals.models import NETS
    from cnn_internals.pipeline.artifacts import metrics_paths, read_metrics

    from imports import REPO

    rng = np.random.default_rng(0)
    prepared = tmp_path / "data/prepared/mnist"
    splits = {"train": 30, "test": 20}
    for split, n in splits.items():
        write_split(prepared, split, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
    write_classes(prepared, [{"name": str(d)} for d in range(10)])
    save_statistics(image_statistics(np.load(prepared / "train_images.npy")), tmp_path / "data/stats/mnist")
    p = {"epochs": 0, "batch_size": 8, "lr": 0.001, "optimizer": "adamw", "weight_decay": 0.0, "schedule": "cosine",
         "seed": 4, "nproc": 1, "device": "cpu", "j": 5.0, "c3_table": True, "prototypes": "fixed",
         "normalize": "paper", "amp": True, "untrained": True}
    (tmp_path / "params.yaml").write_text(json.dumps({"train": {"lenet5": p}}))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")          # the project root the stage enters
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "stages"))
    monkeypatch.setattr(project, "_STARTED_IN", None)              # the stage's enter_root sets it
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        runpy.run_path(str(REPO / "stages/train.py"))["main"](["--net", "lenet5"])
    finally:
        torch.use_deterministic_algorithms(deterministic)

    net = NETS["lenet5"]
    torch.manual_seed(4)
    initial = net.build(p).eval()
    saved = torch.load(tmp_path / "models/lenet5.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in initial.state_dict().items())
    test = Split(np.load(prepared / "test_images.npy"), np.load(prepared / "test_labels.npy"), tuple("0123456789"))
    expected = evaluate(initial, net.loss(p), net.inputs(None, p, "cpu"), test, torch.device("cpu"))
    paths = {key: tmp_path / path for key, path in metrics_paths(net).items()}
    run = read_metrics(paths, test.classes, "rerun")
    assert run["metrics"]["epochs"] == 0 and "train_loss" not in run["metrics"]
    assert run["metrics"]["test_accuracy"] == round(expected["accuracy"], 6)
    (row,) = run["history"]
    assert row["epoch"] == 0 and math.isnan(row["train_loss"])
    assert row["test_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert np.trace(run["confusion"]) == (expected["predictions"].numpy() == test.labels).sum()


FAULTS_OF_STEPS = """
import resource, sys, torch
from cnn_internals.runtime.device import keep_host_memory
if sys.argv[1] == "keep":
    assert keep_host_memory()

def step():   # minor page faults of a step's worth of large blocks: made, written, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.ones(n << 20) for n in (10, 6, 14, 3)]      # 40, 24, 56 and 12 MB
    grads = [m * 2 for m in maps]
    del maps, grads
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(*[step() for _ in range(10)])
"""


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_cpu_step_of_the_loop_equals_a_tutorial_step_of_the_reference_forms(tmp_path, optimizer):
    """The loop's CPU choices -- channels-last, LeNet-5's fused scaled tanh, torch's fused
    optimizer kernel -- against one step written as a tutorial would: NCHW, the model's
    reference forward (A * tanh(S * x)), torch's default optimizer implementation. The update
    each parameter gets must agree to float32 rounding."""
    from cnn_internals.engine.activations import ScaledTanh
    from cnn_internals.models.lenet5 import LeNet5, LeNetInputs, lenet5_loss

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    split = Split(images=images, labels=rng.integers(0, 10, 16).astype(np.int64), classes=tuple("0123456789"))
    inputs = LeNetInputs(-0.1, 1.175)
    torch.manual_seed(0)
    model = LeNet5()
    with torch.no_grad():                 # off its init, so that every unit's gradient is sizeable
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = LeNet5()
    reference.load_state_dict(before)
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, seed=0, optimizer=optimizer, weight_decay=1e-3,
                    momentum=0.9, schedule="constant")
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, out: seen.append(type(out.grad_fn).__name__))
             for m in model.modules() if isinstance(m, ScaledTanh)]
    train(model, lenet5_loss, inputs, split, split, recipe, Checkpoint(tmp_path, "t"), log=lambda s: None)
    for hook in hooks:
        hook.remove()
    assert "ScaledTanhFunctionBackward" in seen                    # the loop's step ran the fused form

    if optimizer == "sgd":
        opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    else:
        opt = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=1e-3)
    reference.train()
    loss = lenet5_loss(reference(inputs.eval(torch.from_numpy(images))), torch.from_numpy(split.labels))
    loss.backward()
    opt.step()
    for name, param in reference.named_parameters():
        ours, theirs = model.state_dict()[name] - before[name], param.detach() - before[name]
        assert theirs.abs().max() > 1e-3, name
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=2e-6), (name, (ours - theirs).abs().max())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_host_memory_stops_the_page_faults_of_steps_of_large_blocks():
    """The kernel's own count (getrusage) of the page faults of a step that makes, writes and
    frees 264 MB in blocks over glibc's mmap threshold, as AlexNet's maps are: by default every
    step maps fresh zeroed pages (67,584 of 4 KiB, or one per huge page); after
    keep_host_memory the heap grows over the first steps and then serves them without one.

    Most steps, not every one: where a freed block lands in the heap varies from run to run, and
    now and then a step still carves one block from fresh top-of-heap pages (seen once in CI:
    3,072 faults, the 12 MB block, in the sixth step)."""
    def faults(mode):
        done = subprocess.run([sys.executable, "-c", FAULTS_OF_STEPS, mode], capture_output=True, text=True,
                              check=True)
        return [int(v) for v in done.stdout.split()]

    default, kept = faults("default"), faults("keep")
    assert min(default[1:]) >= 100                                   # every default step maps fresh pages
    steady = sorted(kept[2:])
    assert steady[len(steady) // 2] * 100 <= min(default[1:])      # most kept steps take none
    assert sum(kept[2:]) * 10 <= sum(default[2:])
