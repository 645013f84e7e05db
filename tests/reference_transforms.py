"""AlexNet's input transform image by image, in float64 numpy, the way a per-image
(torchvision-style) pipeline computes it: the oracle the tests hold models/transforms.py's batched
AlexNetInputs and ChannelNormalizedInputs to, and benchmarks/alexnet_input.py's baseline. Not in
the library: nothing there runs it. Importable from tests (tests/ is on sys.path under pytest) and
from the benchmark, which puts tests/ on its path."""

import numpy as np

from cnn_internals.models.transforms import input_scale


def naive_alexnet_inputs_with(images: np.ndarray, mean_image: np.ndarray, eigvals: np.ndarray,
                              eigvecs: np.ndarray, pixel_std: float, tops, lefts, flips, alphas,
                              crop: int = 224, normalize: str = "standardize") -> np.ndarray:
    """The same inputs as AlexNetInputs.apply_augmentation, image by image in float64 numpy the
    way a per-image (torchvision-style) pipeline computes them; ``alphas`` (B, 3) or None.
    Returns (B, 3, crop, crop) float32."""
    scale = input_scale(normalize, pixel_std)
    mean_image = np.asarray(mean_image, dtype=np.float64)
    eigvals, eigvecs = np.asarray(eigvals, dtype=np.float64), np.asarray(eigvecs, dtype=np.float64)
    out = np.empty((len(images), 3, crop, crop), dtype=np.float32)
    for b, image in enumerate(images):
        top, left = int(tops[b]), int(lefts[b])
        window = (slice(top, top + crop), slice(left, left + crop))
        x = image[window].astype(np.float64) / 255.0 - mean_image[window]       # (crop, crop, 3)
        if alphas is not None:
            x = x + eigvecs @ (np.asarray(alphas[b], dtype=np.float64) * eigvals)
        if flips[b]:
            x = x[:, ::-1]
        out[b] = (scale * x).transpose(2, 0, 1)
    return out


def naive_alexnet_train_inputs(images_uint8_numpy: np.ndarray, mean_image: np.ndarray, eigvals: np.ndarray,
                               eigvecs: np.ndarray, pixel_std: float, rng: np.random.Generator,
                               crop: int = 224, normalize: str = "standardize",
                               lighting_std: float = 0.1) -> np.ndarray:
    """Training inputs image by image: per image, draw (top, left, flip, alphas) from ``rng``
    and apply naive_alexnet_inputs_with. The benchmark's baseline."""
    height, width = images_uint8_numpy.shape[1:3]
    count = len(images_uint8_numpy)
    tops, lefts = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
    flips = np.empty(count, dtype=bool)
    alphas = np.zeros((count, 3)) if lighting_std > 0 else None
    for b in range(count):
        tops[b] = rng.integers(0, height - crop + 1)
        lefts[b] = rng.integers(0, width - crop + 1)
        flips[b] = rng.random() < 0.5
        if alphas is not None:
            alphas[b] = rng.normal(0.0, lighting_std, 3)
    return naive_alexnet_inputs_with(images_uint8_numpy, mean_image, eigvals, eigvecs, pixel_std,
                                     tops, lefts, flips, alphas, crop, normalize)
