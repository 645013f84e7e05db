"""VGG-16: configuration D of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015; arXiv 1409.1556), as torchvision defines it.

Table 1, column D: 224x224x3 input; thirteen 3x3 convolutions, stride 1, padding 1, each
followed by a ReLU, in five stacks of 64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3 maps, each
stack ended by 2x2 max pooling with stride 2 (224 -> 112 -> 56 -> 28 -> 14 -> 7); then
three fully-connected layers of 4096, 4096 and 1000 (the classes), dropout 0.5 after the
first two (section 3.1). No local response normalisation: section 4.1 found it does not help.
138,357,544 parameters with 1000 classes (the paper's table 2 rounds it to 138 million).

torchvision's ``vgg16`` is that net, layer for layer. Its additions change nothing at 224 px:
an AdaptiveAvgPool2d((7, 7)) between the convolutions and the classifier (the identity on 7x7
maps; it lets other input sizes through). Where it differs is in how the net is started:
torchvision initialises every conv with He's normal (fan out) and the linear layers with
N(0, 0.01), biases 0; the paper trained configuration A from N(0, 0.01) and started the deeper
ones from A's trained layers (section 3.1; its footnote adds that Glorot's initialisation
works without pre-training). Section 3.1's training, the default recipe of ``weights:
scratch``: SGD, batch 256, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the
validation accuracy stops improving, 74 epochs; random 224 crops of the rescaled images,
horizontal flips and AlexNet's RGB colour shift. The paper tested densely over whole images at
several scales; here it is the centre crop and AlexNet's ten crops.

The paper names a layer by its stack and place: conv5_3 is stack 5's third convolution. The
depths shown are each stack's last, mapped to torchvision's module paths (``features.<i>``).
"""

from torch import nn

from cnn_internals.models.imagenet import IMAGENETTE, ImagenetConfig, imagenet_inputs, load_torchvision_state, torchvision_net
from cnn_internals.models.registry import Classes, Net, register

HEAD = "classifier.6"      # the last linear layer: 4096 -> classes
# Each stack's last convolution (table 1, column D) and its index in torchvision's features.
# Then the two hidden fully connected layers by Caffe's names, fc6 and fc7 (classifier.0, .3).
SHOWN = {"conv1_2": "features.2", "conv2_2": "features.7", "conv3_3": "features.14", "conv4_3": "features.21",
         "conv5_3": "features.28", "fc6": "classifier.0", "fc7": "classifier.3"}


def build_vgg16(weights: str = "scratch", classes: Classes = IMAGENETTE) -> nn.Module:
    """torchvision's VGG-16 initialised as torchvision does (seed torch's RNG first): a head of
    ``classes``' size for ``weights`` scratch, 1000 read at their ImageNet logits for imagenet."""
    return torchvision_net("vgg16", weights, HEAD, classes)


def load_imagenet(model: nn.Module, state_dict: dict) -> None:
    """torchvision's published VGG-16 state dict (``vgg16-397923af.pth``) into a model built
    with ``build_vgg16("imagenet")``, strictly."""
    load_torchvision_state(model, state_dict, HEAD)


class VGG16Config(ImagenetConfig):
    """``train.vgg16``'s own keys: those of every net with torchvision's ImageNet weights."""


register(Net(
    name="vgg16", title="VGG-16", dataset="imagenette",
    layers=tuple(SHOWN),
    module_paths=SHOWN,
    input_size=(3, 224, 224),
    config=VGG16Config,
    make_model=lambda c, classes: build_vgg16(c.weights, classes),
    default_classes=IMAGENETTE,
    make_inputs=imagenet_inputs,
    load_imagenet=load_imagenet,
))
