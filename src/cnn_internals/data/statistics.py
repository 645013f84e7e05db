"""Dataset statistics: the mean image, per-channel mean and std, and the PCA of pixel values
that AlexNet's lighting noise uses (Krizhevsky et al. 2012, section 4.1).

One streaming pass over the uint8 images with INTEGER sums (per-position sums and the pixel
outer products), so memory stays at one chunk and every figure is exact: the mean image and
the covariance are ratios of exact integers, rounded once, and so the same bytes on every
machine. Only the eigen-decomposition comes from a floating-point solver whose last bits vary
between LAPACK builds; its results are rounded to ``EIG_DIGITS`` significant digits. Pixel
values are in [0, 1] units (uint8 / 255).
"""

import json
from pathlib import Path

import numpy as np

from cnn_internals.core.atomic import atomic_path, write_json
from cnn_internals.core.errors import UserError

EIG_DIGITS = 6
CHANNEL_NAMES = {1: ("gray",), 3: ("red", "green", "blue")}


def _round(values, digits=EIG_DIGITS):
    return np.array([float(f"{v:.{digits}g}") for v in np.ravel(values)]).reshape(np.shape(values))


def _integer_sums(images, chunk):
    """(per-position sums (H, W, C), pixel outer-product sums (C, C)) as exact int64."""
    shape = images.shape[1:3] + ((images.shape[3],) if images.ndim == 4 else (1,))
    image_sum = np.zeros(shape, dtype=np.int64)
    outer_sum = np.zeros((shape[-1], shape[-1]), dtype=np.int64)
    for start in range(0, len(images), chunk):
        x = np.asarray(images[start:start + chunk]).reshape(-1, *shape)
        image_sum += x.sum(0, dtype=np.int64)
        pixels = x.reshape(-1, shape[-1]).astype(np.float64)
        # Integer products summed in float64 are exact while every partial sum stays below
        # 2**53: a chunk of 64 images of 256x256 pixels reaches 2.7e11.
        outer_sum += np.rint(pixels.T @ pixels).astype(np.int64)
        del x, pixels           # before the next chunk's copy, so only one is ever held
    return image_sum, outer_sum


def image_statistics(images: np.ndarray, chunk: int = 64) -> dict:
    """``images``: uint8 (N, H, W) or (N, H, W, C), a memory map is fine. Returns
    mean_image (H, W, C), channel_mean (C,), channel_std (C,), pca_eigvals (C,) descending and
    pca_eigvecs (C, C) with eigenvector i in column i (largest component positive), count."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to compute statistics over")
    image_sum, outer_sum = _integer_sums(images, chunk)
    channels = image_sum.shape[-1]
    count = n * image_sum.shape[0] * image_sum.shape[1]
    sums = [int(s) for s in image_sum.reshape(-1, channels).sum(0)]
    # cov_ij = (count * sum x_i x_j - sum x_i * sum x_j) / (count * 255)^2, in Python ints:
    # int / int is correctly rounded, so this is the exact covariance rounded once.
    covariance = np.array([[(int(outer_sum[i, j]) * count - sums[i] * sums[j]) / (count * 255) ** 2
                            for j in range(channels)] for i in range(channels)])
    eigvals, eigvecs = np.linalg.eigh(covariance)
    order = np.argsort(eigvals)[::-1]
    eigvecs = eigvecs[:, order]
    eigvecs *= np.sign(eigvecs[np.abs(eigvecs).argmax(0), np.arange(channels)])  # eigh's sign is arbitrary
    return {
        "mean_image": image_sum / (n * 255.0),
        "channel_mean": np.array([s / (count * 255) for s in sums]),
        "channel_std": np.sqrt(np.diag(covariance)),
        "pca_eigvals": _round(np.clip(eigvals[order], 0, None)),
        "pca_eigvecs": _round(eigvecs),
        "count": n,
    }


def summary(stats: dict) -> dict:
    """The few numbers worth a `git diff` / `dvc metrics diff`, keyed by channel name."""
    names = CHANNEL_NAMES.get(len(stats["channel_mean"]), tuple(map(str, range(len(stats["channel_mean"])))))
    return {
        "images": stats["count"],
        "mean": {c: round(float(v), 6) for c, v in zip(names, stats["channel_mean"])},
        "std": {c: round(float(v), 6) for c, v in zip(names, stats["channel_std"])},
        "pca_eigvals": {str(i + 1): float(v) for i, v in enumerate(stats["pca_eigvals"])},
    }


def save_statistics(stats: dict, out_dir: Path) -> None:
    """``out_dir``/mean_image.npy and ``out_dir``/stats.json (everything else)."""
    with atomic_path(Path(out_dir) / "mean_image.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, stats["mean_image"])
    rest = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in stats.items() if k != "mean_image"}
    write_json(Path(out_dir) / "stats.json", rest)


def load_statistics(out_dir: Path, fix: str = "rerun the stats stage") -> dict:
    """What save_statistics wrote; a missing, truncated or malformed file is a UserError
    naming it and ending in ``fix``."""
    out_dir = Path(out_dir)
    summary_path, mean_path = out_dir / "stats.json", out_dir / "mean_image.npy"
    try:
        stats = {k: (np.asarray(v) if isinstance(v, list) else v)
                 for k, v in json.loads(summary_path.read_text()).items()}
        missing = {"channel_mean", "channel_std", "pca_eigvals", "pca_eigvecs", "count"} - set(stats)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except FileNotFoundError:
        raise UserError(f"{summary_path} missing: {fix}") from None
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{summary_path} is truncated or malformed ({type(err).__name__}): {fix}") from None
    try:
        stats["mean_image"] = np.load(mean_path)
    except FileNotFoundError:
        raise UserError(f"{mean_path} missing: {fix}") from None
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{mean_path} is truncated or malformed ({type(err).__name__}): {fix}") from None
    return stats
