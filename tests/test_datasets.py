"""The data pipeline's core: Dataset, ImageFiles, Subset, DataLoader, the transforms, and the
built-in synthetic car colours. Images are small PNGs (lossless) written to a temporary folder, or
drawn in memory, with pixels that encode their own coordinates so a crop shows where it came from."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest
from PIL import Image

from datasets import synthetic
from datasets.core import DataLoader, Dataset, ImageFiles, Subset, stratified_split
from datasets.synthetic import COLOURS, LIGHT, SyntheticCarColours
from datasets.prefetch import normalize_pixels
from datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, Normalize, PILToArray,
                                 RandomHorizontalFlip, RandomResizedCrop, Resize, ToArray, eval_transform,
                                 train_transform)

BLUE = 7  # the blue channel of every coordinate image


def coordinates(width: int, height: int) -> numpy.ndarray:
    """A (height, width, 3) uint8 image whose red is the column and green the row (both < 256)."""
    pixels = numpy.full((height, width, 3), BLUE, dtype=numpy.uint8)
    pixels[..., 0] = numpy.arange(width)[None, :]
    pixels[..., 1] = numpy.arange(height)[:, None]
    return pixels


def as_array(pixels: numpy.ndarray) -> numpy.ndarray:
    """What ToArray should give for (H, W, 3) uint8 ``pixels``: (3, H, W) float32, value / 255."""
    return (pixels.transpose(2, 0, 1) / 255).astype(numpy.float32)


def rng(seed: int = 0) -> numpy.random.Generator:
    return numpy.random.default_rng(seed)


class Indexed(Dataset):
    """``count`` examples; example i is a (3, 2, 2) image filled with i plus a draw from the rng, labelled i % 3."""

    def __init__(self, count: int, classes: int = 3):
        self.labels = numpy.arange(count, dtype=numpy.int64) % classes
        self.classes = [f"class {c}" for c in range(classes)]
        self.loads = 0
        self.lock = threading.Lock()

    def load(self, index, rng):
        with self.lock:
            self.loads += 1
        image = numpy.full((3, 2, 2), float(index), dtype=numpy.float32)
        image[0, 0, 1] = rng.random()
        return image, int(self.labels[index])


class Slow(Indexed):
    """``Indexed`` that takes ``delay`` seconds per example, so the workers' progress can be timed."""

    def __init__(self, count: int, delay: float):
        super().__init__(count)
        self.delay = delay

    def load(self, index, rng):
        time.sleep(self.delay)
        return super().load(index, rng)


def batch_order(loader: DataLoader) -> list[list[int]]:
    """The example indices of each batch, read back from the images of ``Indexed``."""
    return [images[:, 0, 0, 0].astype(int).tolist() for images, _ in loader]


# ---------------------------------------------------------------- Dataset, Subset


def test_class_counts_and_num_classes_include_empty_classes():
    dataset = Indexed(0, classes=4)
    dataset.labels = numpy.array([2, 0, 2, 2], dtype=numpy.int64)
    assert dataset.num_classes == 4
    assert dataset.class_counts().tolist() == [1, 0, 3, 0]
    assert len(dataset) == 4


def test_getitem_loads_with_the_index_as_seed():
    dataset = Indexed(5)
    image, label = dataset[4]
    expected, _ = dataset.load(4, numpy.random.default_rng(4))
    numpy.testing.assert_array_equal(image, expected)
    assert label == 1


def test_subset_maps_indices_and_follows_labels_and_classes():
    dataset = Indexed(10)
    subset = Subset(dataset, [7, 2, 9])
    assert len(subset) == 3
    assert subset.labels.tolist() == [1, 2, 0]
    assert subset.labels.dtype == numpy.int64
    assert subset.classes == dataset.classes and subset.num_classes == 3
    for position, index in enumerate([7, 2, 9]):
        image, label = subset.load(position, rng(11))
        expected, expected_label = dataset.load(index, rng(11))
        numpy.testing.assert_array_equal(image, expected)
        assert label == expected_label


def test_subset_class_counts_cover_all_classes_of_the_parent():
    subset = Subset(Indexed(10), [0, 3, 6])  # labels 0, 0, 0
    assert subset.class_counts().tolist() == [3, 0, 0]


def test_subset_of_a_subset_composes_indices():
    dataset = Indexed(10)
    inner = Subset(Subset(dataset, [9, 8, 7, 6]), [3, 0])  # indices 6 and 9
    assert [inner.load(i, rng())[0][1, 0, 0] for i in range(2)] == [6.0, 9.0]
    assert inner.labels.tolist() == [0, 0]


def test_subset_names_its_examples_in_its_own_order():
    files = ImageFiles(["/photos/a.png", "/photos/b.png", "/photos/c.png"], [0, 1, 0], ["x", "y"], ToArray())
    assert files.example_names() == ["a.png", "b.png", "c.png"]
    assert Subset(files, [2, 0]).example_names() == ["c.png", "a.png"]
    assert Subset(Subset(files, [2, 1, 0]), [1]).example_names() == ["b.png"]


# ---------------------------------------------------------------- DataLoader


@pytest.mark.parametrize("count, batch_size, drop_last, length", [
    (10, 4, False, 3), (10, 4, True, 2), (8, 4, False, 2), (8, 4, True, 2), (3, 4, False, 1), (3, 4, True, 0),
    (0, 4, False, 0), (10, 1, True, 10)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_length(count, batch_size, drop_last, length, shuffle):
    loader = DataLoader(Indexed(count), batch_size, shuffle=shuffle, drop_last=drop_last)
    assert len(loader) == length
    assert len(list(loader)) == length


def test_loader_without_shuffle_keeps_the_order():
    assert batch_order(DataLoader(Indexed(10), 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batch_order(DataLoader(Indexed(10), 4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("num_workers", [0, 3])
def test_shuffled_batches_cover_every_index_once(num_workers):
    loader = DataLoader(Indexed(23), 5, shuffle=True, seed=4, num_workers=num_workers)
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = batch_order(loader)
        assert [len(batch) for batch in batches] == [5, 5, 5, 5, 3]
        assert sorted(sum(batches, [])) == list(range(23))


def test_drop_last_drops_only_the_short_tail():
    loader = DataLoader(Indexed(23), 5, shuffle=True, drop_last=True, seed=4)
    seen = sum(batch_order(loader), [])
    assert len(seen) == 20 and len(set(seen)) == 20
    assert seen == numpy.concatenate(loader.batch_indices()).tolist()


def test_shuffle_changes_with_the_epoch_and_repeats_for_the_same_seed_and_epoch():
    loader = DataLoader(Indexed(50), 10, shuffle=True, seed=1)
    first = batch_order(loader)
    assert batch_order(loader) == first  # same epoch again
    loader.set_epoch(1)
    second = batch_order(loader)
    assert second != first
    again = DataLoader(Indexed(50), 10, shuffle=True, seed=1)
    again.set_epoch(1)
    assert batch_order(again) == second
    other_seed = DataLoader(Indexed(50), 10, shuffle=True, seed=2)
    other_seed.set_epoch(1)
    assert batch_order(other_seed) != second


def test_each_seed_and_epoch_has_its_own_order():
    # Seeded by the pair, not by a sum: run 1's second epoch must not replay run 2's first.
    orders = set()
    for seed in range(4):
        for epoch in range(4):
            loader = DataLoader(Indexed(30), 30, shuffle=True, seed=seed)
            loader.set_epoch(epoch)
            orders.add(tuple(loader.batch_indices()[0].tolist()))
    assert len(orders) == 16


def test_each_example_draws_from_seed_epoch_and_index_not_from_its_position():
    plain, shuffled = DataLoader(Indexed(12), 5, seed=3), DataLoader(Indexed(12), 5, shuffle=True, seed=3)
    plain.set_epoch(2)
    shuffled.set_epoch(2)
    draws = {}
    for images, _ in plain:
        draws.update({int(image[0, 0, 0]): image[0, 0, 1] for image in images})
    for images, _ in shuffled:
        for image in images:
            index = int(image[0, 0, 0])
            assert image[0, 0, 1] == draws[index]
            assert image[0, 0, 1] == numpy.float32(numpy.random.default_rng([3, 2, index]).random())
    plain.set_epoch(3)
    assert all(image[0, 0, 1] != draws[int(image[0, 0, 0])] for images, _ in plain for image in images)


def test_batches_have_the_documented_dtypes_and_shapes():
    dataset = Indexed(7)
    images, labels = next(iter(DataLoader(dataset, 4)))
    assert images.dtype == numpy.float32 and images.shape == (4, 3, 2, 2)
    assert labels.dtype == numpy.int64 and labels.tolist() == [0, 1, 2, 0]


def write_pngs(folder, count: int) -> list:
    paths = []
    for index in range(count):
        pixels = numpy.roll(coordinates(24, 18), index, axis=1)
        paths.append(folder / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def assert_same_batches(first: DataLoader, second: DataLoader) -> None:
    pairs = list(zip(first, second, strict=True))
    assert pairs
    for (images, labels), (other_images, other_labels) in pairs:
        assert images.tobytes() == other_images.tobytes() and images.shape == other_images.shape
        assert labels.tobytes() == other_labels.tobytes() and labels.dtype == other_labels.dtype


def test_workers_give_the_same_batches_with_a_random_transform(tmp_path):
    paths = write_pngs(tmp_path, 11)
    dataset = ImageFiles(paths, [i % 2 for i in range(11)], ["a", "b"], train_transform(16))
    loaders = [DataLoader(dataset, 3, shuffle=True, seed=5, num_workers=workers) for workers in (0, 3)]
    for loader in loaders:
        loader.set_epoch(2)
    assert_same_batches(*loaders)
    images, labels = next(iter(loaders[0]))
    assert images.shape == (3, 3, 16, 16) and images.dtype == numpy.uint8 and labels.dtype == numpy.int64


def test_workers_give_the_same_synthetic_batches():
    dataset = SyntheticCarColours(size=20, image_size=32, seed=2, transform=train_transform(24))
    loaders = [DataLoader(dataset, 6, shuffle=True, seed=8, num_workers=workers) for workers in (0, 3)]
    assert_same_batches(*loaders)


def test_the_random_transform_changes_with_the_epoch(tmp_path):
    dataset = ImageFiles(write_pngs(tmp_path, 4), [0] * 4, ["a"], train_transform(16))
    loader = DataLoader(dataset, 4, seed=5)
    first, _ = next(iter(loader))
    loader.set_epoch(1)
    second, _ = next(iter(loader))
    assert all(not numpy.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("batch_size", [0, -3])
def test_loader_rejects_a_batch_size_below_one(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(Indexed(4), batch_size)


def test_loader_rejects_negative_workers():
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(Indexed(4), 2, num_workers=-1)


def pool_threads() -> set:
    return {thread for thread in threading.enumerate() if thread.name.startswith("ThreadPoolExecutor")}


def test_breaking_out_early_with_workers_does_not_hang():
    workers, batch_size = 2, 2
    dataset = Slow(200, delay=0.02)
    before = pool_threads()
    outcome = {}

    def consume():
        for images, _ in DataLoader(dataset, batch_size, num_workers=workers):
            outcome["first"] = images[:, 0, 0, 0].tolist()
            break
        outcome["loads"] = dataset.loads

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the loop did not return after break"
    assert outcome["first"] == [0.0, 1.0]
    assert outcome["loads"] < 200
    time.sleep(0.1)
    assert dataset.loads == outcome["loads"]  # nothing loads after the loop is left
    assert pool_threads() <= before  # the pool's threads have exited


def test_the_read_ahead_is_bounded():
    workers, batch_size = 2, 2
    dataset = Indexed(200)
    batches = iter(DataLoader(dataset, batch_size, num_workers=workers))
    next(batches)
    time.sleep(0.3)  # the consumer stalls: the workers fill the read-ahead and stop
    # The read-ahead is the batch handed out and at most 2 * workers more.
    assert batch_size < dataset.loads <= (2 * workers + 1) * batch_size
    batches.close()


def test_closing_cancels_the_batches_not_started():
    workers, batch_size = 2, 2
    dataset = Slow(200, delay=0.1)  # 0.2 s a batch
    batches = iter(DataLoader(dataset, batch_size, num_workers=workers))
    next(batches)  # after 0.2 s: batches 0 and 1 done, 2 (and perhaps already 3) started, 4 queued
    start = time.perf_counter()
    batches.close()
    assert time.perf_counter() - start < 2
    # A started batch finishes; batch 4, which could start only 0.2 s from now, never does.
    assert dataset.loads <= 2 * workers * batch_size


def test_a_worker_error_reaches_the_consumer(tmp_path):
    paths = write_pngs(tmp_path, 6)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    paths[4] = broken
    loader = DataLoader(ImageFiles(paths, [0] * 6, ["a"], ToArray()), 2, num_workers=2)
    with pytest.raises(OSError, match="broken.png"):
        list(loader)


def test_stratified_split_returns_both_parts_in_the_datas_order():
    labels = numpy.repeat([2, 0, 1], [9, 6, 5])[numpy.random.default_rng(0).permutation(20)]
    kept, held_out = stratified_split(labels, 0.3, seed=1)
    assert kept.tolist() == sorted(kept.tolist()) and held_out.tolist() == sorted(held_out.tolist())
    assert sorted(kept.tolist() + held_out.tolist()) == list(range(20))
    assert numpy.bincount(labels[held_out]).tolist() == [2, 2, 3]  # round(0.3 * 6, 0.3 * 5, 0.3 * 9)


def test_stratified_split_draws_each_class_independently():
    # Two interleaved classes of 10, 2 of each held out: the same positions in both classes by chance
    # with probability 1 / C(10, 2) = 1/45 per seed, not for every seed (one draw per class from a fresh generator).
    labels = numpy.tile([0, 1], 10)
    same = 0
    for seed in range(20):
        _, held_out = stratified_split(labels, 0.2, seed)
        same += (held_out[labels[held_out] == 0] // 2).tolist() == (held_out[labels[held_out] == 1] // 2).tolist()
    assert same <= 3


# ---------------------------------------------------------------- ImageFiles


def test_image_files_load_pixels_and_labels(tmp_path):
    pixels = coordinates(9, 5)
    pixels[2, 3] = (255, 0, 128)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels[::-1].copy()).save(tmp_path / "b.png")
    dataset = ImageFiles([tmp_path / "a.png", str(tmp_path / "b.png")], [1, 0], ["x", "y"], ToArray())
    assert len(dataset) == 2 and dataset.labels.dtype == numpy.int64
    image, label = dataset.load(0, rng())
    assert label == 1 and isinstance(label, int)
    assert image.dtype == numpy.float32 and image.shape == (3, 5, 9)
    numpy.testing.assert_allclose(image, as_array(pixels), rtol=1e-7, atol=0)
    assert image[:, 2, 3].tolist() == [1.0, 0.0, numpy.float32(128 / 255)]
    image, label = dataset.load(1, rng())
    numpy.testing.assert_allclose(image, as_array(pixels[::-1]), rtol=1e-7, atol=0)
    assert label == 0


def test_grey_and_rgba_files_come_back_as_rgb(tmp_path):
    grey = (numpy.arange(12, dtype=numpy.uint8) * 20).reshape(3, 4)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    rgba = numpy.dstack([coordinates(4, 3), numpy.full((3, 4), 255, dtype=numpy.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    dataset = ImageFiles([tmp_path / "grey.png", tmp_path / "rgba.png"], [0, 0], ["a"], ToArray())
    image, _ = dataset.load(0, rng())
    numpy.testing.assert_allclose(image, as_array(numpy.dstack([grey] * 3)), rtol=1e-7, atol=0)
    image, _ = dataset.load(1, rng())
    numpy.testing.assert_allclose(image, as_array(coordinates(4, 3)), rtol=1e-7, atol=0)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_come_out_white_not_the_colour_they_store(tmp_path, mode):
    """A cut-out car: a red, half-see-through red and clear pixels that store black."""
    pixels = numpy.zeros((2, 3, 4), dtype=numpy.uint8)  # every pixel black and clear
    pixels[0, 0] = (200, 0, 0, 255)
    pixels[0, 1] = (200, 0, 0, 128)
    cut_out = Image.fromarray(pixels, mode="RGBA")
    if mode == "RGBA":
        expected = [[(200, 0, 0), (228, 127, 127), (255, 255, 255)], [(255, 255, 255)] * 3]
    elif mode == "LA":
        cut_out = cut_out.convert("LA")
        expected = [[(60, 60, 60), (158, 158, 158), (255, 255, 255)], [(255, 255, 255)] * 3]
    else:  # a palette in which black is the see-through entry, as GIFs and small PNGs store it
        cut_out = cut_out.convert("RGB").quantize(colors=2)
        cut_out.info["transparency"] = cut_out.getpixel((2, 1))
        expected = [[(200, 0, 0), (200, 0, 0), (255, 255, 255)], [(255, 255, 255)] * 3]
    cut_out.save(tmp_path / "car.png")
    loaded, _ = ImageFiles([tmp_path / "car.png"], [0], ["a"], ToArray()).load(0, rng())
    numpy.testing.assert_allclose(loaded, as_array(numpy.array(expected, dtype=numpy.uint8)), atol=1.5 / 255)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_greys_are_scaled_to_8_bits_not_clipped(tmp_path, mode):
    """Pillow's own conversion would turn every value above 255 white."""
    grey = numpy.array([[0, 255, 256, 4000], [32768, 40000, 65280, 65535]], dtype=numpy.uint16)
    path = tmp_path / ("grey.png" if mode == "I;16" else "grey.tiff")
    Image.fromarray(grey).convert(mode).save(path)
    with Image.open(path) as opened:
        assert opened.mode == mode
    loaded, _ = ImageFiles([path], [0], ["a"], ToArray()).load(0, rng())
    numpy.testing.assert_allclose(loaded, as_array(numpy.dstack([grey >> 8] * 3).astype(numpy.uint8)), rtol=1e-7)


def test_a_photo_is_turned_upright_as_its_exif_orientation_says(tmp_path):
    pixels = coordinates(6, 4)  # stored 4 rows by 6 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones tag portraits
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif)
    upright, _ = ImageFiles([tmp_path / "phone.png"], [0], ["a"], ToArray()).load(0, rng())
    numpy.testing.assert_allclose(upright, as_array(numpy.rot90(pixels, k=-1)), rtol=1e-7)
    boxed, _ = ImageFiles([tmp_path / "phone.png"], [0], ["a"], ToArray(), boxes=[(0, 0, 6, 4)]).load(0, rng())
    numpy.testing.assert_allclose(boxed, as_array(pixels), rtol=1e-7)  # boxes are drawn on the stored grid


@pytest.mark.parametrize("box, region", [
    ((2, 1, 7, 4), (2, 1, 7, 4)),          # inside: columns 2..6, rows 1..3
    ((3, 2, 50, 40), (3, 2, 12, 8)),       # past the right and lower edges
    ((-4, -3, 5, 6), (0, 0, 5, 6)),        # above and left of the image
    ((-1, -1, 13, 9), (0, 0, 12, 8)),      # larger than the image on every side
])
def test_crop_boxes_are_clipped_to_the_image(tmp_path, box, region):
    pixels = coordinates(12, 8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    dataset = ImageFiles([tmp_path / "a.png"], [0], ["a"], ToArray(), boxes=[box])
    image, _ = dataset.load(0, rng())
    left, upper, right, lower = region
    assert image.shape == (3, lower - upper, right - left)
    numpy.testing.assert_allclose(image, as_array(pixels[upper:lower, left:right]), rtol=1e-7, atol=0)


def test_unreadable_file_raises_os_error_naming_it(tmp_path):
    path = tmp_path / "car.jpg"
    path.write_text("this is text, not a JPEG")
    dataset = ImageFiles([path], [0], ["a"], ToArray())
    with pytest.raises(OSError, match="car.jpg"):
        dataset.load(0, rng())


def test_missing_and_truncated_files_raise_os_error_naming_them(tmp_path):
    Image.fromarray(numpy.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=numpy.uint8)).save(
        tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    dataset = ImageFiles([tmp_path / "gone.png", tmp_path / "cut.png"], [0, 0], ["a"], ToArray())
    with pytest.raises(OSError, match="gone.png"):
        dataset.load(0, rng())
    with pytest.raises(OSError, match="cut.png"):
        dataset.load(1, rng())


def test_an_image_too_large_for_pillow_raises_os_error_naming_it(tmp_path, monkeypatch):
    """Pillow refuses images over twice MAX_IMAGE_PIXELS (a 200-megapixel phone photo) with an error
    that is no OSError; the training script and predict.py turn OSErrors into messages."""
    Image.new("RGB", (20, 10)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(OSError, match="huge.png is too large for Pillow.*Shrink it"):
        ImageFiles([tmp_path / "huge.png"], [0], ["a"], ToArray()).load(0, rng())


def test_image_files_reject_mismatched_lengths(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(ValueError, match="2 paths, 3 labels"):
        ImageFiles(paths, [0, 1, 0], ["a", "b"], ToArray())
    with pytest.raises(ValueError, match="1 boxes"):
        ImageFiles(paths, [0, 1], ["a", "b"], ToArray(), boxes=[(0, 0, 1, 1)])


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("width, height, size, expected", [
    (40, 20, 10, (20, 10)), (20, 40, 10, (10, 20)), (30, 50, 12, (12, 20)), (1000, 10, 1, (100, 1)),
    (16, 16, 48, (48, 48)),
    (49, 49, 16, (16, 16)), (98, 49, 16, (32, 16))])  # 16 * 49 / 49, as torchvision: 16 / 49 * 49 is 15.999...
def test_resize_int_sets_the_shorter_side_and_keeps_the_aspect_ratio(width, height, size, expected):
    image = Image.fromarray(coordinates(width, height))
    assert Resize(size)(image, rng()).size == expected


def test_resize_to_the_current_size_keeps_the_pixels():
    pixels = coordinates(40, 20)
    out = Resize(20)(Image.fromarray(pixels), rng())
    numpy.testing.assert_array_equal(numpy.asarray(out), pixels)


def test_resize_interpolates_bicubically_by_default():
    image = Image.fromarray(numpy.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=numpy.uint8))
    expected = image.resize((15, 10), Image.Resampling.BICUBIC)  # torchvision's choice for these recipes
    assert numpy.asarray(Resize(10)(image, rng())).tobytes() == numpy.asarray(expected).tobytes()
    assert numpy.asarray(Resize((10, 15))(image, rng())).tobytes() == numpy.asarray(expected).tobytes()


@pytest.mark.parametrize("size", [(12, 30), [7, 5], (20, 40)])
def test_resize_pair_is_height_then_width_exactly(size):
    out = Resize(size)(Image.fromarray(coordinates(40, 20)), rng())
    assert out.size == (size[1], size[0])  # Pillow's size is (width, height)


def test_center_crop_cuts_the_central_region():
    image = Image.fromarray(coordinates(20, 16))
    out = numpy.asarray(CenterCrop((6, 10))(image, rng()))  # 6 high, 10 wide
    assert out.shape == (6, 10, 3)
    numpy.testing.assert_array_equal(out[..., 0], numpy.broadcast_to(numpy.arange(5, 15), (6, 10)))
    numpy.testing.assert_array_equal(out[..., 1], numpy.broadcast_to(numpy.arange(5, 11)[:, None], (6, 10)))
    square = numpy.asarray(CenterCrop(4)(Image.fromarray(coordinates(10, 10)), rng()))
    numpy.testing.assert_array_equal(square, coordinates(10, 10)[3:7, 3:7])
    same = numpy.asarray(CenterCrop((16, 20))(image, rng()))
    numpy.testing.assert_array_equal(same, coordinates(20, 16))


def test_center_crop_with_an_odd_margin_places_it_as_torchvision():
    out = numpy.asarray(CenterCrop(4)(Image.fromarray(coordinates(11, 9)), rng()))
    assert out.shape == (4, 4, 3)
    # torchvision: int(round(margin / 2)), Python's round halving to even: 3.5 -> 4, 2.5 -> 2.
    assert out[0, 0, 0] == 4 and out[0, 0, 1] == 2


def test_resize_truncates_the_long_side_as_torchvision():
    assert Resize(73)(Image.fromarray(coordinates(300, 200)), rng()).size == (109, 73)  # int(73 * 1.5) = 109
    assert Resize(numpy.int64(10))(Image.fromarray(coordinates(40, 20)), rng()).size == (20, 10)


@pytest.mark.parametrize("width, height, size", [(5, 5, 6), (10, 4, 5), (3, 10, (5, 4)), (10, 10, (11, 2))])
def test_center_crop_rejects_a_too_small_image(width, height, size):
    with pytest.raises(ValueError, match="resize it first"):
        CenterCrop(size)(Image.fromarray(coordinates(width, height)), rng())


def test_random_resized_crop_of_all_the_area_at_ratio_one_is_the_whole_image_resized():
    pixels = coordinates(30, 30)
    image = Image.fromarray(pixels)
    crop = RandomResizedCrop(30, scale=(1, 1), ratio=(1, 1))
    for seed in range(5):
        assert crop.region(30, 30, rng(seed)) == (0, 0, 30, 30)
        numpy.testing.assert_array_equal(numpy.asarray(crop(image, rng(seed))), pixels)
    smaller = RandomResizedCrop(12, scale=(1, 1), ratio=(1, 1))(image, rng(3))
    expected = image.resize((12, 12), Image.Resampling.BICUBIC)
    numpy.testing.assert_array_equal(numpy.asarray(smaller), numpy.asarray(expected))


@pytest.mark.parametrize("width, height, scale, ratio", [
    (200, 150, (0.08, 1.0), (3 / 4, 4 / 3)), (64, 64, (0.35, 1.0), (3 / 4, 4 / 3)),
    (50, 300, (0.2, 0.5), (0.5, 2.0)),  # its fallback, 50 x 100, also has a third of the area and aspect 1/2
    (31, 17, (0.5, 1.0), (0.5, 2.0)),
    (200, 150, (0.1, 0.5), (2.0, 3.0))])  # only wide crops: width is the side that grows with the aspect
def test_random_resized_crop_regions_lie_inside_and_respect_scale_and_ratio(width, height, scale, ratio):
    crop = RandomResizedCrop(8, scale=scale, ratio=ratio)
    regions = set()
    for seed in range(300):
        left, top, right, bottom = crop.region(width, height, rng(seed))
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        crop_width, crop_height = right - left, bottom - top
        regions.add((left, top, right, bottom))
        if (crop_width, crop_height) == (width, height):
            continue  # the whole image: a draw, or the fallback (the image's aspect lies in ratio)
        # Each side is the drawn (real) side rounded, so it is within half a pixel of a side pair whose
        # area fraction lies in scale and whose aspect lies in ratio.
        assert (crop_width - 0.5) * (crop_height - 0.5) <= scale[1] * width * height
        assert (crop_width + 0.5) * (crop_height + 0.5) >= scale[0] * width * height
        assert (crop_width - 0.5) / (crop_height + 0.5) <= ratio[1]
        assert (crop_width + 0.5) / (crop_height - 0.5) >= ratio[0]
    assert len(regions) > 30  # the draws vary


@pytest.mark.parametrize("ratio", [(1 / 2, 2.0), (1.0, 4.0)])
def test_random_resized_crop_draws_the_aspect_log_uniformly(ratio):
    # log(aspect) uniform on [log r0, log r1]: half the crops are wider than the geometric mean sqrt(r0 * r1)
    # (a plain uniform aspect puts only a third of them below it). Every draw here fits in the image.
    crop = RandomResizedCrop(8, scale=(0.1, 0.2), ratio=ratio)
    aspects = [(right - left) / (bottom - top) for left, top, right, bottom in
               (crop.region(1000, 1000, rng(seed)) for seed in range(400))]
    wider = sum(aspect > (ratio[0] * ratio[1]) ** 0.5 for aspect in aspects)
    assert 160 < wider < 240  # Binomial(400, 1/2): mean 200, standard deviation 10


def test_random_resized_crop_falls_back_only_after_ten_rejected_draws():
    # A 100 x 50 image, square crops of a quarter to all of its area: a draw fits when its side rounds to at
    # most 50, i.e. its area is below 50.5 ** 2, with probability (2550.25 - 1250) / 3750 = 0.3467. All 10
    # draws fail with probability 0.6533 ** 10 = 1.42%, and then comes the central square (25, 0, 75, 50).
    crop = RandomResizedCrop(8, scale=(0.25, 1.0), ratio=(1, 1))
    fallbacks = sum(crop.region(100, 50, rng(seed)) == (25, 0, 75, 50) for seed in range(2000))
    assert 10 < fallbacks < 50  # about Poisson(28.3); 1 draw would give 1307, 100 draws none


@pytest.mark.parametrize("width, height, ratio, region", [
    (1000, 10, (1.0, 1.0), (495, 0, 505, 10)),           # too wide: the central square
    (10, 1000, (3 / 4, 4 / 3), (0, 493, 10, 506)),       # too tall: height = round(10 / (3/4)) = 13
    (1000, 12, (2.0, 3.0), (482, 0, 518, 12)),           # too wide: width = 12 * 3 = 36
])
def test_random_resized_crop_falls_back_to_the_central_crop(width, height, ratio, region):
    crop = RandomResizedCrop(10, ratio=ratio)  # no draw of at least 8% of the area fits in the image
    for seed in range(20):
        assert crop.region(width, height, rng(seed)) == region


def test_random_resized_crop_fallback_output_is_the_central_square():
    pixels = coordinates(250, 10)
    out = RandomResizedCrop(10, ratio=(1, 1))(Image.fromarray(pixels), rng(1))
    numpy.testing.assert_array_equal(numpy.asarray(out), pixels[:, 120:130])  # (250 - 10) // 2 = 120


@pytest.mark.parametrize("width, height", [(30, 40), (40, 30), (40, 40)])
def test_random_resized_crop_places_a_drawn_region_anywhere_up_to_the_edges(width, height):
    # Area fraction and aspect fixed so that every draw is a 30 x 30 square: it must be accepted even
    # where it spans a whole side, and its corner is uniform over every place it fits, edges included.
    crop = RandomResizedCrop(8, scale=(900 / (width * height),) * 2, ratio=(1, 1))
    regions = [crop.region(width, height, rng(seed)) for seed in range(300)]
    assert all((right - left, bottom - top) == (30, 30) for left, top, right, bottom in regions)
    assert {left for left, _, _, _ in regions} == set(range(width - 30 + 1))
    assert {top for _, top, _, _ in regions} == set(range(height - 30 + 1))


def test_random_resized_crop_output_size_is_height_then_width():
    out = RandomResizedCrop((10, 24))(Image.fromarray(coordinates(60, 40)), rng())
    assert out.size == (24, 10)


def test_random_resized_crop_cuts_the_region_out_then_resizes_it_as_torchvision():
    # torchvision crops, then resizes the crop alone: Pillow's resize(box=...) would let the bicubic filter
    # read the pixels around the region (15 levels off at the edges here).
    image = Image.fromarray(numpy.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=numpy.uint8))
    crop = RandomResizedCrop(16, scale=(0.2, 0.5))  # never the whole image: pixels lie around each region
    for seed in range(5):
        expected = image.crop(crop.region(80, 60, rng(seed))).resize((16, 16), Image.Resampling.BICUBIC)
        assert numpy.asarray(crop(image, rng(seed))).tobytes() == numpy.asarray(expected).tobytes()


@pytest.mark.parametrize("scale, ratio", [
    ((0.0, 1.0), (1, 1)), ((0.5, 0.4), (1, 1)), ((0.5, 1.1), (1, 1)), ((-0.1, 0.5), (1, 1)),
    ((0.5, 1.0), (0.0, 1.0)), ((0.5, 1.0), (2.0, 1.0)), ((0.5, 1.0), (-1.0, 1.0))])
def test_random_resized_crop_rejects_bad_scale_or_ratio(scale, ratio):
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(8, scale=scale, ratio=ratio)


def test_horizontal_flip_mirrors_with_p_one_and_never_with_p_zero():
    pixels = coordinates(7, 3)
    image = Image.fromarray(pixels)
    for seed in range(10):
        numpy.testing.assert_array_equal(numpy.asarray(RandomHorizontalFlip(1.0)(image, rng(seed))), pixels[:, ::-1])
        numpy.testing.assert_array_equal(numpy.asarray(RandomHorizontalFlip(0.0)(image, rng(seed))), pixels)


def test_horizontal_flip_half_the_time():
    flips = sum(RandomHorizontalFlip()(Image.fromarray(coordinates(4, 1)), rng(seed)).getpixel((0, 0))[0] == 3
                for seed in range(400))
    assert 140 < flips < 260  # Binomial(400, 0.5): mean 200, standard deviation 10


def test_to_array_shape_dtype_and_range():
    pixels = coordinates(6, 4)
    pixels[0, 0] = (0, 255, 51)
    out = ToArray()(Image.fromarray(pixels), rng())
    assert out.shape == (3, 4, 6) and out.dtype == numpy.float32 and out.flags.c_contiguous
    numpy.testing.assert_allclose(out, as_array(pixels), rtol=1e-7, atol=0)
    assert out[:, 0, 0].tolist() == [0.0, 1.0, numpy.float32(0.2)]
    assert out.min() >= 0 and out.max() <= 1
    grey = ToArray()(Image.fromarray(numpy.full((2, 3), 102, dtype=numpy.uint8), mode="L"), rng())
    assert grey.shape == (3, 2, 3) and numpy.all(grey == numpy.float32(0.4))


def test_pil_to_array_gives_the_pixels_as_they_are_channels_first():
    pixels = coordinates(6, 4)
    out = PILToArray()(Image.fromarray(pixels), rng())
    assert out.shape == (3, 4, 6) and out.dtype == numpy.uint8 and out.flags.c_contiguous and out.flags.writeable
    numpy.testing.assert_array_equal(out, pixels.transpose(2, 0, 1))
    grey = PILToArray()(Image.fromarray(numpy.full((2, 3), 102, dtype=numpy.uint8), mode="L"), rng())
    assert grey.shape == (3, 2, 3) and numpy.all(grey == 102)


def test_normalize_is_x_minus_mean_over_std_per_channel():
    # ImageNet's statistics in RGB order, red first (torchvision's documentation, timm's IMAGENET_DEFAULT_*).
    mean, std = numpy.array([0.485, 0.456, 0.406]), numpy.array([0.229, 0.224, 0.225])
    array = numpy.stack([mean, mean + std, mean - 2 * std, numpy.zeros(3)], axis=1).reshape(3, 2, 2)
    out = Normalize()(array.astype(numpy.float32), rng())
    assert out.dtype == numpy.float32 and out.shape == (3, 2, 2)
    expected = numpy.stack([numpy.zeros(3), numpy.ones(3), numpy.full(3, -2.0), -mean / std], axis=1).reshape(3, 2, 2)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    custom = Normalize(mean=(0.5, 0.0, 1.0), std=(0.5, 2.0, 0.25))(numpy.ones((3, 1, 2), dtype=numpy.float32), rng())
    numpy.testing.assert_array_equal(custom[:, 0, 0], [1.0, 0.5, 0.0])


def test_compose_applies_in_order():
    pixels = coordinates(8, 6)
    out = Compose([CenterCrop(4), RandomHorizontalFlip(1.0), ToArray()])(Image.fromarray(pixels), rng())
    numpy.testing.assert_allclose(out, as_array(pixels[1:5, 2:6][:, ::-1]), rtol=1e-7, atol=0)


def test_eval_transform_resizes_then_crops_the_centre():
    # 64 / 0.875 = 73.1: the shorter side becomes 73. This image already has it, so only the crop acts:
    # left = round(82 / 2) = 41, top = round(9 / 2) = 4 (round half to even, as torchvision).
    pixels = coordinates(146, 73)
    out = eval_transform(64)(Image.fromarray(pixels), rng())
    assert out.shape == (3, 64, 64) and out.dtype == numpy.uint8
    numpy.testing.assert_array_equal(out, pixels[4:68, 41:105].transpose(2, 0, 1))


def test_eval_transform_resizes_bicubically_as_timm_for_swin():
    # timm's Swin configs interpolate bicubically: 300 x 200 to 109 x 73 (int(73 * 1.5)), then the centre
    # 64 x 64 from left = round(45 / 2) = 22, top = round(9 / 2) = 4.
    image = Image.fromarray(numpy.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=numpy.uint8))
    resized = numpy.asarray(image.resize((109, 73), Image.Resampling.BICUBIC))
    numpy.testing.assert_array_equal(eval_transform(64)(image, rng()), resized[4:68, 22:86].transpose(2, 0, 1))


def test_eval_transform_rounds_the_resize_down_as_timm():
    # 32 / 0.875 = 36.57: timm resizes to floor = 36 (not 37), so a 36 x 36 image is only cropped: (36 - 32) / 2 = 2.
    pixels = coordinates(36, 36)
    out = eval_transform(32)(Image.fromarray(pixels), rng())
    numpy.testing.assert_array_equal(out, pixels[2:34, 2:34].transpose(2, 0, 1))


@pytest.mark.parametrize("width, height", [(100, 50), (37, 90), (300, 301)])
def test_eval_transform_shape_from_any_image(width, height):
    out = eval_transform(64)(Image.fromarray(coordinates(width % 256, height % 256)), rng())
    assert out.shape == (3, 64, 64) and out.dtype == numpy.uint8


def test_train_transform_is_reproducible_for_the_same_rng_seed():
    image = Image.fromarray(numpy.random.default_rng(0).integers(0, 256, (48, 60, 3), dtype=numpy.uint8))
    transform = train_transform(32)
    first = transform(image, rng(9))
    assert first.shape == (3, 32, 32) and first.dtype == numpy.uint8
    assert transform(image, rng(9)).tobytes() == first.tobytes()
    assert train_transform(32)(image, rng(9)).tobytes() == first.tobytes()
    assert transform(image, rng(10)).tobytes() != first.tobytes()


def test_train_transform_is_the_documented_recipe():
    # A bicubic random resized crop of 35% to all of the area at aspects 3/4 to 4/3, a flip half the time,
    # ImageNet's normalisation (of the batch, later): the draws and the arithmetic of the pipeline spelled out.
    recipe = Compose([RandomResizedCrop(24, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3),
                                        interpolation=Image.Resampling.BICUBIC),
                      RandomHorizontalFlip(p=0.5), ToArray(), Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    image = Image.fromarray(numpy.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=numpy.uint8))
    for seed in range(8):  # flips and not
        assert normalize_pixels(train_transform(24)(image, rng(seed))).tobytes() == recipe(image, rng(seed)).tobytes()


def test_train_transform_crops_keep_at_least_35_percent_of_the_image():
    crop = train_transform(16).transforms[0]
    areas = []
    for seed in range(300):
        left, top, right, bottom = crop.region(100, 100, rng(seed))
        areas.append((right - left) * (bottom - top) / 100 ** 2)
    # Each side is a drawn side rounded to whole pixels: within half a pixel of an area fraction in [0.35, 1].
    assert min(areas) >= 0.35 * (1 - 0.5 / 30) ** 2 and min(areas) < 0.45
    assert max(areas) <= 1


# ---------------------------------------------------------------- SyntheticCarColours


def test_synthetic_classes_are_the_eleven_colours():
    dataset = SyntheticCarColours(size=11)
    assert dataset.classes == list(COLOURS) and len(dataset.classes) == 11 and dataset.num_classes == 11


def test_synthetic_example_is_a_pure_function_of_seed_split_and_index():
    first, second = SyntheticCarColours(size=30, seed=4, split="val"), SyntheticCarColours(size=30, seed=4, split="val")
    numpy.testing.assert_array_equal(first.labels, second.labels)
    for index in (0, 7, 29):
        image = numpy.asarray(first.image(index))
        assert image.tobytes() == numpy.asarray(first.image(index)).tobytes()
        assert image.tobytes() == numpy.asarray(second.image(index)).tobytes()
        assert first.load(index, rng(1))[0].tobytes() == second.load(index, rng(2))[0].tobytes()


def test_synthetic_pictures_are_drawn_once_and_kept_unless_the_set_is_too_large(monkeypatch):
    dataset = SyntheticCarColours(size=30, image_size=32, seed=4)
    drawn = []
    monkeypatch.setattr(dataset, "draw", lambda index: drawn.append(index) or numpy.full((32, 32, 3), index, "uint8"))
    assert [numpy.asarray(dataset.image(index))[0, 0, 0] for index in (3, 5, 3, 3)] == [3, 5, 3, 3]
    assert drawn == [3, 5]
    monkeypatch.setattr(synthetic, "MAX_KEPT_BYTES", 30 * 32 * 32 * 3 - 1)
    assert SyntheticCarColours(size=30, image_size=32).drawn is None  # drawn anew each time
    assert SyntheticCarColours(size=29, image_size=32).drawn == {}


def test_synthetic_example_is_the_same_in_every_python_process():
    # Another process hashes strings with another key (PYTHONHASHSEED): the split must not be seeded by hash().
    script = ("from datasets.synthetic import SyntheticCarColours; d = SyntheticCarColours(size=20, split='val'); "
              "print(d.labels.tolist(), d.image(3).tobytes().hex())")
    dataset = SyntheticCarColours(size=20, split="val")
    here = f"{dataset.labels.tolist()} {dataset.image(3).tobytes().hex()}"
    for hash_seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True,
                               text=True, check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert other.stdout.strip() == here


def test_synthetic_augmentation_draws_from_the_loaders_generator():
    # The picture is fixed by (seed, split, index); a random transform on top draws from the rng it is given.
    transform = train_transform(24)
    dataset = SyntheticCarColours(size=5, image_size=32, transform=transform)
    for seed in range(3):
        image, _ = dataset.load(2, rng(seed))
        assert image.tobytes() == transform(dataset.image(2), rng(seed)).tobytes()
    assert dataset.load(2, rng(0))[0].tobytes() != dataset.load(2, rng(1))[0].tobytes()


def test_synthetic_seeds_and_splits_differ():
    base = SyntheticCarColours(size=30, seed=0, split="train")
    others = [SyntheticCarColours(size=30, seed=1, split="train"), SyntheticCarColours(size=30, seed=0, split="val"),
              SyntheticCarColours(size=30, seed=0, split="test")]
    for other in others:
        assert not numpy.array_equal(base.labels, other.labels)
        assert all(not numpy.array_equal(numpy.asarray(base.image(i)), numpy.asarray(other.image(i))) for i in range(5))


def test_synthetic_image_size_mode_and_default_transform():
    dataset = SyntheticCarColours(size=3, image_size=40)
    image = dataset.image(1)
    assert image.mode == "RGB" and image.size == (40, 40)
    array, label = dataset.load(1, rng())
    assert array.shape == (3, 40, 40) and array.dtype == numpy.float32 and label == dataset.labels[1]
    expected = Normalize()(as_array(numpy.asarray(image)), rng())
    numpy.testing.assert_allclose(array, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 10, 11, 12, 23, 100, 2200])
def test_synthetic_labels_are_balanced(size):
    counts = SyntheticCarColours(size=size, seed=size).class_counts()
    assert counts.sum() == size and len(counts) == 11
    assert set(counts.tolist()) <= {size // 11, size // 11 + 1}
    assert (counts == size // 11 + 1).sum() == size % 11


@pytest.mark.parametrize("kwargs", [{"split": "training"}, {"split": "Train"}, {"size": 0}, {"size": -5},
                                    {"image_size": 15}, {"image_size": 0}])
def test_synthetic_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticCarColours(**kwargs)


def car_colour(image: Image.Image) -> numpy.ndarray:
    """The median colour of the pixels far (> 30 levels) from the sky (top row) and the ground (bottom
    row): the car's paint, with its windows and wheels in the minority."""
    pixels = numpy.asarray(image, dtype=numpy.float64)
    sky, ground = numpy.median(pixels[0], axis=0), numpy.median(pixels[-1], axis=0)
    far = (numpy.linalg.norm(pixels - sky, axis=-1) > 30) & (numpy.linalg.norm(pixels - ground, axis=-1) > 30)
    return numpy.median(pixels[far], axis=0)


@pytest.fixture(scope="module")
def colour_by_class() -> dict:
    """Per class, the median over 30 examples of the car colour, and the mean whole-image colour."""
    dataset = SyntheticCarColours(size=330, image_size=64, split="test", seed=7)
    cars, means = {}, {}
    for name in COLOURS:
        indices = numpy.flatnonzero(dataset.labels == dataset.classes.index(name))
        assert len(indices) == 30
        images = [dataset.image(int(index)) for index in indices]
        cars[name] = numpy.median([car_colour(image) for image in images], axis=0)
        means[name] = numpy.mean([numpy.asarray(image, dtype=numpy.float64).mean() for image in images])
    return {"car": cars, "mean": means}


@pytest.mark.parametrize("name", list(COLOURS))
def test_synthetic_paint_is_the_label_colour_under_some_lighting(colour_by_class, name):
    # The paint is COLOURS[name] * light, light in LIGHT (0.9 to 1.1), plus noise: the median car colour
    # lies near that segment of colours (a few levels of noise, and the windows and wheels pulling the median).
    car, paint = colour_by_class["car"][name], numpy.array(COLOURS[name], dtype=numpy.float64)
    light = numpy.clip(car @ paint / (paint @ paint), *LIGHT)
    assert numpy.linalg.norm(car - light * paint) < 15, (car, light * paint)


def test_synthetic_cars_stand_under_a_sky_and_fill_most_of_the_frame():
    dataset = SyntheticCarColours(size=40, image_size=64, split="val", seed=3)
    for index in range(len(dataset)):
        pixels = numpy.asarray(dataset.image(index), dtype=numpy.float64)
        sky = numpy.median(pixels[0], axis=0)
        assert sky[2] >= sky[0] - 8 and sky.min() > 60  # between clear blue and overcast grey (noise aside)
        # The car's wheels (tyres of 15 levels, darker than any sky or ground) lie 60 % of its length apart.
        tyres = numpy.flatnonzero((pixels.max(axis=-1) < 45).any(axis=0))
        assert tyres.max() - tyres.min() >= 0.6 * 0.65 * 64


def test_synthetic_paint_channels_and_brightness_follow_the_colours(colour_by_class):
    car = colour_by_class["car"]
    red, green, blue = car["Red"], car["Green"], car["Blue"]
    assert red[0] > 2 * red[1] and red[0] > 2 * red[2]
    assert green[1] > 1.5 * green[0] and green[1] > 1.5 * green[2]
    assert blue[2] > 2 * blue[0] and blue[2] > 1.5 * blue[1]
    assert min(car["Yellow"][:2]) > 3 * car["Yellow"][2]
    # The neutral paints differ only in brightness, every step larger than the lighting can hide at the median.
    brightness = {name: car[name].mean() for name in ("Black", "Grey", "Silver", "White")}
    assert brightness["Black"] < brightness["Grey"] < brightness["Silver"] < brightness["White"]
    assert colour_by_class["mean"]["Black"] < colour_by_class["mean"]["White"]


def test_loader_over_synthetic_with_train_transform():
    dataset = SyntheticCarColours(size=13, image_size=48, transform=train_transform(64))
    batches = list(DataLoader(dataset, 5, shuffle=True, num_workers=2))
    assert [images.shape for images, _ in batches] == [(5, 3, 64, 64), (5, 3, 64, 64), (3, 3, 64, 64)]
    assert all(images.dtype == numpy.uint8 and labels.dtype == numpy.int64 for images, labels in batches)
    assert sorted(numpy.concatenate([labels for _, labels in batches]).tolist()) == sorted(dataset.labels.tolist())


@pytest.mark.torch
@pytest.mark.parametrize("width, height", [(300, 200), (146, 73), (77, 131), (64, 64)])
def test_eval_transform_matches_torchvision(width, height):
    tv = pytest.importorskip("torchvision.transforms")
    image = Image.fromarray(numpy.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=numpy.uint8))
    reference = tv.Compose([tv.Resize(73, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(64),
                            tv.ToTensor(), tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image).numpy()
    numpy.testing.assert_allclose(normalize_pixels(eval_transform(64)(image, rng())), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_random_resized_crop_matches_torchvision_for_the_same_region():
    functional = pytest.importorskip("torchvision.transforms.functional")
    image = Image.fromarray(numpy.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=numpy.uint8))
    crop = RandomResizedCrop((16, 24), scale=(0.2, 0.5))
    for seed in range(5):
        left, top, right, bottom = crop.region(80, 60, rng(seed))
        reference = functional.resized_crop(image, top, left, bottom - top, right - left, [16, 24],
                                            functional.InterpolationMode.BICUBIC)
        assert numpy.asarray(crop(image, rng(seed))).tobytes() == numpy.asarray(reference).tobytes()


@pytest.mark.torch
@pytest.mark.parametrize("size, width, height", [(64, 300, 200), (224, 320, 480), (32, 40, 40)])
def test_eval_transform_matches_timms_default_eval_transform(size, width, height):
    # timm's own defaults, none of ours: crop_pct 0.875 (resize to floor(size / 0.875)), ImageNet's mean and std.
    timm_data = pytest.importorskip("timm.data")
    reference_transform = timm_data.create_transform(size, is_training=False, interpolation="bicubic")
    image = Image.fromarray(numpy.random.default_rng(size).integers(0, 256, (height, width, 3), dtype=numpy.uint8))
    reference = reference_transform(image).numpy()
    numpy.testing.assert_allclose(normalize_pixels(eval_transform(size)(image, rng())), reference, rtol=1e-6,
                                  atol=1e-6)


class Numbered(Dataset):
    """Example i is an image of value i and label i: which examples a batch holds is plain to see."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def load(self, index: int, rng):
        return numpy.full((1, 1, 1), index, dtype=numpy.float32), index


@pytest.mark.parametrize("count, batch_size, drop_last", [(20, 4, True), (22, 4, False), (21, 6, False)])
def test_ranks_share_each_batch_of_one_process_and_see_each_image_once(count, batch_size, drop_last):
    whole = DataLoader(Numbered(count), batch_size, shuffle=True, drop_last=drop_last, seed=3)
    whole.set_epoch(2)
    expected = [labels for _, labels in whole]
    for world_size in (2, 3, 6):
        if batch_size % world_size:
            continue
        shards = [DataLoader(Numbered(count), batch_size, shuffle=True, drop_last=drop_last, seed=3, rank=rank,
                             world_size=world_size) for rank in range(world_size)]
        for shard in shards:
            shard.set_epoch(2)
        batches = [[labels for _, labels in shard] for shard in shards]
        assert [len(b) for b in batches] == [len(shard) for shard in shards]
        for step, labels in enumerate(expected):  # the ranks' shares, in rank order, make the batch
            shares = [b[step] for b in batches if step < len(b)]
            numpy.testing.assert_array_equal(numpy.concatenate(shares), labels)
            if len(labels) == batch_size:
                assert all(len(share) == batch_size // world_size for share in shares)


def test_a_batch_that_does_not_split_evenly_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="a batch of 6 does not split evenly over 4 processes"):
        DataLoader(Numbered(8), 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"rank must lie in \[0, world_size = 2\)"):
        DataLoader(Numbered(8), 4, rank=2, world_size=2)
