"""datasets/prefetch.py: batches cross as uint8 and are normalised on the device, bit for bit as the
host's float pipeline (ToArray then Normalize) normalises them; on a GPU the next batch's copy is
under way before this one is handed out."""
import numpy as np
import pytest
from PIL import Image

from datasets import (Compose, DataLoader, Normalize, PILToArray, PrefetchLoader, SyntheticCarColours, ToArray,
                      eval_transform, normalize_pixels, train_transform)
from minigrad import backend
from minigrad.testing import fake_gpu


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_every_pixel_value_normalises_bit_for_bit_as_to_array_then_normalize():
    pixels = np.stack([np.arange(256).reshape(16, 16), np.arange(256)[::-1].reshape(16, 16),
                       np.arange(256).reshape(16, 16).T], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    expected = Compose([ToArray(), Normalize()])(image, rng())
    normalized = normalize_pixels(PILToArray()(image, rng()))
    assert normalized.dtype == np.float32
    np.testing.assert_array_equal(normalized, expected)
    mean, std = (0.5, 0.25, 0.0), (0.3, 0.7, 1.1)
    custom = Compose([ToArray(), Normalize(mean, std)])(image, rng())
    np.testing.assert_array_equal(normalize_pixels(PILToArray()(image, rng()), mean, std), custom)


@pytest.mark.parametrize("recipe", [train_transform, eval_transform])
def test_the_training_scripts_batches_are_bit_for_bit_those_of_the_float_pipeline(recipe):
    """The quick start's numbers do not change: its transforms, ending in uint8 pixels and normalised a
    batch at a time, give exactly what ending each image in ToArray() and Normalize() gave."""
    pixels_transform = recipe(32)
    float_transform = Compose(pixels_transform.transforms[:-1] + [ToArray(), Normalize()])
    pixels = DataLoader(SyntheticCarColours(11, 40, transform=pixels_transform), 4, shuffle=True, seed=2)
    floats = DataLoader(SyntheticCarColours(11, 40, transform=float_transform), 4, shuffle=True, seed=2)
    count = 0
    for (images, labels), (expected, expected_labels) in zip(PrefetchLoader(pixels, "cpu"), floats):
        assert images.dtype == expected.dtype == np.float32 and images.shape == expected.shape
        np.testing.assert_array_equal(images, expected)
        np.testing.assert_array_equal(labels, expected_labels)
        count += 1
    assert count == len(pixels) == 3


def test_the_prefetch_loader_gives_on_each_device_the_hosts_batches_in_order(device):
    """All batches held at once (each step's arrays kept): none is overwritten by a later copy."""
    data = SyntheticCarColours(10, 32, transform=train_transform(32))
    loader = DataLoader(data, 4, shuffle=True, seed=3)
    expected = list(PrefetchLoader(loader, "cpu"))
    batches = list(PrefetchLoader(loader, device))
    assert len(batches) == len(expected) == len(PrefetchLoader(loader, device)) == 3
    for (images, labels), (host_images, host_labels), indices in zip(batches, expected, loader.batch_indices()):
        assert backend.device_of(images) == backend.device_of(labels) == device
        assert images.dtype == np.float32 and labels.dtype == np.int64 and images.shape == (len(indices), 3, 32, 32)
        np.testing.assert_array_equal(backend.asnumpy(images), host_images)
        np.testing.assert_array_equal(backend.asnumpy(labels), data.labels[indices])
        np.testing.assert_array_equal(host_labels, data.labels[indices])


def test_batches_of_changing_shapes_and_dtypes_arrive_intact(device):
    """The pinned buffers grow for a larger batch, and serve a smaller one; a float batch (prepared on
    the host already) is moved as it is."""
    draw = rng(1)
    batches = [(draw.integers(0, 256, (size, 3, height, width), dtype=np.uint8), draw.integers(0, 11, size))
               for size, height, width in [(2, 8, 8), (4, 8, 8), (3, 16, 12), (4, 8, 8), (1, 8, 8)]]
    batches.append((draw.random((2, 3, 8, 8)).astype(np.float32), np.array([1, 2])))
    arrived = list(PrefetchLoader(batches, device))
    assert len(arrived) == len(batches)
    for (images, labels), (pixels, expected_labels) in zip(arrived, batches):
        expected = normalize_pixels(pixels) if pixels.dtype == np.uint8 else pixels
        assert backend.asnumpy(images).dtype == np.float32
        np.testing.assert_array_equal(backend.asnumpy(images), expected)
        np.testing.assert_array_equal(backend.asnumpy(labels), expected_labels)


@pytest.fixture
def stand_in_gpu(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")


@pytest.mark.gpu
def test_each_batch_crosses_once_as_uint8_and_is_normalised_in_one_launch(stand_in_gpu):
    loader = DataLoader(SyntheticCarColours(10, 32, transform=eval_transform(32)), 4)
    transfers, moved = dict(fake_gpu.transfer_count.kinds), dict(fake_gpu.transfer_count.bytes)
    launches = fake_gpu.operation_count.kinds["normalize_pixels"]
    batches = list(PrefetchLoader(loader, "gpu"))
    assert len(batches) == 3 and fake_gpu.operation_count.kinds["normalize_pixels"] == launches + 3
    # Each batch: its pixels and its labels; the pass: the mean and std, in one array. Nothing comes back.
    assert fake_gpu.transfer_count.kinds["upload"] - transfers.get("upload", 0) == 2 * 3 + 1
    assert fake_gpu.transfer_count.kinds["download"] == transfers.get("download", 0)
    pixels, labels, statistics = 10 * 3 * 32 * 32, 10 * 8, 2 * 3 * 4  # uint8, int64, float32 bytes
    assert fake_gpu.transfer_count.bytes["upload"] - moved.get("upload", 0) == pixels + labels + statistics


@pytest.mark.gpu
def test_the_next_batchs_copy_is_under_way_before_this_one_is_handed_out(stand_in_gpu):
    loader = DataLoader(SyntheticCarColours(10, 32, transform=eval_transform(32)), 4)
    before = fake_gpu.transfer_count.kinds["upload"] + 1  # and the mean and std's
    feed = iter(PrefetchLoader(loader, "gpu"))
    for number in range(3):
        next(feed)
        assert fake_gpu.transfer_count.kinds["upload"] - before == 2 * min(number + 2, 3)  # pixels and labels
    with pytest.raises(StopIteration):
        next(feed)


def test_normalize_pixels_refuses_floats_and_a_wrong_number_of_channels():
    with pytest.raises(TypeError, match="uint8 pixels"):
        normalize_pixels(np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        normalize_pixels(np.zeros((2, 4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="unknown device"):
        PrefetchLoader([], "tpu")
