"""Dataset statistics against a direct numpy computation over every pixel; exact sums, so the
result does not depend on how the data were chunked (or on the machine)."""

from fractions import Fraction

import numpy as np
import pytest

from cnn_internals.data.statistics import image_statistics, load_statistics, save_statistics, summary


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 7, 5, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2 + 10   # correlated channels, so the PCA has structure
    return images


def test_statistics_match_numpy_on_all_pixels(images, tmp_path):
    stats = image_statistics(images, chunk=7)    # chunks that do not divide 50
    x = images.astype(np.float64) / 255
    pixels = x.reshape(-1, 3)
    np.testing.assert_allclose(stats["mean_image"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["channel_mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["channel_std"], pixels.std(0), rtol=1e-10)
    cov = np.cov(pixels, rowvar=False, bias=True)
    vals, vecs = stats["pca_eigvals"], stats["pca_eigvecs"]
    assert vals[0] >= vals[1] >= vals[2] > 0
    # eigen-results are rounded to 6 significant digits
    np.testing.assert_allclose(cov @ vecs, vecs * vals, atol=1e-6 * vals[0])
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(cov), rtol=1e-5)
    save_statistics(stats, tmp_path)
    again = load_statistics(tmp_path)
    np.testing.assert_array_equal(again["mean_image"], stats["mean_image"])
    np.testing.assert_array_equal(again["pca_eigvecs"], vecs)


def test_mean_image_and_covariance_are_the_exact_ratios_rounded_once(images):
    stats = image_statistics(images, chunk=16)
    n = len(images)
    sums = images.astype(np.int64).sum(0)
    assert np.array_equal(stats["mean_image"], np.vectorize(lambda s: float(Fraction(int(s), n * 255)))(sums))
    pixels = images.reshape(-1, 3).astype(object)             # Python ints: exact
    count = len(pixels)
    s = pixels.sum(0)
    var_red = Fraction(int((pixels[:, 0] ** 2).sum()) * count - int(s[0]) ** 2, (count * 255) ** 2)
    assert stats["channel_std"][0] == np.sqrt(float(var_red))
    assert stats["channel_mean"][2] == float(Fraction(int(s[2]), count * 255))


def test_chunking_does_not_change_a_single_bit(images):
    results = [image_statistics(images, chunk=c) for c in (1, 7, 50, 64)]
    for other in results[1:]:
        for key, value in results[0].items():
            assert np.array_equal(np.asarray(other[key]), np.asarray(value)), key


def test_summary_names_the_channels(images):
    stats = image_statistics(images)
    table = summary(stats)
    assert table["images"] == 50
    assert table["mean"]["red"] == round(float(stats["channel_mean"][0]), 6)
    assert list(table["pca_eigvals"]) == ["1", "2", "3"]


def test_grayscale_images_have_one_channel():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    stats = image_statistics(images)
    assert stats["mean_image"].shape == (4, 4, 1)
    assert stats["pca_eigvals"][0] == pytest.approx((images.astype(np.float64) / 255).var(), rel=1e-5)
    assert list(summary(stats)["mean"]) == ["gray"]
