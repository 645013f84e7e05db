"""ResNet-18: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016;
arXiv 1512.03385), as torchvision defines it.

Table 1, the 18-layer column: 224x224x3 input; conv1 64@7x7 stride 2 (112x112); conv2_x:
3x3 max pooling stride 2, then two basic blocks of two 3x3 convolutions of 64 maps (56x56);
conv3_x, conv4_x, conv5_x: two blocks each of 128, 256, 512 maps, the first convolution of
conv3_1, conv4_1 and conv5_1 with stride 2 (28, 14, 7); global average pooling and a
fully-connected layer to the classes. Batch normalisation right after each convolution and
before the ReLU (section 3.4); a block adds its input to its second convolution's normalised
output, then applies the ReLU. 11,689,512 parameters with 1000 classes.

torchvision's ``resnet18`` is that net with the shortcuts of the paper's option B (section
3.3): identity where a block keeps its size, a 1x1 convolution with stride 2 and batch
normalisation (``layer<n>.0.downsample``) where it halves the maps and doubles their number.
The paper's own 18-layer results (table 2, figure 4) use option A instead: identity
everywhere, the extra maps zero-padded, no parameters; option B is the one its table 3 finds
slightly better (on the 34-layer net). The three projections hold 173,824 of the 11,689,512
parameters. torchvision initialises the convolutions with He's normal in its fan-out form, the
paper's [13]. Section 3.4's training, the default recipe of ``weights: scratch``: SGD, batch 256,
momentum 0.9, weight decay 1e-4, no dropout, lr 0.1 divided by 10 when the error plateaus, 60e4
iterations (about 120 epochs of ImageNet); 224 crops of images whose short side is drawn from
[256, 480], flips, the per-pixel mean subtracted, AlexNet's colour augmentation; 10-crop
testing for its comparisons. Here the crops come from the stored 256x256 images (no scale
jitter) and the inputs are normalised with ImageNet's channel means and stds, as torchvision's
weights expect.

The depths shown are conv1 and the last convolution of each of conv2_x .. conv5_x (its output
before batch normalisation and the shortcut's addition), mapped to torchvision's module paths.
"""

from torch import nn

from cnn_internals.models.imagenet import IMAGENETTE, ImagenetConfig, imagenet_inputs, load_torchvision_state, torchvision_net
from cnn_internals.models.registry import Classes, Net, register

HEAD = "fc"
SHOWN = {"conv1": "conv1", "conv2_x": "layer1.1.conv2", "conv3_x": "layer2.1.conv2", "conv4_x": "layer3.1.conv2",
         "conv5_x": "layer4.1.conv2"}


def build_resnet18(weights: str = "scratch", classes: Classes = IMAGENETTE) -> nn.Module:
    """torchvision's ResNet-18 initialised as torchvision does (seed torch's RNG first): 10
    classes for ``weights`` scratch, 1000 read at Imagenette's ten for imagenet."""
    return torchvision_net("resnet18", weights, HEAD, classes)


def load_imagenet(model: nn.Module, state_dict: dict) -> None:
    """torchvision's published ResNet-18 state dict (``resnet18-f37072fd.pth``) into a model
    built with ``build_resnet18("imagenet")``, strictly."""
    load_torchvision_state(model, state_dict, HEAD)


class ResNet18Config(ImagenetConfig):
    """``train.resnet18``'s own keys: those of every net with torchvision's ImageNet weights."""


register(Net(
    name="resnet18", title="ResNet-18", dataset="imagenette",
    layers=tuple(SHOWN),
    module_paths={name: path for name, path in SHOWN.items() if name != path},
    input_size=(3, 224, 224),
    config=ResNet18Config,
    make_model=lambda c, classes: build_resnet18(c.weights, classes),
    default_classes=IMAGENETTE,
    make_inputs=imagenet_inputs,
    load_imagenet=load_imagenet,
))
