"""GoogLeNet through the registry: torchvision's net with its weights loaded as torchvision loads
them (aux heads in the file, the input transform) against ours (heads checked and left out,
the transform folded into the inputs), the receptive fields through the inception branches
against the support of torch's own input gradient, deconvnet and guided backprop against
Captum on the ReLU modules that replace torchvision's functional ReLUs, mining at an inception
module against brute force, and the ten Imagenette logits."""

import warnings

import numpy as np
import pytest
import torch
from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop
from oracles import out_of_place, rel_err
from torch import nn
from torchvision.models import GoogLeNet_Weights, googlenet

from cnn_internals.engine.hooks import forward_to
from cnn_internals.engine.mining import top_k_activations
from cnn_internals.engine.projection import project, receptive_field
from cnn_internals.models import NETS
from cnn_internals.models.imagenet import IMAGENETTE_LOGITS
from cnn_internals.models.transforms import IMAGENET_MEAN, IMAGENET_STD

NET = NETS["googlenet"]
CONFIG = {"augment": True, "lighting_std": 0.1}
# (maps, height, width) at 224: the ceil-mode pools give 56, 28, 14 and 7.
SHAPES = {"conv1": (64, 112, 112), "conv2": (64, 56, 56), "conv3": (192, 56, 56), "inception3a": (256, 28, 28),
          "inception3b": (480, 28, 28), "inception4a": (512, 14, 14), "inception4b": (512, 14, 14),
          "inception4c": (512, 14, 14), "inception4d": (528, 14, 14), "inception4e": (832, 14, 14),
          "inception5a": (832, 7, 7), "inception5b": (1024, 7, 7)}


def on_meta(builder, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(**kwargs)


@pytest.fixture(scope="module")
def pair():
    """torchvision's GoogLeNet as its weights builder makes it (aux heads, transform_input, no
    init) holding random weights and batch-norm statistics, and ours loaded from its state dict."""
    torch.manual_seed(0)
    reference = googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
    for module in reference.modules():       # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    model = on_meta(NET.build, config={**CONFIG, "weights": "imagenet"}).to_empty(device="cpu")
    NET.load_imagenet(model, reference.state_dict())
    return reference.eval(), model.eval()


def test_parameters_are_torchvisions_without_the_aux_heads_and_the_published_count():
    imagenet = on_meta(NET.build, config={**CONFIG, "weights": "imagenet"})
    scratch = on_meta(NET.build, config={**CONFIG, "weights": "scratch"})
    published = GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]
    assert sum(p.numel() for p in imagenet.parameters()) == published == 6_624_904
    assert sum(p.numel() for p in scratch.parameters()) == published - 990 * 1024 - 990
    assert NET.layers == tuple(SHAPES)
    with torch.no_grad():
        model = NET.build({**CONFIG, "weights": "scratch"}).eval()
        _, outs = forward_to(model, None, torch.zeros(1, 3, 224, 224), capture=NET.layers)
    assert {layer: tuple(out.shape[1:]) for layer, out in outs.items()} == SHAPES


def test_scores_on_our_inputs_equal_torchvisions_with_its_input_transform(pair):
    """The same uint8 images: ImageNet-normalised into torchvision's net (transform_input maps
    them to [-1, 1]), our inputs ((p - 0.5) / 0.5) into ours: the ten logits agree to rounding."""
    reference, model = pair
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8))
    stats = {"mean_image": np.zeros((256, 256, 3)), "pca_eigvals": np.ones(3), "pca_eigvecs": np.eye(3)}
    ours = NET.inputs(stats, {**CONFIG, "weights": "imagenet"}, "cpu").eval(images)
    pixels = images[:, 16:240, 16:240].permute(0, 3, 1, 2).float() / 255
    theirs = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(ours, (pixels - 0.5) / 0.5, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = reference(theirs)[:, list(IMAGENETTE_LOGITS)]
        got = model(ours)
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_loading_checks_the_aux_heads_keys_and_the_rest_strictly(pair):
    reference, _ = pair
    theirs = reference.state_dict()
    fresh = on_meta(NET.build, config={**CONFIG, "weights": "imagenet"})
    with warnings.catch_warnings():              # copies into meta tensors do nothing
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"missing \['aux1.fc2.bias'\]"):
            NET.load_imagenet(fresh, {k: v for k, v in theirs.items() if k != "aux1.fc2.bias"})
        with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"fc.0.bias\""):
            NET.load_imagenet(fresh, {k: v for k, v in theirs.items() if k != "fc.bias"})
        scratch = on_meta(NET.build, config={**CONFIG, "weights": "scratch"})
        with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"fc.0.weight\""):
            NET.load_imagenet(scratch, theirs)


def test_receptive_fields_by_hand_per_branch_of_an_inception_module():
    """r += (k-1)S, P += pS, S *= s: conv1 7/2/3; pool 3/2 -> (11, 4, 3); conv3 3x3 -> (19, 4, 7);
    pool 3/2 -> (27, 8, 7): (3a)'s 1x1 branch (maps 0-63); its 3x3 branches and its pool branch
    add 2S and S -> (43, 8, 15) (maps 64-255), which is also the union."""
    model = on_meta(NET.build, config={**CONFIG, "weights": "scratch"})
    size = NET.input_size
    assert [receptive_field(model, layer, size) for layer in ("conv1", "conv2", "conv3")] == [
        (7, 2, 3), (11, 4, 3), (19, 4, 7)]
    assert receptive_field(model, "inception3a", size, 0) == receptive_field(model, "inception3a", size, 63) == (27, 8, 7)
    for channel in (64, 191, 192, 223, 224, 255, None):
        assert receptive_field(model, "inception3a", size, channel) == (43, 8, 15)


@pytest.mark.parametrize("layer, firsts", [("inception3a", (0, 64, 192, 224)), ("inception4a", (0, 400)),
                                           ("inception5b", (0, 896))])
def test_each_branchs_field_is_the_support_of_torchs_input_gradient(layer, firsts):
    """A unit's field, clipped to the image, is exactly where d unit / d input is nonzero
    (random weights, float64, the unit that fires most in its map): per branch of the concat,
    through ceil-mode pools; at (5b) the field is wider than the image."""
    torch.manual_seed(0)
    model = NET.build({**CONFIG, "weights": "scratch"}).double().eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = forward_to(model, layer, x)[0][0]
    height = out.shape[-1]
    edge = 3 if height > 8 else 1
    for first in firsts:     # the first map from ``first`` on that fires inside the border
        channel = next(c for c in range(first, out.shape[0]) if out[c, edge:-edge, edge:-edge].max() > 0)
        inner = out[channel, edge:-edge, edge:-edge]
        row, col = divmod(int(inner.flatten().argmax()), inner.shape[1])
        row, col = row + edge, col + edge
        probe = x.clone().requires_grad_(True)
        forward_to(model, layer, probe)[0][0, channel, row, col].backward()
        support = probe.grad[0].abs().sum(0) > 0
        rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
        span, stride, pad = receptive_field(model, layer, NET.input_size, channel)
        for got, at in ((rows, row), (cols, col)):
            lo = at * stride - pad
            assert (int(got.min()), int(got.max())) == (max(lo, 0), min(lo + span - 1, 223)), (layer, channel)


@pytest.mark.parametrize("method, oracle", [("deconvnet", NeuronDeconvolution),
                                            ("guided_backprop", NeuronGuidedBackprop)])
def test_projections_match_captum_through_every_relu_module(method, oracle):
    """torchvision's blocks end in F.relu, which neither we nor Captum could see; ours are
    nn.ReLU modules, so both rules apply at every ReLU (and differ from the plain gradient)."""
    torch.manual_seed(0)
    model = NET.build({**CONFIG, "weights": "scratch"}).double().eval()
    images = torch.randn(3, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    channels, rows, cols = torch.tensor([3, 100, 300]), torch.tensor([1, 4, 6]), torch.tensor([5, 0, 3])
    ours = project(model, "inception3b", images, channels, rows, cols, method)
    gradient = project(model, "inception3b", images, channels, rows, cols, "gradient")
    with out_of_place(model) as twin:             # Captum on ordinary ReLUs, ours on the in-place ones
        ref = oracle(twin, twin.inception3b).attribute(images, lambda out: out[torch.arange(3), channels, rows, cols])
    assert ref.norm() > 0
    assert rel_err(ours, ref) <= 1e-10
    assert rel_err(gradient, ref) > 0.1


def test_mining_at_an_inception_module_equals_brute_force(pair):
    _, model = pair
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    got = top_k_activations(model, {"inception4e": "inception4e"}, torch.split(x, 3), 2)["inception4e"]
    with torch.no_grad():
        acts = forward_to(model, "inception4e", x)[0]                   # (6, 832, 4, 4)
    best, where = acts.flatten(2).max(2)                                  # (6, 832)
    order = sorted(range(6), key=lambda i: (-best[i, 5].item(), i))[:2]    # map 5, ties to the lower image
    assert got.images[5].tolist() == order
    assert got.values[5].tolist() == [best[i, 5].item() for i in order]
    assert [(r * 4 + c) for r, c in zip(got.rows[5].tolist(), got.cols[5].tolist())] == [where[i, 5].item()
                                                                                          for i in order]
    values, _ = torch.sort(best, 0, descending=True)
    torch.testing.assert_close(got.values, values[:2].T.to(got.values.dtype), atol=0, rtol=0)


def test_the_reports_architecture_has_a_row_per_shown_block_and_names_the_branch_fields():
    """GoogLeNet's shown layers are blocks (conv1 is conv + bn + ReLU, inception3a four
    branches): the architecture table (every leaf) gains their rows, after their children's,
    with their output shape, the union field and the block's parameters; the branch fields."""
    from cnn_internals.engine.projection import field_sizes
    from cnn_internals.viz.render import branch_note
    from cnn_internals.viz.report import architecture

    model = NET.build({**CONFIG, "weights": "scratch"})
    rows = {row["layer"]: row for row in architecture(model, NET.input_size, NET.layer_paths.values())}
    order = list(rows)
    for layer in NET.layers:
        assert rows[layer]["shape"] == SHAPES[layer]
        assert rows[layer]["params"] == sum(p.numel() for p in model.get_submodule(layer).parameters())
    assert order.index("inception3a") > order.index("inception3a.branch4.1.relu")
    assert rows["inception3a"]["field"] == (43, 8, 15) and rows["inception3a.branch1.conv"]["field"] == (27, 8, 7)
    assert field_sizes(model, "inception3a", NET.input_size) == [27, 43]
    assert field_sizes(model, "conv3", NET.input_size) == [19]
    assert branch_note(model, "inception3a", NET.input_size).endswith("its maps see 27, 43 px)")
    assert branch_note(model, "conv3", NET.input_size) == ""
