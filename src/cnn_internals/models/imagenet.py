"""What the nets torchvision publishes ImageNet weights for share: their inputs, a dataset's
logits out of a 1000-class net, and loading torchvision's state dict.

Imagenette's ten classes are ImageNet classes, and so are those of any dataset whose class
folders are ImageNet wnids (data/imagefolder.py). A net trained on ImageNet is scored on such a
dataset by reading its scores at those classes, in the dataset's order: no new head, nothing to
fit. ``weights: imagenet`` builds torchvision's 1000-class net and puts ``ImagenetteLogits``
right after its last linear layer (``head``), which becomes ``Sequential(linear,
ImagenetteLogits)``: the loss, evaluation, Grad-CAM and the confusion matrix all see the
dataset's scores. On a dataset of other classes, ``weights: imagenet`` builds the net with a
fresh head of the dataset's size, which training must fit (``epochs > 0``): every other weight
is torchvision's. ``weights: scratch`` builds the net with a head of the dataset's size.
"""

import numpy as np
import torch
from torch import nn

from cnn_internals.core.config import NonNegative
from cnn_internals.data.imagenette import CLASSES
from cnn_internals.models.registry import WEIGHTS, Classes, NetConfig, Weights
from cnn_internals.models.transforms import IMAGENET_MEAN, IMAGENET_STD, ChannelNormalizedInputs

# ImageNet's class index (torchvision's order: the 1000 wnids sorted) of each Imagenette class,
# in Imagenette's order (data.imagenette.CLASSES, also sorted by wnid).
IMAGENETTE_IN_IMAGENET = {
    "n01440764": 0,      # tench
    "n02102040": 217,    # English springer
    "n02979186": 482,    # cassette player
    "n03000684": 491,    # chain saw
    "n03028079": 497,    # church
    "n03394916": 566,    # French horn
    "n03417042": 569,    # garbage truck
    "n03425413": 571,    # gas pump
    "n03445777": 574,    # golf ball
    "n03888605": 701,    # parachute
}
IMAGENETTE_LOGITS = tuple(IMAGENETTE_IN_IMAGENET[wnid] for wnid, _ in CLASSES)
# The registry's default for the nets on Imagenette: its ten classes at those logits.
IMAGENETTE = Classes(tuple(name for _, name in CLASSES), IMAGENETTE_LOGITS)


class ImagenetteLogits(nn.Module):
    """(B, 1000) ImageNet scores -> (B, n) the scores of a dataset's classes, in its order
    (Imagenette's ten by default).
    No parameters and no state: the model's state dict stays torchvision's (but for the
    head's renaming), and a model made on the meta device and materialised still selects
    the right ten."""

    def __init__(self, classes: tuple = IMAGENETTE_LOGITS):
        super().__init__()
        self.classes = tuple(int(c) for c in classes)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, 1000) -> (B, 10)
        return scores.index_select(1, torch.tensor(self.classes, device=scores.device))

    def extra_repr(self) -> str:
        return f"classes={self.classes}"


def with_imagenette_logits(model: nn.Module, head: str, logits: tuple = IMAGENETTE_LOGITS) -> nn.Module:
    """``model`` with module ``head`` (its last linear layer) replaced by
    Sequential(head, ImagenetteLogits(logits)), in place; returns ``model``."""
    parent, _, name = head.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, name, nn.Sequential(model.get_submodule(head), ImagenetteLogits(logits)))
    return model


def imagenet_head(model: nn.Module, head: str, classes: Classes) -> nn.Module:
    """``model`` built for ``weights: imagenet``: with 1000 classes, read at ``classes``' ImageNet
    logits; for classes that are not ImageNet's, built with a head of their size, marked fresh
    (``fresh_head``: loading torchvision's file leaves it as initialised)."""
    if classes.imagenet:
        return with_imagenette_logits(model, head, classes.imagenet)
    model.get_submodule(head).fresh_head = True       # a plain attribute: not in the state dict
    return model


def fresh_head(model: nn.Module, head: str) -> bool:
    """Whether ``model``'s ``head`` is a fresh layer for a dataset whose classes are not
    ImageNet's (``imagenet_head``), rather than torchvision's 1000 read at a dataset's logits."""
    return getattr(model.get_submodule(head), "fresh_head", False)


def load_torchvision_state(model: nn.Module, state_dict: dict, head: str) -> None:
    """Load torchvision's ``state_dict`` into ``model`` built with weights: imagenet (strict):
    ``<head>.weight`` and ``<head>.bias`` go to ``<head>.0``, every other key as it is. A fresh
    head (``fresh_head``) keeps its own initialisation: the file's head keys must be there, and
    are left out; every other key is loaded strictly."""
    prefix = f"{head}."
    if fresh_head(model, head):
        theirs = {key for key in state_dict if key.startswith(prefix)}
        if theirs != {f"{prefix}weight", f"{prefix}bias"}:
            raise RuntimeError(f"the file's head keys are {sorted(theirs)}, not {head}.weight and {head}.bias")
        mine = {key: value for key, value in model.state_dict().items() if key.startswith(prefix)}
        model.load_state_dict({**{k: v for k, v in state_dict.items() if k not in theirs}, **mine}, strict=True)
        return
    mapped = {f"{head}.0.{key[len(prefix):]}" if key.startswith(prefix) else key: value
              for key, value in state_dict.items()}
    model.load_state_dict(mapped, strict=True)


def torchvision_net(name: str, weights: str, head: str, classes: Classes = IMAGENETTE) -> nn.Module:
    """``torchvision.models.<name>`` (weights=None: initialised as torchvision does, from
    torch's global RNG) with a head of ``classes``' size for scratch, or for imagenet 1000 read
    at their ImageNet logits (``imagenet_head``; a fresh head where they are not ImageNet's).
    torchvision is imported here, not with the registry: its import is slow (it pulls in
    torch._dynamo; docs/benchmarks.md, 'torchvision imported late'), and every stage process
    of every net would pay for it otherwise."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    from torchvision import models

    builder = getattr(models, name)
    if weights == "scratch":
        return builder(weights=None, num_classes=len(classes))
    return imagenet_head(builder(weights=None, num_classes=1000 if classes.imagenet else len(classes)), head, classes)


class ImagenetConfig(NetConfig):
    """The ``train.<net>`` keys of a net torchvision publishes ImageNet weights for: where it
    starts (no default: the file says which), and its inputs' augmentation."""

    weights: Weights
    augment: bool = True                  # random 224 crops + flips + PCA lighting; false: centre crops
    lighting_std: NonNegative = 0.1       # AlexNet's PCA colour augmentation; 0: off


def imagenet_inputs(stats: dict, p: ImagenetConfig, device: torch.device | str, mean: tuple = IMAGENET_MEAN,
                    std: tuple = IMAGENET_STD) -> ChannelNormalizedInputs:
    """ImageNet-normalised 224 crops of the stored images (random crops and flips, and PCA
    lighting from the dataset's statistics, in training; the centre crop in evaluation; the
    ten AlexNet views for the final test). Training reuses one output buffer (alexnet_inputs).
    ``mean``, ``std``: the channel statistics the net's weights expect (GoogLeNet's: 0.5, 0.5)."""
    height, width = np.shape(stats["mean_image"])[:2]
    return ChannelNormalizedInputs(height, width, stats["pca_eigvals"], stats["pca_eigvecs"], device, mean=mean,
                                   std=std, augment=p.augment, lighting_std=p.lighting_std, reuse_train_output=True)
