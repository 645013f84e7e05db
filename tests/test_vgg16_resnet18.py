"""VGG-16 and ResNet-18 through the registry: torchvision's nets, their parameter counts (with
10 and 1000 classes, and the published figures), the shown layers by paper name against
their module paths and output shapes, the ten Imagenette logits of a net loaded with
torchvision's state dict, mining at a paper-named layer against brute force, the
ImageNet-normalised inputs against a per-image reference, and the weights key's checks."""

import warnings

import numpy as np
import pytest
import torch
from oracles import brute_force_top_k
from reference_transforms import naive_alexnet_inputs_with
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18, vgg16

from cnn_internals.core.errors import UserError
from cnn_internals.data.imagenette import CLASSES
from cnn_internals.engine.mining import top_k_activations
from cnn_internals.engine.projection import receptive_field
from cnn_internals.models import NETS
from cnn_internals.models.imagenet import IMAGENETTE_LOGITS
from cnn_internals.models.transforms import IMAGENET_MEAN, IMAGENET_STD, ChannelNormalizedInputs
from cnn_internals.pipeline.config import read_train, train_key
from cnn_internals.viz.render import cam_layer
from cnn_internals.viz.report import architecture_row

BUILDERS = {"vgg16": vgg16, "resnet18": resnet18}
PUBLISHED = {"vgg16": 138_357_544, "resnet18": 11_689_512}       # torchvision's docs, 1000 classes
# (maps, height, width) of each shown layer at 224: VGG's five stacks end at full, 1/2, 1/4, 1/8
# and 1/16 of the input; ResNet's conv1 has stride 2 and each conv<n>_x halves after conv2_x's pool.
SHAPES = {
    "vgg16": {"conv1_2": (64, 224, 224), "conv2_2": (128, 112, 112), "conv3_3": (256, 56, 56),
              "conv4_3": (512, 28, 28), "conv5_3": (512, 14, 14), "fc6": (4096,), "fc7": (4096,)},
    "resnet18": {"conv1": (64, 112, 112), "conv2_x": (64, 56, 56), "conv3_x": (128, 28, 28),
                 "conv4_x": (256, 14, 14), "conv5_x": (512, 7, 7)},
}
# Receptive fields (size, stride, padding) by hand, r += (k-1)*S, P += p*S, S *= s. VGG-16: 3x3
# convs with padding 1 add 2S to the size and S to the padding, 2x2 pools double S and add S.
# ResNet-18: conv1 7/2/3; pool 3/2/1 -> (11, 4, 5); each 3x3 conv adds 2S and S; the first conv
# of layers 2-4 has stride 2 (the 1x1 shortcut's field lies inside the main path's).
FIELDS = {
    "vgg16": {"conv1_2": (5, 1, 2), "conv2_2": (14, 2, 6), "conv3_3": (40, 4, 18), "conv4_3": (92, 8, 42),
              "conv5_3": (196, 16, 90)},
    "resnet18": {"conv1": (7, 2, 3), "conv2_x": (43, 4, 21), "conv3_x": (99, 8, 49), "conv4_x": (211, 16, 105),
                 "conv5_x": (435, 32, 217)},
}
SMALL = {"vgg16": 32, "resnet18": 64}           # image sizes that keep the CPU tests quick
CONFIG = {"augment": True, "lighting_std": 0.1}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(builder, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(**kwargs)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imagenet_pair(request):
    """(name, torchvision's 1000-class net, ours built with weights: imagenet and loaded with
    the torchvision net's state dict), both in eval mode."""
    name = request.param
    torch.manual_seed(0)
    reference = BUILDERS[name](weights=None)
    net = NETS[name]
    model = on_meta(net.build, config={**CONFIG, "weights": "imagenet"}).to_empty(device="cpu")
    net.load_imagenet(model, reference.state_dict())
    return name, reference.eval(), model.eval()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_parameter_counts_are_torchvisions_with_10_and_1000_classes_and_the_published_ones(name):
    net = NETS[name]
    scratch = on_meta(net.build, config={**CONFIG, "weights": "scratch"})
    imagenet = on_meta(net.build, config={**CONFIG, "weights": "imagenet"})
    assert count(scratch) == count(on_meta(BUILDERS[name], num_classes=10))
    assert count(imagenet) == count(on_meta(BUILDERS[name], num_classes=1000)) == PUBLISHED[name]
    assert count(scratch) == PUBLISHED[name] - 990 * (4096 if name == "vgg16" else 512) - 990   # the head alone


def test_resnet18s_shortcuts_are_option_b_three_projections_of_173_824_parameters():
    model = on_meta(resnet18)
    projections = {name: m for name, m in model.named_modules() if name.endswith("downsample")}
    assert sorted(projections) == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]
    assert all(m[0].kernel_size == (1, 1) and m[0].stride == (2, 2) for m in projections.values())
    assert sum(count(m) for m in projections.values()) == 173_824


@pytest.mark.parametrize("weights", ["scratch", "imagenet"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_shown_layers_are_convolutions_with_the_papers_shapes_at_224(name, weights):
    net = NETS[name]
    assert net.input_size == (3, 224, 224) and net.dataset == "imagenette"
    assert tuple(net.layer_paths) == net.layers == tuple(SHAPES[name])
    model = on_meta(net.build, config={**CONFIG, "weights": weights})
    shapes = {}
    for layer, path in net.layer_paths.items():
        module = model.get_submodule(path)
        assert isinstance(module, nn.Linear if layer.startswith("fc") else nn.Conv2d), (layer, path)
        module.register_forward_hook(lambda m, a, out, layer=layer: shapes.__setitem__(layer, tuple(out.shape[1:])))
    out = model(torch.zeros(2, *net.input_size, device="meta"))
    assert shapes == SHAPES[name] and out.shape == (2, 10)


def test_vgg16s_shown_layers_are_each_stacks_last_convolution():
    """Derived from torchvision's module list: the conv right before each max pool."""
    features = on_meta(vgg16).features
    before_pools = [f"features.{i - 2}" for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    assert all(isinstance(features[int(p.split(".")[1])], nn.Conv2d) for p in before_pools)
    paths = NETS["vgg16"].layer_paths
    assert list(paths.values())[:5] == before_pools
    # fc6 and fc7: the classifier's two hidden Linear layers (4096 units each), before their ReLUs
    classifier = on_meta(vgg16).classifier
    assert [paths["fc6"], paths["fc7"]] == [f"classifier.{i}" for i, m in enumerate(classifier)
                                             if isinstance(m, nn.Linear) and m.out_features == 4096]
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)


def test_resnet18s_shown_layers_are_conv1_and_each_stages_last_convolution():
    model = on_meta(resnet18)
    last = [[name for name, m in model.named_modules() if name.startswith(f"layer{i}.") and isinstance(m, nn.Conv2d)
             and "downsample" not in name][-1] for i in (1, 2, 3, 4)]
    assert list(NETS["resnet18"].layer_paths.values()) == ["conv1"] + last


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_receptive_fields_of_the_shown_layers_match_the_hand_computation(name):
    net = NETS[name]
    model = on_meta(net.build, config={**CONFIG, "weights": "scratch"})
    assert {layer: receptive_field(model, net.module_path(layer), net.input_size)
            for layer in net.layers if not layer.startswith("fc")} == FIELDS[name]
    for layer in set(net.layers) - set(FIELDS[name]):      # a fully connected unit sees the whole input
        with pytest.raises(ValueError, match="undefined"):
            receptive_field(model, net.module_path(layer), net.input_size)


def test_the_ten_logits_are_imagenettes_classes_in_its_order():
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]    # ImageNet's 1000, torchvision's order
    assert [categories[i] for i in IMAGENETTE_LOGITS] == [name for _, name in CLASSES]
    assert IMAGENETTE_LOGITS == (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


def test_loaded_net_scores_equal_torchvisions_logits_at_the_ten_classes(imagenet_pair):
    name, reference, model = imagenet_pair
    x = torch.randn(3, 3, SMALL[name], SMALL[name], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)[:, list(IMAGENETTE_LOGITS)])


def test_loading_is_strict_and_keeps_torchvisions_state_dict_but_for_the_head(imagenet_pair):
    name, reference, model = imagenet_pair
    head = "classifier.6" if name == "vgg16" else "fc"
    theirs, ours = reference.state_dict(), model.state_dict()
    assert set(ours) == {k.replace(f"{head}.", f"{head}.0.") if k.startswith(f"{head}.") else k for k in theirs}
    net = NETS[name]
    fresh = on_meta(net.build, config={**CONFIG, "weights": "imagenet"})     # on meta: the checks, no copies
    scratch = on_meta(net.build, config={**CONFIG, "weights": "scratch"})
    with warnings.catch_warnings():              # torch notes that copies into meta tensors do nothing
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=rf"Missing key\(s\) in state_dict: \"{head}.0.bias\""):
            net.load_imagenet(fresh, {k: v for k, v in theirs.items() if k != f"{head}.bias"})
        with pytest.raises(RuntimeError, match=rf"Unexpected key\(s\) in state_dict: \"{head}.0.weight\""):
            net.load_imagenet(scratch, theirs)


def test_mining_at_paper_named_layers_equals_brute_force_at_their_module_paths(imagenet_pair):
    name, _, model = imagenet_pair
    net = NETS[name]
    x = torch.randn(7, 3, SMALL[name], SMALL[name], generator=torch.Generator().manual_seed(2))
    deepest = net.layers[-1]
    layers = {layer: net.module_path(layer) for layer in (net.layers[1], deepest)}
    got = top_k_activations(model, layers, torch.split(x, 3), 3)
    assert list(got) == list(layers)                                    # keyed by the paper names
    acts = {layer: [] for layer in layers}          # every activation, batch by batch as mined
    hooks = [model.get_submodule(path).register_forward_hook(
        lambda m, a, out, layer=layer: acts[layer].append(out.detach().clone())) for layer, path in layers.items()]
    with torch.no_grad():
        for batch in torch.split(x, 3):
            model(batch)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        expected = {f: torch.from_numpy(a) for f, a in brute_force_top_k(torch.cat(acts[layer]), 3).items()}
        for field in ("values", "images", "rows", "cols"):
            if field not in expected:                  # a fully connected layer: no positions
                assert getattr(got[layer], field) is None
                continue
            assert torch.equal(getattr(got[layer], field).to(expected[field].dtype), expected[field]), (layer, field)


def test_the_report_names_layers_by_paper_name_and_reaches_them_by_path():
    net = NETS["resnet18"]
    assert cam_layer(net, SHAPES["resnet18"]) == "conv5_x"
    row = {"layer": "layer4.1.conv2", "kind": "Conv2d", "shape": (512, 7, 7), "field": (435, 32, 217), "params": 1}
    assert architecture_row(net, row)["name"] == "conv5_x" and architecture_row(net, row)["shown"] == "conv5_x"
    conv1 = architecture_row(net, {**row, "layer": "conv1"})
    assert conv1["name"] is None and conv1["shown"] == "conv1"          # its paper name is its path
    assert architecture_row(net, {**row, "layer": "layer4.1.bn2"})["shown"] is None
    assert net.shown_name("features.28") is None and NETS["vgg16"].shown_name("features.28") == "conv5_3"
    with pytest.raises(ValueError, match="shows no layer 'layer4.1.conv2'"):
        net.module_path("layer4.1.conv2")


# ---------------------------------------------------------------- inputs

def test_inputs_are_imagenet_normalised_crops_of_the_per_image_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 40, 44, 3), dtype=np.uint8)
    eigvals, eigvecs = np.array([0.05, 0.01, 0.002]), np.linalg.qr(rng.normal(size=(3, 3)))[0]
    inputs = ChannelNormalizedInputs(40, 44, eigvals, eigvecs, "cpu", crop=32, lighting_std=0.1)
    mean_image = np.broadcast_to(np.array(IMAGENET_MEAN), (40, 44, 3))
    std = np.array(IMAGENET_STD)[:, None, None]

    def reference(tops, lefts, flips, alphas):
        x = naive_alexnet_inputs_with(images, mean_image, eigvals, eigvecs, 1.0, tops, lefts, flips, alphas, crop=32)
        return torch.from_numpy(x / std).float()

    train = inputs.train(torch.from_numpy(images), torch.Generator().manual_seed(3))
    draw = torch.Generator().manual_seed(3)
    tops, lefts = torch.randint(0, 9, (4,), generator=draw), torch.randint(0, 13, (4,), generator=draw)
    flips = torch.randint(0, 2, (4,), generator=draw).bool()
    alphas = torch.randn(4, 3, generator=draw) * 0.1
    torch.testing.assert_close(train, reference(tops, lefts, flips, alphas.numpy()), atol=2e-6, rtol=0)
    centre = inputs.eval(torch.from_numpy(images))
    torch.testing.assert_close(centre, reference([4] * 4, [6] * 4, [False] * 4, None), atol=2e-6, rtol=0)
    shown = inputs.display(centre).permute(0, 2, 3, 1)
    torch.testing.assert_close(shown, torch.from_numpy(images[:, 4:36, 6:38] / 255).float(), atol=1e-6, rtol=0)
    assert len(inputs.views(torch.from_numpy(images))) == 10


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_registry_inputs_read_augment_and_lighting_and_use_imagenets_statistics(name):
    stats = {"mean_image": np.zeros((256, 256, 3)), "pca_eigvals": np.ones(3), "pca_eigvecs": np.eye(3)}
    inputs = NETS[name].inputs(stats, {"weights": "scratch", "augment": False, "lighting_std": 0.0}, "cpu")
    grey = torch.full((1, 256, 256, 3), 128, dtype=torch.uint8)
    x = inputs.train(grey, torch.Generator())
    assert x.shape == (1, 3, 224, 224)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 100, 100], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- params

def recipe(**overrides) -> dict:
    return {"epochs": 0, "batch_size": 4, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0,
            "schedule": "plateau", "seed": 0, "nproc": 1, "device": "cpu", "weights": "imagenet",
            "augment": True, "lighting_std": 0.1, **overrides}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_weights_is_a_model_key_checked_with_the_train_block(name):
    net = NETS[name]
    assert set(net.config.model_fields) == {"weights", "augment", "lighting_std"}
    assert read_train({"train": {name: recipe()}}, net).epochs == 0          # epochs 0: evaluate only
    assert train_key({"train": {name: recipe(weights="scratch")}}, net, "weights") == "scratch"
    with pytest.raises(UserError, match=rf"train.{name}.weights must be one of scratch, imagenet; got 'pretrained'"):
        read_train({"train": {name: recipe(weights="pretrained")}}, net)
    bad_input = recipe()
    del bad_input["weights"]
    with pytest.raises(UserError, match=rf"missing key 'train.{name}.weights'"):
        read_train({"train": {name: bad_input}}, net)


@pytest.mark.parametrize("name,why", [("alexnet", "torchvision's AlexNet is not the paper's"),
                                      ("zfnet", "torchvision publishes no ZFNet weights"),
                                      ("lenet5", "MNIST net")])
def test_imagenet_weights_are_refused_in_one_line_for_nets_without_them(name, why):
    net = NETS[name]
    assert net.load_imagenet is None
    assert train_key({"train": {name: {}}}, net, "weights") == "scratch"            # no key: from scratch
    assert train_key({"train": {name: {"weights": "scratch"}}}, net, "weights") == "scratch"
    with pytest.raises(UserError) as refused:
        train_key({"train": {name: {"weights": "imagenet"}}}, net, "weights")
    message = str(refused.value)
    assert why in message and f"train.{name}.weights = imagenet" in message and "\n" not in message
