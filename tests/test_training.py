"""The training loop: a run stopped after any epoch and resumed ends in the same weights as
one that never stopped; a checkpoint from other params is not resumed."""

import torch
from torch import nn

from cnn_internals.training import Checkpoint, Recipe, train

RECIPE = Recipe(epochs=4, batch_size=8, lr=1e-2, seed=3)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 6, 6, generator=g)
    return x, (x.mean((1, 2, 3)) > 0).long()


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(48, 2))


def run(checkpoint, recipe=RECIPE):
    model = net()
    logs = []
    history = train(model, nn.functional.cross_entropy, data(), data(), recipe, checkpoint, log=logs.append)
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
