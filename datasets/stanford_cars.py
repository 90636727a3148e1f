"""Stanford Cars (Krause et al., 2013): 196 car models, 8,144 training and 8,041 test images.

Reads the original release and the Kaggle copy, which nests each folder in one of its own name
(``cars_train/cars_train/``, ``car_devkit/devkit/``) and lacks the test labels. The class names come
from ``devkit/cars_meta.mat``, the labels and bounding boxes from the annotation files; labels are
stored 0-based (the files count from 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from datasets.core import ImageFiles, Transform

SPLITS = ("train", "test")
TEST_LABELS = "cars_test_annos_withlabels.mat"
# Where each folder may be. For the images the Kaggle nesting is tried first: its outer folder has the
# original's name, so only the inner one tells the two layouts apart.
FOLDERS = {"train": ("cars_train/cars_train", "cars_train"), "test": ("cars_test/cars_test", "cars_test"),
           "devkit": ("devkit", "car_devkit/devkit")}
ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
WHERE_TO_GET = f"""Expected layout (the Kaggle nesting, cars_train/cars_train/, car_devkit/devkit/, also works):
  <root>/cars_train/00001.jpg ... 08144.jpg
  <root>/cars_test/00001.jpg ... 08041.jpg
  <root>/devkit/cars_meta.mat, cars_train_annos.mat
  <root>/{TEST_LABELS}   (the test labels, beside the folders)
Get the data from https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset or the original page
http://ai.stanford.edu/~jkrause/cars/car_dataset.html; the Kaggle copy lacks the test labels: put
{TEST_LABELS} beside the folders."""


class CarsLayout(NamedTuple):
    """Where one copy of Stanford Cars keeps its training images, test images and devkit."""

    train: Path
    test: Path
    devkit: Path


def _first_existing(paths: list[Path]) -> Path | None:
    return next((path for path in paths if path.exists()), None)


def find_layout(root: str | Path) -> CarsLayout:
    """The image folders and devkit folder under ``root``, in the original or the Kaggle layout."""
    root = Path(root)
    folders = {}
    for name, places in FOLDERS.items():
        candidates = [root / place for place in places]
        folders[name] = _first_existing(candidates)
        if folders[name] is None:
            raise FileNotFoundError(f"Stanford Cars: no {name} folder, looked for "
                                    f"{' and '.join(map(str, candidates))}.\n{WHERE_TO_GET}")
    return CarsLayout(**folders)


def _test_labels_file(root: Path) -> Path | None:
    # torchvision expects the labels beside the folders; people also drop them into the devkit.
    return _first_existing([root / TEST_LABELS] + [root / devkit / TEST_LABELS for devkit in FOLDERS["devkit"]])


def has_test_labels(root: str | Path) -> bool:
    """Whether ``root`` holds the test labels (the Kaggle copy does not)."""
    return _test_labels_file(Path(root)) is not None


def _read_mat(path: Path, key: str) -> numpy.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"Stanford Cars: no {path}.\n{WHERE_TO_GET}")
    try:
        contents = loadmat(path, squeeze_me=True)
    except (MatReadError, OSError, ValueError, IndexError) as error:  # what scipy raises for a file cut short
        raise ValueError(f"{path} cannot be read as a MATLAB file ({error}): it is damaged, or a web page saved "
                         f"under its name. Download it again.\n{WHERE_TO_GET}") from error
    if key not in contents:
        raise ValueError(f"{path} has no {key!r}: is it a Stanford Cars devkit file?")
    # squeeze_me turns a one-element array into a 0-d one; atleast_1d gives the sequence back.
    return numpy.atleast_1d(contents[key])


def stanford_cars(root: str | Path, split: str = "train", *, transform: Transform,
                  crop_to_box: bool = True) -> ImageFiles:
    """The ``split`` ("train" or "test") of Stanford Cars under ``root``, each image cropped to the
    car's bounding box unless ``crop_to_box`` is False."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    layout = find_layout(root)
    classes = [str(name) for name in _read_mat(layout.devkit / "cars_meta.mat", "class_names")]
    if split == "train":
        annotations_file, images = layout.devkit / "cars_train_annos.mat", layout.train
    else:
        annotations_file, images = _test_labels_file(root), layout.test
        if annotations_file is None:
            raise FileNotFoundError(
                f"Stanford Cars: the test split needs the test labels, {TEST_LABELS}, which is not in {root} "
                f"nor in {layout.devkit}. Put it beside the image folders: {root / TEST_LABELS} (the Kaggle "
                "copy lacks it). Without it, train_stanford_cars.py holds out part of the training set instead.")
    annotations = _read_mat(annotations_file, "annotations")
    missing_fields = set(ANNOTATION_FIELDS) - set(annotations.dtype.names or ())
    if missing_fields:  # cars_test_annos.mat, say, renamed: it has no class
        raise ValueError(f"{annotations_file}: the annotations lack {', '.join(sorted(missing_fields))}; a Stanford "
                         f"Cars annotation file has {', '.join(ANNOTATION_FIELDS)}.\n{WHERE_TO_GET}")

    paths = [images / str(name) for name in annotations["fname"]]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"Stanford Cars: {len(missing)} of the {len(paths)} images listed in "
                                f"{annotations_file} are missing, the first {missing[0]}. Download the data again.")
    labels = annotations["class"].astype(numpy.int64) - 1
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{annotations_file}: labels must run from 1 to {len(classes)} (the classes in "
                         f"cars_meta.mat), found {labels.min() + 1} to {labels.max() + 1}")

    boxes = None
    if crop_to_box:
        # The files give 1-based inclusive corners (x1, y1, x2, y2); Pillow's crop box is 0-based with
        # right and lower exclusive: (x1 - 1, y1 - 1, x2, y2). ImageFiles clips it to the image.
        corners = numpy.stack([annotations[field].astype(numpy.int64)
                               for field in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")], axis=1)
        corners[:, :2] -= 1
        boxes = [tuple(int(value) for value in box) for box in corners]
    return ImageFiles(paths, labels, classes, transform, boxes)
