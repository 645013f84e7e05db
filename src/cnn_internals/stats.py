"""Dataset statistics: the mean image, per-channel mean and std, and the PCA of RGB pixel
values that AlexNet's lighting noise uses (Krizhevsky et al. 2012, section 4.1).

All sums stream over the images in chunks with float64 accumulators, so a dataset never has
to fit in memory as floats. Pixel values are scaled to [0, 1].
"""

import json

import numpy as np

from .atomic import atomic_path, write_json


def image_statistics(images, chunk=1024):
    """``images``: uint8 (N, H, W) or (N, H, W, C). Returns a dict of numpy arrays:
    mean_image (H, W, C), channel_mean (C,), channel_std (C,), and the eigen-decomposition
    of the C x C covariance of pixel values: pca_eigvals (C,) descending, pca_eigvecs (C, C)
    with eigenvector i in column i."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to compute statistics over")
    shape = images.shape[1:3] + ((images.shape[3],) if images.ndim == 4 else (1,))
    image_sum = np.zeros(shape, dtype=np.float64)
    pixel_sum = np.zeros(shape[-1], dtype=np.float64)
    outer_sum = np.zeros((shape[-1], shape[-1]), dtype=np.float64)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].reshape(-1, *shape).astype(np.float64) / 255.0
        image_sum += x.sum(0)
        pixels = x.reshape(-1, shape[-1])
        pixel_sum += pixels.sum(0)
        outer_sum += pixels.T @ pixels
    count = n * shape[0] * shape[1]
    mean = pixel_sum / count
    covariance = outer_sum / count - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(covariance)
    order = np.argsort(eigvals)[::-1]
    eigvecs = eigvecs[:, order]
    # eigh's sign is arbitrary: make each eigenvector's largest component positive.
    eigvecs *= np.sign(eigvecs[np.abs(eigvecs).argmax(0), np.arange(len(order))])
    return {
        "mean_image": image_sum / n,
        "channel_mean": mean,
        "channel_std": np.sqrt(np.diag(covariance)),
        "pca_eigvals": eigvals[order],
        "pca_eigvecs": eigvecs,
        "count": n,
    }


def save_statistics(stats, out_dir):
    """``out_dir``/mean_image.npy and ``out_dir``/stats.json (everything else)."""
    with atomic_path(out_dir / "mean_image.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, stats["mean_image"])
    summary = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in stats.items() if k != "mean_image"}
    write_json(out_dir / "stats.json", summary)


def load_statistics(out_dir):
    summary = json.loads((out_dir / "stats.json").read_text())
    stats = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in summary.items()}
    stats["mean_image"] = np.load(out_dir / "mean_image.npy")
    return stats
