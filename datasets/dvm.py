"""DVM-Car colours: the car's paint colour as the label, from the DVM-Car image folders.

DVM-Car (figshare 19586296, https://deepvisualmarketing.github.io/) holds ~1.45 M 300x300 photos
of UK car adverts as ``resized_DVM/<Maker>/<Genmodel>/<Year>/<Color>/<file>`` (front views only:
``confirmed_fronts/<Maker>/<Year>/<file>``; the Kaggle mirror adds ``_clean`` to both names). Each
file name carries its labels: ``Maker$$Genmodel$$Year$$Color$$Genmodel_ID$$AdvSeq$$image_N.jpg``.

``dvm_colours`` keeps the photos of the most frequent colours and splits them into train, val and
test by advert: an advert's photos show one car, so they all go to one split. It can also keep
only some viewpoints, read from ``Image_table.csv`` (its ``Predicted_viewpoint``, in degrees in
steps of 45: 0 is the front, 180 the rear).
"""
from __future__ import annotations

import csv
import hashlib
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from datasets.core import ImageFiles, Transform
from datasets.folder import image_problem, is_system_file, warn_unreadable

EXAMPLE_NAME = "Bentley$$Arnage$$2000$$Silver$$10_1$$1$$image_0.jpg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDERS = {"all": ("resized_DVM", "<Maker>/<Genmodel>/<Year>/<Color>/<file>"),
           "fronts": ("confirmed_fronts", "<Maker>/<Year>/<file>")}
NOT_A_COLOUR = {"", "Unlisted", "Multicolour"}
SPLITS = ("train", "val", "test")
VIEWPOINTS = tuple(range(0, 360, 45))  # the table also says 360, which is 0
IMAGE_TABLE = "Image_table.csv"
TABLE_FOLDERS = (".", "tables", "tables/tables")  # beside the images; figshare's tables.zip; the Kaggle mirror


class ImageName(NamedTuple):
    """The seven fields of a DVM-Car file name."""

    maker: str
    genmodel: str
    year: str
    colour: str
    genmodel_id: str
    adv_seq: str
    image: str

    @property
    def advert(self) -> str:
        """The advert's id, ``Adv_ID`` in the DVM-Car tables."""
        return f"{self.genmodel_id}$${self.adv_seq}"


def parse_image_name(name: str) -> ImageName:
    """Split a file name such as ``Bentley$$Arnage$$2000$$Silver$$10_1$$1$$image_0.jpg``."""
    # Makers and models contain spaces and hyphens ("Land Rover", "Mercedes-Benz"): only "$$" separates.
    fields = name.split("$$")
    if len(fields) != len(ImageName._fields):
        raise ValueError(f"expected a DVM-Car image name of seven $$-joined fields, such as {EXAMPLE_NAME!r}; "
                         f"got {name!r} ({len(fields)} fields)")
    return ImageName(*fields)


def find_image_folder(root: str | os.PathLike, images: str = "all") -> Path:
    """The folder of DVM-Car ``images`` ("all" or "fronts") at or inside ``root``."""
    if images not in FOLDERS:
        raise ValueError(f"images must be one of {sorted(FOLDERS)}, got {images!r}")
    root = Path(root)
    name, layout = FOLDERS[images]
    names = (name, f"{name}_clean")
    candidates = ([root] if root.name in names else []) + [root / folder for folder in names]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no DVM-Car image folder: looked for {', '.join(str(c) for c in candidates)}. Expected "
        f"{root}/{name}/{layout} (the Kaggle mirror names it {name}_clean), files named like {EXAMPLE_NAME}. "
        "Download DVM-Car from https://deepvisualmarketing.github.io/ (figshare: "
        "https://doi.org/10.6084/m9.figshare.19586296) and pass the folder that holds it; "
        "without --data the training script uses the built-in synthetic set.")


class Photo(NamedTuple):
    """What the colour task keeps of one image file: a million of these must fit in memory."""

    path: str
    colour: str
    advert: str


def scan_images(folder: str | os.PathLike) -> list[Photo]:
    """Every DVM-Car image under ``folder``, in sorted path order."""
    found: list[Photo] = []
    skipped: list[str] = []
    with tqdm(desc=f"scanning {Path(folder).name}", unit="img", leave=False) as progress:
        for directory, subdirectories, files in os.walk(folder):
            # os.walk descends in this list's order: sorting makes the scan repeatable.
            subdirectories[:] = sorted(name for name in subdirectories if not is_system_file(name))
            before = len(found)
            for file in sorted(files):
                # A copy unpacked on a Mac has a "._" file of metadata beside each photo, named as the photo.
                if is_system_file(file) or not file.lower().endswith(IMAGE_SUFFIXES):
                    continue
                try:
                    name = parse_image_name(file)
                except ValueError:
                    skipped.append(file)
                    continue
                # One shared string per colour, not one per file.
                found.append(Photo(os.path.join(directory, file), sys.intern(name.colour), name.advert))
            progress.update(len(found) - before)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} image files whose names are not DVM-Car names "
                      f"(seven $$-joined fields, such as {EXAMPLE_NAME!r}), e.g. {skipped[0]!r}", stacklevel=2)
    if not found:
        raise FileNotFoundError(f"no DVM-Car images ({', '.join(IMAGE_SUFFIXES)} named like {EXAMPLE_NAME}) "
                                f"under {folder}")
    return found


def find_image_table(root: str | os.PathLike) -> Path:
    """DVM-Car's ``Image_table.csv`` at or below ``root`` (or beside it, when ``root`` is an image folder)."""
    root = Path(root)
    if any(root.name in (name, f"{name}_clean") for name, _ in FOLDERS.values()):
        root = root.parent
    candidates = [root / folder / IMAGE_TABLE for folder in TABLE_FOLDERS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"--viewpoints needs DVM-Car's {IMAGE_TABLE}, which holds each photo's viewpoint: looked for "
        f"{', '.join(str(c) for c in candidates)}. It comes in the tables of DVM-Car "
        "(https://doi.org/10.6084/m9.figshare.19586296); unpack them in the folder you pass as --data.")


def _file_key(name: str) -> str:
    # The Kaggle mirror took the apostrophes out of its file names, not out of its tables.
    return name.strip().replace("'", "")


def names_in_viewpoints(table: str | os.PathLike, viewpoints: Iterable[int]) -> set[str]:
    """The file names (as ``_file_key`` writes them) of the photos whose ``Predicted_viewpoint`` in
    ``table`` is one of ``viewpoints``; rows without a viewpoint are left out."""
    wanted = {viewpoint % 360 for viewpoint in viewpoints}
    names = set()
    # utf-8-sig drops a byte-order mark; the header names may carry spaces.
    with open(table, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [field.strip() for field in next(reader, [])]
        missing = {"Image_name", "Predicted_viewpoint"} - set(header)
        if missing:
            raise ValueError(f"{table} has no column {', '.join(sorted(missing))}; its header is {header}")
        name_at, viewpoint_at = header.index("Image_name"), header.index("Predicted_viewpoint")
        for row in tqdm(reader, desc=f"reading {Path(table).name}", unit="row", leave=False):
            viewpoint = row[viewpoint_at].strip() if len(row) > viewpoint_at else ""
            if viewpoint and int(float(viewpoint)) % 360 in wanted:
                names.add(_file_key(row[name_at]))
    return names


def top_colours(colours: Iterable[str], k: int = 11) -> list[str]:
    """The ``k`` most frequent colours, most frequent first; ties go to the name first in alphabetical order."""
    counts = Counter(colour for colour in colours if colour not in NOT_A_COLOUR)
    ranked = sorted(counts, key=lambda colour: (-counts[colour], colour))
    if not 1 <= k <= len(ranked):
        found = ", ".join(f"{colour}: {counts[colour]}" for colour in ranked) or "none"
        raise ValueError(f"asked for the top {k} colours, but the data has {len(ranked)} usable colours "
                         f"(leaving out {sorted(NOT_A_COLOUR)}): {found}")
    return ranked[:k]


def _unit_hash(seed: int, text: str) -> float:
    """A number in [0, 1) fixed by ``(seed, text)``; unlike ``hash()``, the same in every Python process."""
    digest = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def advert_split(advert: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """"train", "val" or "test" for ``advert``, decided by the advert alone so that adding data
    never moves an advert to another split."""
    draw = _unit_hash(seed, advert)
    return "val" if draw < val_fraction else "test" if draw < val_fraction + test_fraction else "train"


def _cap_per_class(examples: list[tuple[str, int]], limit: int, seed: int,
                   usable: Callable[[str], bool]) -> list[tuple[str, int]]:
    """At most ``limit`` usable examples of each label: the first in an order fixed by ``seed`` and
    the file name (so the pick does not change when other files are added, nor when an unusable
    one is deleted), kept in their original order. ``usable`` is asked in that order, only until
    a label has its ``limit``."""
    order = sorted(range(len(examples)), key=lambda index: _unit_hash(seed, os.path.basename(examples[index][0])))
    taken: Counter = Counter()
    kept = []
    for index in order:
        path, label = examples[index]
        if taken[label] < limit and usable(path):
            taken[label] += 1
            kept.append(index)
    return [examples[index] for index in sorted(kept)]


def dvm_colours(root: str | os.PathLike, transform_train: Transform, transform_eval: Transform,
                num_colours: int = 11, images: str = "all", val_fraction: float = 0.1, test_fraction: float = 0.1,
                seed: int = 0, max_per_class: int | None = None,
                viewpoints: Sequence[int] | None = None) -> tuple[ImageFiles, ImageFiles, ImageFiles]:
    """DVM-Car's ``num_colours`` most frequent colours as (train, val, test), split by advert.

    Classes are the colours, most frequent first. ``max_per_class`` caps each class in each split
    (for quick runs). ``viewpoints`` (degrees, e.g. ``[315, 0, 45]`` for the front and the front
    corners) keeps only photos with those viewpoints in ``Image_table.csv``. Train gets
    ``transform_train``; val and test get ``transform_eval``. Images Pillow cannot open (an empty
    file, one cut short) are left out with one warning that names them.
    """
    # Checked before the scan, which takes minutes on the full data.
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must each be in [0, 1) and sum to less than 1, "
                         f"got {val_fraction} and {test_fraction}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1 (or None for no cap), got {max_per_class}")
    if viewpoints is not None:
        unknown = sorted(set(viewpoints) - set(VIEWPOINTS) - {360})
        if unknown or not viewpoints:
            raise ValueError(f"viewpoints must be some of {', '.join(map(str, VIEWPOINTS))} (degrees, 0 the front, "
                             f"180 the rear), got {', '.join(map(str, viewpoints)) or 'none'}")
        table = find_image_table(root)
    folder = find_image_folder(root, images)
    found = scan_images(folder)
    if viewpoints is not None:
        kept = names_in_viewpoints(table, viewpoints)
        found = [photo for photo in found if _file_key(os.path.basename(photo.path)) in kept]
        if not found:
            raise ValueError(f"none of the photos under {folder} has a viewpoint of "
                             f"{', '.join(map(str, viewpoints))} in {table}")
    classes = top_colours((photo.colour for photo in found), num_colours)
    label_of = {colour: label for label, colour in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    for photo in found:
        if photo.colour in label_of:
            split = advert_split(photo.advert, val_fraction, test_fraction, seed)
            splits[split].append((photo.path, label_of[photo.colour]))
    # Images Pillow cannot open are left out before training, whichever the split: an advert's
    # split does not depend on them, so deleting one later leaves the splits as they are.
    unreadable = []
    with tqdm(desc="checking the images", unit="image", leave=False) as progress:
        def readable(path: str) -> bool:
            progress.update()
            problem = image_problem(path)
            if problem is not None:
                unreadable.append(f"{path} ({problem})")
            return problem is None

        if max_per_class is not None:
            splits = {split: _cap_per_class(examples, max_per_class, seed, readable)
                      for split, examples in splits.items()}
        else:
            splits = {split: [example for example in examples if readable(example[0])]
                      for split, examples in splits.items()}
    warn_unreadable(str(folder), unreadable)
    transforms = {"train": transform_train, "val": transform_eval, "test": transform_eval}
    train, val, test = (ImageFiles([path for path, _ in splits[split]], [label for _, label in splits[split]],
                                   classes, transforms[split]) for split in SPLITS)
    return train, val, test
