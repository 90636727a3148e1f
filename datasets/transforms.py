"""Image transforms on Pillow images, with torchvision's arithmetic, the random generator passed in.

Each transform is called as ``transform(image, rng)``; the random ones draw only from ``rng``,
which the DataLoader derives from (seed, epoch, index), so augmentation is reproducible.
``PILToArray`` turns the Pillow image into a ``(3, H, W)`` uint8 array, the pixels as they are;
``ToArray`` into a float32 one in [0, 1], on which ``Normalize`` then works.

``train_transform`` and ``eval_transform`` are the recipes the training scripts use: a random
resized crop and a horizontal flip for training (no colour jitter: the colour is the label in
DVM-Car), and a resize to ``size / 0.875`` then a centre crop for evaluation, as timm does. Both
end in uint8 pixels: a batch of them is a quarter of float32's bytes in the loader's queue and on
the way to the GPU, and ``PrefetchLoader`` (datasets/prefetch.py) normalises it where it arrives,
to the very numbers ``ToArray`` then ``Normalize`` give.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (height, width)."""
    return (int(size), int(size)) if isinstance(size, numbers.Integral) else (int(size[0]), int(size[1]))


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, rng: numpy.random.Generator):
        for transform in self.transforms:
            image = transform(image, rng)
        return image

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class Resize:
    """An int resizes the shorter side to ``size`` keeping the aspect ratio; (h, w) resizes to it."""

    def __init__(self, size: int | Sequence[int], interpolation: Image.Resampling = Image.Resampling.BICUBIC):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
        if isinstance(self.size, numbers.Integral):
            # torchvision's arithmetic: the long side is truncated, not rounded.
            width, height = image.size
            short, long = sorted((width, height))
            sides = (int(self.size), int(self.size * long / short))
            target = sides if width <= height else sides[::-1]
        else:
            height, width = _pair(self.size)
            target = (width, height)
        return image if image.size == target else image.resize(target, self.interpolation)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """Cut the central ``size`` region (the image must be at least that large)."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair(size)

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
        height, width = self.size
        if width > image.width or height > image.height:
            raise ValueError(f"CenterCrop to {height}x{width} needs a larger image than "
                             f"{image.height}x{image.width}; resize it first")
        left, top = int(round((image.width - width) / 2)), int(round((image.height - height) / 2))  # as torchvision
        return image.crop((left, top, left + width, top + height))

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """A random region covering a ``scale`` fraction of the area with an aspect ratio in ``ratio``
    (log-uniform), resized to ``size``; after 10 failed draws, the largest central crop that
    fits ``ratio`` (the Inception recipe, as torchvision implements it)."""

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 interpolation: Image.Resampling = Image.Resampling.BICUBIC):
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
        self.size, self.scale, self.ratio, self.interpolation = _pair(size), scale, ratio, interpolation

    def region(self, width: int, height: int, rng: numpy.random.Generator) -> tuple[int, int, int, int]:
        """The crop box ``(left, top, right, bottom)`` for an image of ``width`` x ``height``."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            crop_width = round(math.sqrt(target_area * aspect))
            crop_height = round(math.sqrt(target_area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                left = int(rng.integers(0, width - crop_width + 1))
                top = int(rng.integers(0, height - crop_height + 1))
                return left, top, left + crop_width, top + crop_height
        aspect = width / height
        if aspect < self.ratio[0]:
            crop_width, crop_height = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            crop_width, crop_height = round(height * self.ratio[1]), height
        else:
            crop_width, crop_height = width, height
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        return left, top, left + crop_width, top + crop_height

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
        height, width = self.size
        # Cut first, as torchvision does: resize(box=...) would let the filter read pixels outside the region.
        return image.crop(self.region(image.width, image.height, rng)).resize((width, height), self.interpolation)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror the image left to right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.p else image

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class PILToArray:
    """A Pillow RGB image as a ``(3, H, W)`` uint8 array, the pixels as they are (torchvision's
    ``PILToTensor``)."""

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> numpy.ndarray:
        return numpy.ascontiguousarray(numpy.asarray(image.convert("RGB")).transpose(2, 0, 1))

    def __repr__(self) -> str:
        return "PILToArray()"


class ToArray:
    """A Pillow RGB image as a ``(3, H, W)`` float32 array in [0, 1] (torchvision's ``ToTensor``)."""

    def __call__(self, image: Image.Image, rng: numpy.random.Generator) -> numpy.ndarray:
        return PILToArray()(image, rng).astype(numpy.float32) / 255.0

    def __repr__(self) -> str:
        return "ToArray()"


class Normalize:
    """(x - mean) / std per channel, on a ``(3, H, W)`` array."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = numpy.asarray(mean, dtype=numpy.float32).reshape(-1, 1, 1)
        self.std = numpy.asarray(std, dtype=numpy.float32).reshape(-1, 1, 1)

    def __call__(self, array: numpy.ndarray, rng: numpy.random.Generator) -> numpy.ndarray:
        return (array - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


def train_transform(size: int, scale: tuple[float, float] = (0.35, 1.0)) -> Compose:
    """Training augmentation: random resized crop (keeping most of the car), flip; uint8 pixels,
    normalised later, a batch at a time (``PrefetchLoader``)."""
    return Compose([RandomResizedCrop(size, scale=scale), RandomHorizontalFlip(), PILToArray()])


def eval_transform(size: int) -> Compose:
    """Evaluation: resize the shorter side to ``size / 0.875``, crop the centre; uint8 pixels,
    normalised later, a batch at a time (``PrefetchLoader``)."""
    return Compose([Resize(math.floor(size / EVAL_CROP_FRACTION)), CenterCrop(size), PILToArray()])
