"""Dataset statistics against a direct numpy computation over every pixel."""

import numpy as np
import pytest

from cnn_internals.stats import image_statistics, load_statistics, save_statistics


def test_statistics_match_numpy_on_all_pixels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 7, 5, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2 + 10   # correlated channels, so the PCA has structure
    stats = image_statistics(images, chunk=7)    # chunks that do not divide 50
    x = images.astype(np.float64) / 255
    pixels = x.reshape(-1, 3)
    np.testing.assert_allclose(stats["mean_image"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["channel_mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["channel_std"], pixels.std(0), rtol=1e-10)
    cov = np.cov(pixels, rowvar=False, bias=True)
    vals, vecs = stats["pca_eigvals"], stats["pca_eigvecs"]
    assert vals[0] >= vals[1] >= vals[2] > 0
    np.testing.assert_allclose(cov @ vecs, vecs * vals, atol=1e-12)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(cov), rtol=1e-10)
    save_statistics(stats, tmp_path)
    again = load_statistics(tmp_path)
    np.testing.assert_array_equal(again["mean_image"], stats["mean_image"])
    np.testing.assert_allclose(again["pca_eigvecs"], vecs, rtol=0, atol=0)


def test_grayscale_images_have_one_channel():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    stats = image_statistics(images)
    assert stats["mean_image"].shape == (4, 4, 1)
    assert stats["pca_eigvals"][0] == pytest.approx((images.astype(np.float64) / 255).var(), rel=1e-12)
