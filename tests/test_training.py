"""The training loop: a run stopped after any epoch and resumed ends in the same weights as
one that never stopped (augmentation draws and dropout included); a checkpoint from other
params, or one that does not fit the model, is not resumed; a diverging loss stops the run."""

import numpy as np
import pytest
import torch
from torch import nn

from cnn_internals.data.prepared import Split
from cnn_internals.errors import UserError
from cnn_internals.training import Checkpoint, Recipe, evaluate, train

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
