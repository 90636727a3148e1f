"""A built-in car-colour data set, drawn on the fly, so the main job runs with no download.

Each image is a side view of a simple car (body, cabin, windows, wheels) painted in one of the 11
DVM-Car colours, filling most of the frame as in an advert's photo, at a random place and size, on
a sky between clear blue and overcast grey above a road, grass or gravel, under random lighting,
with pixel noise. The neutral paints differ in brightness alone, and lighting blurs it: Silver
next to White is the hardest pair, as in real photos, yet every pair can be told apart.
Example ``i`` of a split is a pure function of ``(seed, split, i)``: nothing is stored on disk.
"""
from __future__ import annotations

import zlib

import numpy
from PIL import Image, ImageDraw

from datasets.core import Dataset, Transform
from datasets.transforms import Compose, Normalize, ToArray

# The 11 colours, as sRGB paint. DVM-Car's top ten, and Beige for its undocumented eleventh.
COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (22, 22, 26), "Silver": (165, 169, 175), "Blue": (28, 62, 150), "Grey": (100, 103, 108),
    "White": (236, 236, 232), "Red": (170, 24, 30), "Green": (32, 100, 52), "Yellow": (228, 196, 40),
    "Brown": (104, 66, 40), "Orange": (222, 112, 28), "Beige": (206, 186, 150),
}
SPLITS = ("train", "val", "test")
# The paint is COLOURS[name] * light + noise. Silver is 165/236 = 0.70 of White's brightness and Grey
# 0.61 of Silver's: lighting within +-10 % (a range ratio of 1.1/0.9 = 1.22) never turns one neutral
# paint into the next, but leaves Silver about 30 levels from White and 40 from Grey.
LIGHT = (0.9, 1.1)
PAINT_NOISE = 6.0  # levels per channel, drawn once per car
CLEAR_SKY, OVERCAST_SKY = (95, 150, 220), (195, 198, 202)
GROUNDS = ((85, 85, 88), (70, 105, 45), (150, 140, 120))  # a road, grass, gravel
MAX_KEPT_BYTES = 512 * 2**20


class SyntheticCarColours(Dataset):
    """``size`` images of ``image_size`` pixels, classes balanced (each colour ``size // 11`` or one more)."""

    def __init__(self, size: int = 2200, image_size: int = 64, split: str = "train", seed: int = 0,
                 transform: Transform | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if size < 1 or image_size < 16:
            raise ValueError(f"need size >= 1 and image_size >= 16, got {size} and {image_size}")
        self.classes = list(COLOURS)
        self.image_size, self.transform = image_size, transform or Compose([ToArray(), Normalize()])
        # zlib.crc32, unlike hash(), is the same in every Python process.
        self.seed = (seed, zlib.crc32(split.encode()))
        order = numpy.random.default_rng(self.seed).permutation(size)
        self.labels = (order % len(self.classes)).astype(numpy.int64)
        # Each picture is drawn once and kept (12 KB at 64 px): drawing it took a fifth of a training
        # step's time on a CPU, every epoch, for every optimizer. Not kept beyond MAX_KEPT_BYTES.
        self.drawn: dict[int, numpy.ndarray] | None = {} if size * image_size**2 * 3 <= MAX_KEPT_BYTES else None

    def image(self, index: int) -> Image.Image:
        """Example ``index`` (the same picture every time)."""
        if self.drawn is None:
            return Image.fromarray(self.draw(index))
        if index not in self.drawn:  # two loader threads may both draw it: the same picture
            self.drawn[index] = self.draw(index)
        return Image.fromarray(self.drawn[index])

    def draw(self, index: int) -> numpy.ndarray:
        """Draw example ``index`` as an (H, W, 3) uint8 array."""
        rng = numpy.random.default_rng([*self.seed, index])
        scale = max(1, min(4, 256 // self.image_size))  # draw at about 256 px, then shrink: smooth edges
        side = self.image_size * scale
        # A sky between clear blue and overcast grey, and a road, grass or gravel, each in its own light.
        sky = numpy.array(CLEAR_SKY) + rng.uniform(0, 1) * (numpy.array(OVERCAST_SKY) - CLEAR_SKY)
        sky = sky * rng.uniform(0.8, 1.1) + rng.normal(0, 8, size=3)
        ground = numpy.array(GROUNDS[rng.integers(len(GROUNDS))]) * rng.uniform(0.7, 1.2) + rng.normal(0, 10, size=3)
        sky, ground = numpy.clip(sky, 0, 255), numpy.clip(ground, 0, 255)
        horizon = int(side * rng.uniform(0.45, 0.7))
        canvas = Image.new("RGB", (side, side), tuple(int(c) for c in sky))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, horizon, side, side), fill=tuple(int(c) for c in ground))

        light = rng.uniform(*LIGHT)
        colour = COLOURS[self.classes[self.labels[index]]]
        paint = tuple(int(numpy.clip(c * light + rng.normal(0, PAINT_NOISE), 0, 255)) for c in colour)
        length = side * rng.uniform(0.65, 0.9)  # an advert's photo: the car fills most of the frame
        height = length * rng.uniform(0.22, 0.3)
        left = rng.uniform(0, side - length)
        bottom = min(side - 1.0, horizon + side * rng.uniform(0.05, 0.25))
        top = bottom - height
        draw.rounded_rectangle((left, top, left + length, bottom), radius=height * 0.3, fill=paint)
        cabin_top = top - height * rng.uniform(0.6, 0.85)
        cabin = [(left + length * 0.22, top), (left + length * 0.32, cabin_top),
                 (left + length * 0.68, cabin_top), (left + length * 0.8, top)]
        draw.polygon(cabin, fill=paint)
        window_top = cabin_top + height * 0.12
        window = [(left + length * 0.27, top), (left + length * 0.35, window_top),
                  (left + length * 0.65, window_top), (left + length * 0.75, top)]
        draw.polygon(window, fill=(40, 50, 60))
        for centre in (left + length * 0.2, left + length * 0.8):
            radius = height * 0.38
            draw.ellipse((centre - radius, bottom - radius, centre + radius, bottom + radius), fill=(15, 15, 15))
            draw.ellipse((centre - radius / 2, bottom - radius / 2, centre + radius / 2, bottom + radius / 2),
                         fill=(150, 150, 150))
        if rng.random() < 0.5:
            canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

        small = numpy.asarray(canvas.resize((self.image_size,) * 2, Image.Resampling.BOX), dtype=numpy.float32)
        noisy = small + rng.normal(0.0, 6.0, size=small.shape)
        return numpy.clip(noisy, 0, 255).astype(numpy.uint8)

    def load(self, index: int, rng: numpy.random.Generator) -> tuple[numpy.ndarray, int]:
        return self.transform(self.image(index), rng), int(self.labels[index])
