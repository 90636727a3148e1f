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
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from datasets.core import ImageFiles, Transform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The bytes that end a whole file of the format (JPEG's EOI marker; PNG's IEND chunk with its CRC).
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82"}
# What a warning of unreadable images tells the user, where the split does not depend on them.
DELETING_IS_SAFE = "The splits do not count them: deleting them leaves a run's splits as they are"
# Hidden files (a leading dot: .DS_Store, macOS's ._ copies) are system files too.
SYSTEM_NAMES = ("__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini")


def is_system_file(name: str) -> bool:
    """Whether the file or folder ``name`` is one the operating system made, not the user."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def is_image_name(name: str) -> bool:
    """Whether ``name`` ends in one of ``IMAGE_SUFFIXES``, in any case (cameras write .JPG)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def image_problem(path: str | os.PathLike) -> str | None:
    """Why Pillow cannot open ``path`` as an image, or None if it can. The header is read, and the
    file's last bytes: a JPEG or PNG cut short (a download or copy that stopped) lacks the marker
    that ends it, and only then is the image decoded to be sure, which costs far more than the
    header (some cameras write bytes after the end marker of a good JPEG)."""
    try:
        with Image.open(path) as image:
            end_marker = END_MARKERS.get(image.format or "")
            if end_marker is not None and not ends_with(path, end_marker):
                image.load()  # raises "image file is truncated" for a file cut short
            return None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # SyntaxError: a broken PNG chunk
        return str(error) or type(error).__name__


def ends_with(path: str | os.PathLike, marker: bytes) -> bool:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() < len(marker):
            return False
        file.seek(-len(marker), os.SEEK_END)
        return file.read() == marker


def readable_images(paths: Sequence[str], what: str, then: str = DELETING_IS_SAFE) -> list[int]:
    """The indices of the ``paths`` Pillow can open, checked before training (a file that fails
    mid-epoch would stop the run), with one warning that names the others. ``what`` names the data;
    ``then`` says what the user may do with the files left out."""
    unreadable, kept = [], []
    for index, path in enumerate(tqdm(paths, desc=f"checking the images of {what}", unit="image", leave=False)):
        problem = image_problem(path)
        if problem is None:
            kept.append(index)
        else:
            unreadable.append(f"{path} ({problem})")
    warn_unreadable(what, unreadable, then)
    return kept


def warn_unreadable(what: str, unreadable: Sequence[str], then: str = DELETING_IS_SAFE) -> None:
    """One warning naming the images left out (the first ten of them), if there are any, and
    ``then``, what the user may do with them."""
    if unreadable:
        named = "; ".join(unreadable[:10]) + (f"; and {len(unreadable) - 10} more" if len(unreadable) > 10 else "")
        count = f"{len(unreadable)} images" if len(unreadable) > 1 else "image"
        warnings.warn(f"{what}: left out the {count} Pillow cannot open: {named}. {then}", stacklevel=3)


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
    warn_unreadable(str(root), unreadable)
    empty = sorted(set(classes) - {classes[label] for label in labels})
    if len(classes) < 2 or empty:
        found = f"found {len(classes)}: {', '.join(classes)}" if classes else "found none"
        raise ValueError(f"{root} needs at least two class folders, each with images ({', '.join(IMAGE_SUFFIXES)}); "
                         + found + (f", without images: {', '.join(empty)}" if empty else ""))
    return ImageFiles(paths, labels, classes, transform)
