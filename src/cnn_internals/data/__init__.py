"""Datasets: downloads (mirrors, md5, retry, atomic), the readers of their formats, and the
uint8 arrays every net reads its batches from. Where the pipeline keeps them is
pipeline/artifacts.py's: the functions here take their folders as arguments."""

from typing import Literal, get_args

# train.<net>.weights: what a net starts from. scratch: its own initialisation, a 10-class head;
# imagenet: torchvision's published ImageNet weights (data/pretrained.py fetches them), the
# 1000-class net read at Imagenette's ten classes (models/imagenet.py). Here, not in pretrained.py,
# so that the registry's import of it does not make every stage of a net depend on the fetching code.
Weights = Literal["scratch", "imagenet"]
WEIGHTS = get_args(Weights)

