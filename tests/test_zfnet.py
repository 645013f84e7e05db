"""ZFNet (Zeiler & Fergus 2013) against the paper: figure 3's map sizes, the parameter count the
layer shapes give, receptive fields worked by hand, section 3's initialisation and section
4.1's filter renormalisation, and its registry entry."""

import math

import pytest
import torch

from cnn_internals.core.config import read_section
from cnn_internals.core.errors import UserError
from cnn_internals.engine.projection import receptive_field
from cnn_internals.models import NETS
from cnn_internals.models.zfnet import ZFNet, build_zfnet, renormalize_filters

# Figure 3: (maps, height, width) after each stage, for a 224x224x3 input.
FIGURE_3 = {
    "conv1": (96, 110, 110), "pool1": (96, 55, 55), "lrn1": (96, 55, 55),
    "conv2": (256, 26, 26), "pool2": (256, 13, 13), "lrn2": (256, 13, 13),
    "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool3": (256, 6, 6),
    "lin1": (4096,), "lin2": (4096,), "lin3": (10,),
}

# Weights + biases of each layer, from its shape: in x out x k x k + out.
PARAMETERS = {
    "conv1": 3 * 96 * 7 * 7 + 96,            # 14,208
    "conv2": 96 * 256 * 5 * 5 + 256,         # 614,656: dense, one GPU (AlexNet's conv2 read half)
    "conv3": 256 * 384 * 3 * 3 + 384,        # 885,120
    "conv4": 384 * 384 * 3 * 3 + 384,        # 1,327,488
    "conv5": 384 * 256 * 3 * 3 + 256,        # 884,992
    "lin1": 256 * 6 * 6 * 4096 + 4096,      # 37,752,832
    "lin2": 4096 * 4096 + 4096,              # 16,781,312
    "lin3": 4096 * 10 + 10,                  # 40,970
}

# Receptive fields by hand (size, stride, padding), r += (k-1)*S, P += p*S, S *= s:
# conv1 7x7/2 pad 1: (7, 2, 1); pool1 3x3/2: (7+2*2, 4, 1) = (11, 4, 1);
# conv2 5x5/2: (11+4*4, 8, 1) = (27, 8, 1); pool2 3x3/2: (27+2*8, 16, 1) = (43, 16, 1);
# conv3..5 3x3/1 pad 1: size +2*16, padding +16 each.
FIELDS = {"conv1": (7, 2, 1), "conv2": (27, 8, 1), "conv3": (75, 16, 17), "conv4": (107, 16, 33),
          "conv5": (139, 16, 49)}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_zfnet(10).eval()


def test_map_sizes_are_figure_3s(net):
    shapes = {}
    hooks = [getattr(net, name).register_forward_hook(
        lambda m, a, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))) for name in FIGURE_3]
    with torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    assert shapes == FIGURE_3


def test_parameter_count_is_what_the_layer_shapes_give(net):
    counted = {name: sum(p.numel() for p in m.parameters()) for name, m in net.named_children()
               if any(True for _ in m.parameters())}
    assert counted == PARAMETERS
    assert sum(PARAMETERS.values()) == 58_301_578


def test_receptive_fields_match_the_hand_computation(net):
    assert {layer: receptive_field(net, layer, (3, 224, 224)) for layer in FIELDS} == FIELDS


def test_paper_initialisation_is_n_0_001_with_zero_biases():
    torch.manual_seed(1)
    model = build_zfnet(10, "paper")
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
    assert weights.mean().abs() < 1e-4 and abs(weights.std().item() - 0.01) < 1e-4
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_filters_above_the_radius_are_scaled_back_to_it_and_the_others_left_alone():
    torch.manual_seed(2)
    model = ZFNet(10, filter_rms=0.1)
    with torch.no_grad():
        for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            weight = getattr(model, layer).weight
            weight.normal_(0.0, 0.02)
            weight[::2] *= 10                          # every other filter: RMS about 0.2
    before = {name: getattr(model, name).weight.detach().clone() for name in ("conv1", "conv5")}
    model.train()
    model(torch.zeros(2, 3, 224, 224))                 # renormalises first
    for name, old in before.items():
        new = getattr(model, name).weight.detach()
        for f in range(old.shape[0]):
            rms = math.sqrt(float((old[f].double() ** 2).mean()))
            if rms > 0.1:                                  # same direction, RMS exactly the radius
                torch.testing.assert_close(new[f], old[f] * (0.1 / rms), rtol=1e-6, atol=0)
                assert math.isclose(math.sqrt(float((new[f].double() ** 2).mean())), 0.1, rel_tol=1e-6)
            else:
                assert torch.equal(new[f], old[f])
    assert any(math.sqrt(float((f.double() ** 2).mean())) > 0.1 for f in before["conv1"])
    # Not in evaluation (mining, pictures): the trained weights are what is seen.
    model.eval()
    snapshot = model.conv1.weight.detach().clone()
    with torch.no_grad():
        model.conv1.weight.mul_(3)
        model(torch.zeros(1, 3, 224, 224))
    assert torch.equal(model.conv1.weight, snapshot * 3)


def test_renormalisation_off_with_zero_radius():
    torch.manual_seed(3)
    model = ZFNet(10, filter_rms=0.0).train()
    with torch.no_grad():
        model.conv1.weight.mul_(100)
    before = model.conv1.weight.detach().clone()
    model(torch.zeros(1, 3, 224, 224))
    assert torch.equal(model.conv1.weight, before)
    renormalize_filters(model, 0.1)
    assert float(model.conv1.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt().max()) == pytest.approx(0.1, rel=1e-6)


def test_registry_entry_builds_the_net_the_params_describe():
    net = NETS["zfnet"]
    assert (net.dataset, net.layers, net.input_size) == ("imagenette", ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                                        "fc6", "fc7"), (3, 224, 224))
    assert net.module_path("fc6") == "lin1" and net.module_path("fc7") == "lin2"
    p = {"weight_init": "kaiming", "normalize": "paper", "augment": True, "lighting_std": 0.0, "filter_rms": 0.05}
    model = net.build(p)
    assert isinstance(model, ZFNet) and model.filter_rms == 0.05
    assert set(net.config.model_fields) == set(p) | {"weights"}
    with pytest.raises(UserError, match="train.zfnet.filter_rms must be >= 0, got -1"):
        read_section({"train": {"zfnet": {**p, "filter_rms": -1}}}, "train.zfnet", net.config)
    with pytest.raises(UserError, match="train.zfnet.weight_init must be one of paper, kaiming; got 'xavier'"):
        read_section({"train": {"zfnet": {**p, "weight_init": "xavier"}}}, "train.zfnet", net.config)


def test_the_training_loop_learns_with_the_filters_held_to_the_radius(tmp_path):
    """The real loop, inputs and model on five fixture photos of five classes: the loss falls,
    and every conv filter ends within one update of the radius, although kaiming's conv1
    starts above it (RMS sqrt(2/147) = 0.117)."""
    import numpy as np

    from cnn_internals.data.imagenette import prepare_imagenette
    from cnn_internals.data.prepared import Split, read_split
    from cnn_internals.data.statistics import image_statistics
    from cnn_internals.training.loop import Checkpoint, train
    from cnn_internals.training.recipe import Recipe

    from imagenette_fixture import build_archive

    built = build_archive(tmp_path / "a.tgz", per_class={"train": 1, "val": 1}, corrupt=False)
    prepare_imagenette(built["path"], tmp_path / "prepared", workers=1)
    full = read_split(tmp_path / "prepared", "train", "")
    keep = np.flatnonzero(full.labels < 5)
    split = Split(images=np.asarray(full.images[keep]), labels=full.labels[keep], classes=full.classes)
    p = {"weight_init": "kaiming", "normalize": "standardize", "augment": False, "lighting_std": 0.0,
         "filter_rms": 0.1}
    net = NETS["zfnet"]
    inputs = net.inputs(image_statistics(split.images), p, torch.device("cpu"))
    torch.manual_seed(0)
    model = net.build(p)
    assert float(model.conv1.weight.detach().pow(2).mean().sqrt()) > 0.11
    lr = 1e-4
    recipe = Recipe(epochs=3, batch_size=5, lr=lr, seed=0, optimizer="adamw", schedule="constant")
    history = train(model, net.loss(p), inputs, split, split, recipe, Checkpoint(tmp_path / "ckpt", "t"),
                    log=lambda s: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        rms = getattr(model, name).weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
        assert float(rms.max()) <= 0.1 + 10 * lr, name      # AdamW moves a weight about lr a step
