"""Datasets and the DataLoader: images on disk (or drawn in memory) to batches on the host.

A dataset is a sequence of labelled examples. ``dataset.load(index, rng)`` returns one as
``(image, label)``, the image a ``(3, H, W)`` array once the dataset's transform has run: uint8
pixels with ``train_transform`` and ``eval_transform``, float32 with ``ToArray``.
Random augmentation draws from ``rng``, a generator the DataLoader derives from
``(seed, epoch, index)``: a batch comes out the same whichever thread decoded it and however many
threads there are, so a run can be repeated exactly.

Batches stay on the host as NumPy arrays; ``PrefetchLoader`` (datasets/prefetch.py) moves each to
the device and normalises it there.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy
from PIL import Image, ImageOps

Transform = Callable[[Image.Image, numpy.random.Generator], numpy.ndarray]


class Dataset:
    """Labelled images. Subclasses set ``classes`` and ``labels`` and implement ``load``."""

    classes: list[str]
    labels: numpy.ndarray  # (N,) int64, one class index per example

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int, rng: numpy.random.Generator) -> tuple[numpy.ndarray, int]:
        """Example ``index`` as ``(image (3, H, W), label)``, augmented with ``rng``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[numpy.ndarray, int]:
        return self.load(index, numpy.random.default_rng(index))

    def example_names(self) -> list[str]:
        """A name for each example (a file's name; for generated data, its position): what tells
        two splits of the same data apart."""
        return [str(index) for index in range(len(self))]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> numpy.ndarray:
        """How many examples each class has, in the order of ``classes``."""
        return numpy.bincount(self.labels, minlength=self.num_classes)


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB; 16-bit greys (``I;16``, and ``I`` as Pillow opens 16-bit PNGs and TIFFs)
    scaled to 8 bits, where Pillow's own conversion would clip every value above 255 to white.

    Transparent pixels come out white, as a viewer shows a cut-out car on a page: dropping the
    alpha channel would show the colour they happen to store, black in most files.
    """
    if image.mode.startswith("I"):
        pixels = numpy.asarray(image).astype(numpy.int64)
        image = Image.fromarray((numpy.clip(pixels, 0, 65535) >> 8).astype(numpy.uint8))
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


class ImageFiles(Dataset):
    """Image files with their labels; each is read with Pillow, converted to RGB, optionally cropped
    to a box ``(left, upper, right, lower)`` in pixels (clipped to the image), and transformed.

    Without boxes, a photo is first turned upright as its EXIF orientation says (phones store
    portraits sideways); boxes are left in the stored pixel grid, where the data sets drew them.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int], classes: Sequence[str], transform: Transform,
                 boxes: Sequence[tuple[int, int, int, int]] | None = None):
        if len(paths) != len(labels) or (boxes is not None and len(boxes) != len(paths)):
            raise ValueError(f"got {len(paths)} paths, {len(labels)} labels"
                             + ("" if boxes is None else f" and {len(boxes)} boxes") + "; they must match")
        self.paths = [os.fspath(path) for path in paths]  # strings: a million Path objects cost gigabytes
        self.labels = numpy.asarray(labels, dtype=numpy.int64)
        self.classes = list(classes)
        self.transform = transform
        self.boxes = boxes

    def load(self, index: int, rng: numpy.random.Generator) -> tuple[numpy.ndarray, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = as_rgb(image if self.boxes is not None else ImageOps.exif_transpose(image))
        except OSError as error:
            raise OSError(f"cannot read the image {path}: {error}. Replace or delete the file.") from error
        except Image.DecompressionBombError as error:  # no OSError: it would end a run with a traceback
            raise OSError(f"the image {path} is too large for Pillow: {error} Shrink it, or delete it.") from error
        if self.boxes is not None:  # clipped here, where the image's size is known without extra reads
            left, upper, right, lower = self.boxes[index]
            image = image.crop((max(left, 0), max(upper, 0), min(right, image.width), min(lower, image.height)))
        return self.transform(image, rng), int(self.labels[index])

    def example_names(self) -> list[str]:
        return [os.path.basename(path) for path in self.paths]  # not the folder, which may move

    def select(self, indices: Sequence[int], transform: Transform | None = None) -> ImageFiles:
        """The files at ``indices``, read with ``transform`` (by default this set's)."""
        return ImageFiles([self.paths[index] for index in indices], self.labels[list(indices)], self.classes,
                          transform or self.transform,
                          None if self.boxes is None else [self.boxes[index] for index in indices])


class Subset(Dataset):
    """The examples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = numpy.asarray(indices, dtype=numpy.int64)
        self.labels = dataset.labels[self.indices]
        self.classes = dataset.classes

    def load(self, index: int, rng: numpy.random.Generator) -> tuple[numpy.ndarray, int]:
        return self.dataset.load(int(self.indices[index]), rng)

    def example_names(self) -> list[str]:
        names = self.dataset.example_names()
        return [names[index] for index in self.indices]


class DataLoader:
    """Batches of ``(images (B, 3, H, W), labels (B,) int64)`` as NumPy arrays, the images in the
    dtype the transform gives (uint8 pixels with ``train_transform`` and ``eval_transform``).

    ``shuffle`` draws a new order each epoch from ``(seed, epoch)``; call ``set_epoch`` before
    each epoch (the training loop does). ``num_workers`` threads decode images ahead of the
    consumer (Pillow releases the GIL while decoding); 0 decodes in the calling thread.

    For data parallelism (minigrad.distributed), ``world_size`` processes each load their
    ``rank``'s share of every batch: the batches are those of one process (``batch_size`` is the
    global batch, split evenly), whatever the number of ranks, and each image is seen once an
    epoch, with the same augmentation (drawn from the seed, the epoch and the image's index).
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, num_workers: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size = {world_size}), got {rank}")
        if batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} does not split evenly over {world_size} processes: "
                             f"choose a batch size that is a multiple of {world_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.num_workers = seed, num_workers
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        # A last batch smaller than the number of processes leaves some of them without a share.
        return full + (1 if rest and not self.drop_last and self.rank < rest else 0)

    def batch_indices(self) -> list[numpy.ndarray]:
        """The indices of each batch of this epoch (of this process's share of it), in order."""
        count = len(self.dataset)
        order = (numpy.random.default_rng([self.seed, self.epoch]).permutation(count) if self.shuffle
                 else numpy.arange(count))
        full, rest = divmod(count, self.batch_size)
        batches = [order[start:start + self.batch_size]
                   for start in range(0, (full + (1 if rest and not self.drop_last else 0)) * self.batch_size,
                                      self.batch_size)]
        shares = [numpy.array_split(batch, self.world_size)[self.rank] for batch in batches]
        return [share for share in shares if len(share)]

    def collate(self, indices: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Load the examples at ``indices`` and stack them into one batch."""
        examples = [self.dataset.load(int(index), numpy.random.default_rng([self.seed, self.epoch, int(index)]))
                    for index in indices]
        images = numpy.stack([image for image, _ in examples])
        labels = numpy.array([label for _, label in examples], dtype=numpy.int64)
        return images, labels

    def __iter__(self) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        batches = self.batch_indices()
        if self.num_workers == 0:
            yield from map(self.collate, batches)
            return
        pool = ThreadPoolExecutor(self.num_workers)
        pending: deque = deque()
        try:
            for indices in batches:
                pending.append(pool.submit(self.collate, indices))
                if len(pending) > 2 * self.num_workers:  # a bounded read-ahead
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)



def stratified_split(labels: numpy.ndarray, fraction: float, seed: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Indices (kept, held out): a ``fraction`` of each class held out, chosen at random from
    ``seed``; a class with at least two examples keeps one on each side."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    rng = numpy.random.default_rng(seed)
    held_out = numpy.zeros(len(labels), dtype=bool)
    for label in numpy.unique(labels):
        members = rng.permutation(numpy.flatnonzero(labels == label))
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held_out[members[:count]] = True
    return numpy.flatnonzero(~held_out), numpy.flatnonzero(held_out)
