"""``datasets``: labelled car images, batched as uint8 pixels on the host, normalised on the device.

    from datasets import DataLoader, PrefetchLoader, SyntheticCarColours, train_transform
    train = SyntheticCarColours(size=2200, split="train", transform=train_transform(64))
    loader = DataLoader(train, batch_size=32, shuffle=True)  # images (32, 3, 64, 64) uint8, labels (32,) int64
    for images, labels in PrefetchLoader(loader, "gpu"):
        ...                                  # images (32, 3, 64, 64) float32, labels (32,) int64, on the GPU
"""
import minigrad  # noqa: F401 (first, before NumPy: it sets how long OpenBLAS's threads spin)
from datasets.core import DataLoader, Dataset, ImageFiles, Subset, stratified_split
from datasets.dvm import dvm_colours, parse_image_name, top_colours
from datasets.folder import image_folder
from datasets.prefetch import PrefetchLoader, normalize_pixels
from datasets.stanford_cars import has_test_labels, stanford_cars
from datasets.synthetic import COLOURS, SyntheticCarColours
from datasets.transforms import (CenterCrop, Compose, Normalize, PILToArray, RandomHorizontalFlip, RandomResizedCrop,
                                 Resize, ToArray, eval_transform, train_transform)

__all__ = ["COLOURS", "CenterCrop", "Compose", "DataLoader", "Dataset", "ImageFiles", "Normalize", "PILToArray",
           "PrefetchLoader", "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "Subset", "SyntheticCarColours",
           "ToArray", "dvm_colours", "eval_transform", "has_test_labels", "image_folder", "normalize_pixels",
           "parse_image_name", "stanford_cars", "stratified_split", "top_colours", "train_transform"]
