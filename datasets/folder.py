"""Your own photos, one folder per class: ``<root>/<class>/<image>`` (as torchvision's ImageFolder).

    my_cars/Black/0001.jpg
    my_cars/Black/holiday.png
    my_cars/Red/IMG_2040.JPG

Classes are the folder names in sorted order; images are found at any depth below their class
folder, in sorted order, so the same folder always gives the same data set.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets.core import ImageFiles, Transform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_folder(root: str | os.PathLike, transform: Transform) -> ImageFiles:
    """The labelled images under ``root``, one subfolder per class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: expected one subfolder per class holding its images, "
                                f"e.g. {root}/Red/car1.jpg")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    paths, labels = [], []
    for label, name in enumerate(classes):
        for directory, subdirectories, files in os.walk(root / name):
            subdirectories.sort()
            for file in sorted(files):
                if file.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(os.path.join(directory, file))
                    labels.append(label)
    empty = sorted(set(classes) - {classes[label] for label in labels})
    if len(classes) < 2 or empty:
        raise ValueError(f"{root} needs at least two class folders, each with images ({', '.join(IMAGE_SUFFIXES)}); "
                         f"found {len(classes)} folders" + (f", without images: {', '.join(empty)}" if empty else ""))
    return ImageFiles(paths, labels, classes, transform)
