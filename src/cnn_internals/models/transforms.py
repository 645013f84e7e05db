"""AlexNet's input pipeline (Krizhevsky et al. 2012) as batched tensor ops on the data's device.

The data set is stored as uint8 (N, 256, 256, 3) images: section 2, "we down-sampled the
images to a fixed resolution of 256 x 256". A model input is

    scale * (x / 255 + lighting - mean_image)[crop window], mirrored or not,

with the mean image subtracted "from each pixel" (section 2) at the pixel's own position, so
a crop sees the mean of its own window. Training (section 4.1) takes a random 224x224 window,
mirrored with probability 1/2, and adds PCA lighting noise. The paper tested on ten views
(four corners, the centre, and their mirrors) and averaged their softmax outputs, which the
caller does; evaluation, mining and pictures here use the centre crop alone.

``scale``: normalize "paper" feeds raw 0-255 values minus the mean (scale 255), what the paper
trained on and the scale its LRN constants (k=2, alpha=1e-4) were chosen for; "standardize"
divides by the pooled RGB std (unit variance, what kaiming initialisation assumes).

The fast path never loops over images in Python: crops are gathered with one index_select of
pixel runs from the uint8 batch (see _runs), converted to float once while moving channels
first, and the mean image enters through the same kind of gather from a precomputed,
pre-scaled (and pre-mirrored) copy. On CPU the batch goes through in chunks of
CPU_CHUNK images so the intermediates stay in cache. tests/reference_transforms.py has the
image-by-image float64 reference (the tests' oracle and benchmarks/alexnet_input.py's baseline).

``ChannelNormalizedInputs`` is the same crops, mirrors, lighting and views with a mean colour
subtracted and each channel divided by its std (torchvision's ImageNet normalisation), for the
nets torchvision publishes weights for (VGG-16, ResNet-18).
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

NORMALIZE = ("paper", "standardize")

# The channel means and stds of ImageNet's training pixels in [0, 1] that torchvision's
# published weights expect (its ImageClassification transform).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The order of AlexNetInputs.views (section 4.1: "five 224x224 patches (the four corner patches
# and the center patch) as well as their horizontal reflections (hence ten patches in all)").
VIEW_NAMES = ("top_left", "top_right", "bottom_left", "bottom_right", "centre",
              "top_left_mirrored", "top_right_mirrored", "bottom_left_mirrored",
              "bottom_right_mirrored", "centre_mirrored")

# Images per pass on CPU: the uint8 crops, the mean crops and the output chunk of 8 images
# (about 11 MB together) stay in cache; chunks of 4 or 8 were the fastest, one pass over the
# whole batch the slowest (docs/benchmarks.md, 'AlexNet inputs'). On GPUs the whole batch is
# one pass.
CPU_CHUNK = 8


def input_scale(normalize: str, pixel_std: float) -> float:
    """The factor applied to ``x/255 + lighting - mean``: 255 for "paper" (raw pixel values, as
    the paper trained), 1/pixel_std for "standardize" (unit variance)."""
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZE)}")
    if normalize == "paper":
        return 255.0
    if not pixel_std > 0:
        raise ValueError(f"pixel_std must be positive, got {pixel_std}")
    return 1.0 / float(pixel_std)


@dataclass(frozen=True)
class Augmentation:
    """The per-image choices of one batch, all on the data's device."""

    tops: Tensor              # (B,) int64: first row of the crop
    lefts: Tensor             # (B,) int64: first column of the crop, in the unmirrored image
    flips: Tensor             # (B,) bool: mirror the crop left-right
    alphas: Tensor | None     # (B, 3) float32: PCA lighting coefficients; None: no lighting

    def to(self, device: torch.device | str) -> "Augmentation":
        alphas = None if self.alphas is None else self.alphas.to(device)
        return Augmentation(self.tops.to(device), self.lefts.to(device), self.flips.to(device), alphas)


def draw_augmentation(batch_size: int, height: int, width: int, crop: int, lighting_std: float,
                      generator: torch.Generator, device: torch.device | str) -> Augmentation:
    """Section 4.1's random choices for ``batch_size`` images of ``height`` x ``width``.

    Drawn from ``generator`` (which must live on ``device``) in this fixed order, so a seed
    fixes a run: tops ~ U{0..height-crop}, lefts ~ U{0..width-crop} (every one of the
    (height-crop+1) x (width-crop+1) offsets equally likely), flips ~ Bernoulli(1/2), then,
    only when lighting_std > 0, alphas ~ N(0, lighting_std^2) of shape (B, 3).
    """
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the {height}x{width} images")
    kw = {"generator": generator, "device": device}
    tops = torch.randint(0, height - crop + 1, (batch_size,), **kw)
    lefts = torch.randint(0, width - crop + 1, (batch_size,), **kw)
    flips = torch.randint(0, 2, (batch_size,), **kw).bool()
    alphas = None
    if lighting_std > 0:
        alphas = torch.randn(batch_size, 3, dtype=torch.float32, **kw).mul_(lighting_std)
    return Augmentation(tops, lefts, flips, alphas)


def _runs(flat: Tensor, run_length: int, step: int) -> Tensor:
    """A view of a flat tensor whose row p is flat[p*step : p*step + run_length], for every p
    whose run fits: one index_select of rows then gathers many crop rows at once, each a
    contiguous copy (step 3 with runs of 3*crop bytes: crop rows of HWC pixels)."""
    rows = (flat.numel() - run_length) // step + 1
    return flat.as_strided((rows, run_length), (step, 1))


def _mirror_where(pixels: Tensor, flips: Tensor) -> Tensor:
    """(b, crop, crop, 3) crops with those where ``flips`` mirrored left-right. Mirroring all
    and picking whole images with index_select was faster on CPU than torch.where with a
    broadcast mask or index_copy_ of the flipped ones (docs/benchmarks.md, 'AlexNet inputs')."""
    size = pixels.shape[0]
    both = torch.cat([pixels, pixels.flip(2)])                    # (2b, crop, crop, 3)
    pick = flips.long() * size + torch.arange(size, device=pixels.device)
    return both.index_select(0, pick)


class AlexNetInputs:
    """uint8 (B, H, W, 3) batches on ``device`` -> (B, 3, crop, crop) float32 model inputs.

    ``mean_image``: (H, W, 3) pixel means in [0, 1] (pixels / 255); ``eigvals`` (3,) descending
    and ``eigvecs`` (3, 3) (column i = eigenvector i) of the covariance of RGB pixel values in
    [0, 1]; ``pixel_std`` the pooled RGB std in [0, 1] (cnn_internals.stats gives all four).

    PCA lighting (section 4.1): to every pixel of an image add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T,
    a_i ~ N(0, lighting_std^2) drawn once per image per call. The paper does not say in which
    units the p_i and l_i are; applying the formula to pixel values in [0, 1] is our reading:
    in 0-255 units the eigenvalues are 255^2 = 65025 times larger and the added colour, at
    std 0.1, would swamp the image. lighting_std 0 turns it off.
    """

    def __init__(self, mean_image: npt.ArrayLike, eigvals: npt.ArrayLike, eigvecs: npt.ArrayLike, pixel_std: float,
                 device: torch.device | str, crop: int = 224, normalize: str = "standardize", augment: bool = True,
                 lighting_std: float = 0.1, reuse_train_output: bool = False) -> None:
        mean_image = np.asarray(mean_image, dtype=np.float64)
        if mean_image.ndim != 3 or mean_image.shape[2] != 3:
            raise ValueError(f"mean_image must be (H, W, 3), got shape {mean_image.shape}")
        if crop > min(mean_image.shape[:2]):
            raise ValueError(f"crop {crop} is larger than the {mean_image.shape[0]}x{mean_image.shape[1]} images")
        if lighting_std < 0:
            raise ValueError(f"lighting_std must be >= 0, got {lighting_std}")
        self.device = torch.empty(0, device=device).device     # "cuda" -> "cuda:0", for comparisons
        self.crop, self.normalize, self.augment = crop, normalize, augment
        self.lighting_std = float(lighting_std)
        # train() writes every batch into one buffer: a training loop has consumed the batch
        # before (forward and backward) when it asks for the next one.
        self.reuse_train_output, self._train_out = reuse_train_output, None
        self.scale = input_scale(normalize, pixel_std)
        self.height, self.width = mean_image.shape[:2]
        as_device = dict(dtype=torch.float32, device=self.device)
        self.mean_image = torch.as_tensor(mean_image, **as_device)                   # (H, W, 3)
        self.eigvals = torch.as_tensor(np.asarray(eigvals, dtype=np.float64), **as_device)  # (3,)
        self.eigvecs = torch.as_tensor(np.asarray(eigvecs, dtype=np.float64), **as_device)  # (3, 3)
        # -scale * mean, channels first, and its mirror image: the mean crops are gathered
        # from here already scaled, negated and mirrored as the image crops are.
        planes = -self.scale * mean_image.transpose(2, 0, 1)                             # (3, H, W)
        self._mean_planes = torch.as_tensor(np.stack([planes, planes[:, :, ::-1]]), **as_device)  # (2, 3, H, W)

    # ------------------------------------------------------------------ public API

    def train(self, images: Tensor, generator: torch.Generator, out: Tensor | None = None) -> Tensor:
        """Training inputs: random crop, mirror and lighting (draw_augmentation's order), or
        the centre crop when ``augment`` is off (then ``generator`` is not used). ``out``: see
        apply_augmentation."""
        if out is None and self.reuse_train_output:
            shape = (images.shape[0], 3, self.crop, self.crop)
            if self._train_out is None or self._train_out.shape != shape:
                self._train_out = torch.empty(shape, dtype=torch.float32, device=self.device)
            out = self._train_out
        if not self.augment:
            return self.eval(images, out)
        draws = draw_augmentation(images.shape[0], self.height, self.width, self.crop,
                                  self.lighting_std, generator, self.device)
        return self.apply_augmentation(images, draws, out)

    def eval(self, images: Tensor, out: Tensor | None = None) -> Tensor:
        """The centre crop, offset ((H - crop) // 2, (W - crop) // 2), no mirror, no noise."""
        top, left = self._centre()
        return self.apply_augmentation(images, self._fixed(images.shape[0], top, left, False), out)

    def views(self, images: Tensor) -> list[Tensor]:
        """The paper's ten test views, in VIEW_NAMES order: the four corner crops and the
        centre crop, then the same five mirrored. Each (B, 3, crop, crop)."""
        spare_h, spare_w = self.height - self.crop, self.width - self.crop
        offsets = [(0, 0), (0, spare_w), (spare_h, 0), (spare_h, spare_w), self._centre()]
        batch = images.shape[0]
        return [self.apply_augmentation(images, self._fixed(batch, top, left, flip))
                for flip in (False, True) for top, left in offsets]

    def display(self, x: Tensor) -> Tensor:
        """eval's inputs (B, 3, crop, crop) back to [0, 1] RGB for pictures: undo the scale, add
        the mean image of the centre window, clamp."""
        top, left = self._centre()
        mean = self.mean_image[top:top + self.crop, left:left + self.crop].permute(2, 0, 1)  # (3, crop, crop)
        return (x / self.scale + mean.to(x.device)).clamp_(0.0, 1.0)

    def from_pixels(self, pixels: Tensor) -> Tensor:
        """(B, 3, crop, crop) [0, 1] RGB -> eval's inputs, differentiably: the inverse of
        ``display`` (before its clamp), for images made in pixel space (feature visualization)."""
        top, left = self._centre()
        mean = self.mean_image[top:top + self.crop, left:left + self.crop].permute(2, 0, 1)
        return (pixels - mean.to(pixels.device, pixels.dtype)) * self.scale

    def lighting(self, alphas: Tensor) -> Tensor:
        """(B, 3) colour added to every pixel of each image, in [0, 1] units:
        eigvecs @ (alphas * eigvals) per image (section 4.1)."""
        return (alphas * self.eigvals) @ self.eigvecs.T

    def apply_augmentation(self, images: Tensor, draws: Augmentation, out: Tensor | None = None) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, crop, crop) float32 contiguous, with the given choices.

        ``out``: a contiguous float32 (B, 3, crop, crop) tensor on the device to write into and
        return, e.g. one buffer a training loop reuses once each batch is consumed. On CPU a
        fresh 77 MB batch (B=128) costs page faults that can exceed the arithmetic."""
        images, draws = self._check(images), draws.to(self.device)
        batch, crop = images.shape[0], self.crop
        out = self._output(batch, out)
        if batch == 0:
            return out
        pixel_rows, mean_rows = self._row_indices(batch, draws)
        shift = None if draws.alphas is None else self.scale * self.lighting(draws.alphas)  # (B, 3)
        image_runs = _runs(images.reshape(-1), 3 * crop, 3)
        mean_runs = _runs(self._mean_planes.reshape(-1), crop, 1)
        chunk = CPU_CHUNK if self.device.type == "cpu" else batch      # GPUs: one pass
        mean_buffer = torch.empty(min(chunk, batch) * 3 * crop, crop, dtype=torch.float32, device=self.device)
        for first in range(0, batch, chunk):
            part = slice(first, first + chunk)
            size = out[part].shape[0]
            pixels = image_runs.index_select(0, pixel_rows[part].reshape(-1)).view(size, crop, crop, 3)
            pixels = _mirror_where(pixels, draws.flips[part])
            mean = torch.index_select(mean_runs, 0, mean_rows[part].reshape(-1), out=mean_buffer[:size * 3 * crop])
            mean = mean.view(size, 3, crop, crop)        # -scale * mean crop, mirrored where flipped
            if shift is not None:
                mean += shift[part, :, None, None]
            self._combine(out[part], pixels, mean)
        return out

    # ------------------------------------------------------------------ internals

    def _combine(self, target: Tensor, pixels: Tensor, mean: Tensor) -> None:
        """target = scale/255 * pixels (moved channels first) + mean, in two passes: the cast
        to float fused with the HWC -> CHW move, then one multiply-add in place."""
        target.copy_(pixels.permute(0, 3, 1, 2))         # (b, 3, crop, crop) float, 0..255
        torch.add(mean, target, alpha=self.scale / 255.0, out=target)

    def _row_indices(self, batch: int, draws: Augmentation) -> tuple[Tensor, Tensor]:
        """Rows of _runs views: (B, crop) pixel runs of each crop row in the image batch, and
        (B, 3, crop) runs of each crop row of each channel in the mean planes (the mirrored
        planes, at the mirrored offset, for flipped images)."""
        height, width, crop = self.height, self.width, self.crop
        lines = torch.arange(crop, device=self.device)                                  # (crop,)
        images = torch.arange(batch, device=self.device)
        tops, lefts, flips = draws.tops, draws.lefts, draws.flips
        pixel_rows = ((images * height + tops)[:, None] + lines) * width + lefts[:, None]  # (B, crop)
        mirrored_left = torch.where(flips, width - crop - lefts, lefts)
        planes = flips.long()[:, None] * 3 + torch.arange(3, device=self.device)          # (B, 3)
        mean_rows = ((planes * height + tops[:, None])[:, :, None] + lines) * width + mirrored_left[:, None, None]
        return pixel_rows, mean_rows                                                     # (B, crop), (B, 3, crop)

    def _check(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[3] != 3:
            raise ValueError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        if tuple(images.shape[1:3]) != (self.height, self.width):
            raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but the mean image is "
                             f"{self.height}x{self.width}")
        return images.to(self.device).contiguous()

    def _output(self, batch: int, out: Tensor | None) -> Tensor:
        shape = (batch, 3, self.crop, self.crop)
        if out is None:
            return torch.empty(shape, dtype=torch.float32, device=self.device)
        if tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != self.device \
                or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float32 {shape} tensor on {self.device}, got "
                             f"{out.dtype} {tuple(out.shape)} on {out.device}")
        return out

    def _centre(self) -> tuple[int, int]:
        return (self.height - self.crop) // 2, (self.width - self.crop) // 2

    def _fixed(self, batch: int, top: int, left: int, flip: bool) -> Augmentation:
        def full(value, dtype):
            return torch.full((batch,), value, dtype=dtype, device=self.device)
        return Augmentation(full(top, torch.long), full(left, torch.long), full(flip, torch.bool), None)


class ChannelNormalizedInputs(AlexNetInputs):
    """AlexNet's crops, mirrors, lighting and test views on per-channel normalised pixels:

        (x / 255 + lighting - mean_c) / std_c   [crop window], mirrored or not,

    torchvision's ``ToTensor`` then ``Normalize(mean, std)`` with ImageNet's channel means and
    stds by default (what torchvision's published weights were trained on, and what VGG-16 and
    ResNet-18 use from scratch here too). The mean is one colour, not an image; the lighting is
    in [0, 1] units as in AlexNetInputs. ``height`` x ``width``: the stored images' size."""

    def __init__(self, height: int, width: int, eigvals: npt.ArrayLike, eigvecs: npt.ArrayLike,
                 device: torch.device | str, crop: int = 224, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD,
                 augment: bool = True, lighting_std: float = 0.1, reuse_train_output: bool = False) -> None:
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ValueError(f"mean and std must be three numbers, std positive; got {mean}, {std}")
        mean_image = np.empty((height, width, 3))
        mean_image[:] = mean
        super().__init__(mean_image, eigvals, eigvecs, 1.0, device, crop=crop, normalize="standardize",
                         augment=augment, lighting_std=lighting_std, reuse_train_output=reuse_train_output)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)[:, None, None]   # (3, 1, 1)

    def display(self, x: Tensor) -> Tensor:
        return super().display(x * self.std.to(x.device))

    def from_pixels(self, pixels: Tensor) -> Tensor:
        return super().from_pixels(pixels) / self.std.to(pixels.device, pixels.dtype)

    def _combine(self, target: Tensor, pixels: Tensor, mean: Tensor) -> None:
        super()._combine(target, pixels, mean)          # x / 255 + lighting - mean (scale 1)
        target.div_(self.std)
