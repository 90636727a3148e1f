"""Your own photos, one folder per class: ``<root>/<class>/<image>`` (as torchvision's ImageFolder).

    my_cars/Black/0001.jpg
    my_cars/Black/holiday.png
    my_cars/Red/IMG_2040.JPG

Classes are the folder names in sorted order; images are found at any depth below their class
folder (through symbolic links too), in sorted order, so the same folder always gives the same
data set. What the operating system leaves there (``.DS_Store``, the ``._`` copies and the
``__MACOSX`` folder of a zip made on a Mac, ``Thumbs.db``, ...) is passed over; other files, and
images Pillow cannot open, are left out with a warning, so that none of them stops a run mid-epoch.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from datasets.core import ImageFiles, Transform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Hidden files (a leading dot: .DS_Store, macOS's ._ copies) are system files too.
SYSTEM_NAMES = ("__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini")


def is_system_file(name: str) -> bool:
    """Whether the file or folder ``name`` is one the operating system made, not the user."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def is_image_name(name: str) -> bool:
    """Whether ``name`` ends in one of ``IMAGE_SUFFIXES``, in any case (cameras write .JPG)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def image_problem(path: str | os.PathLike) -> str | None:
    """Why Pillow cannot open ``path`` as an image, or None if it can. Only the header is read:
    this finds the empty file, the web page saved as .jpg, the photo too large for Pillow, but not
    the image cut short, which fails when it is decoded."""
    try:
        with Image.open(path):
            return None
    except (OSError, Image.DecompressionBombError) as error:
        return str(error)


def files_below(folder: str | os.PathLike) -> Iterator[str]:
    """The files at any depth below ``folder``, leaving out system files: those of a folder in
    sorted order, then its subfolders' in sorted order. A folder reached twice through symbolic
    links (a link to a folder above would loop forever) is read the first time only."""
    seen = set()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories[:] = sorted(name for name in subdirectories if not is_system_file(name))
        yield from (os.path.join(directory, file) for file in sorted(files) if not is_system_file(file))


def image_folder(root: str | os.PathLike, transform: Transform) -> ImageFiles:
    """The labelled images under ``root``, one subfolder per class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: expected one subfolder per class holding its images, "
                                f"e.g. {root}/Red/car1.jpg")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not is_system_file(entry.name))
    paths, labels, unreadable, not_images = [], [], [], Counter()
    with tqdm(desc=f"checking {root.name}", unit="file", leave=False) as progress:  # minutes on a slow disk
        for label, name in enumerate(classes):
            for path in files_below(root / name):
                progress.update()
                if not is_image_name(path):
                    not_images[Path(path).suffix.lower() or "no suffix"] += 1
                elif (problem := image_problem(path)) is not None:
                    unreadable.append(f"{path} ({problem})")
                else:
                    paths.append(path)
                    labels.append(label)
    if not_images:
        found = ", ".join(f"{count} {suffix}" for suffix, count in not_images.most_common())
        warnings.warn(f"{root}: left out the files that are not {', '.join(IMAGE_SUFFIXES)} images ({found})",
                      stacklevel=2)
    if unreadable:
        warnings.warn(f"{root}: left out the {len(unreadable)} images Pillow cannot open: {'; '.join(unreadable[:3])}"
                      + ("; ..." if len(unreadable) > 3 else ""), stacklevel=2)
    empty = sorted(set(classes) - {classes[label] for label in labels})
    if len(classes) < 2 or empty:
        found = f"found {len(classes)}: {', '.join(classes)}" if classes else "found none"
        raise ValueError(f"{root} needs at least two class folders, each with images ({', '.join(IMAGE_SUFFIXES)}); "
                         + found + (f", without images: {', '.join(empty)}" if empty else ""))
    return ImageFiles(paths, labels, classes, transform)
