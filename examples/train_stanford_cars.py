"""Car model from a photo: Swin trained with Adam and with RAdam on Stanford Cars (196 models).

    python examples/train_stanford_cars.py --data ~/data/stanford_cars --device gpu --epochs 30
    python examples/train_stanford_cars.py --data ~/data/stanford_cars --device gpu \\
        --pretrained swin_tiny_patch4_window7_224.safetensors --lr 1e-4

--data is the folder holding cars_train/, cars_test/ and devkit/ (the Kaggle copy's nested
folders work too). Images are cropped to the car's bounding box. A tenth of each class of the
training images is held out for validation; the official test images are scored at the end when
their labels (cars_test_annos_withlabels.mat, beside the folders) are there.

From scratch, 196 fine-grained classes from 8,144 images are hard: the lab this project grew from
reached 9 % accuracy after 30 epochs. Start from ImageNet weights (--pretrained) for a real model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import Subset, eval_transform, has_test_labels, stanford_cars, stratified_split, train_transform
from datasets.folder import readable_images
from runs import main, make_parser
from training import Splits, say

DEFAULT_MODEL = "swin_t at 224 px"  # what main trains without --model


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    # Not required=True: with --resume it comes from the run's config.json.
    data.add_argument("--data", type=Path, help="the Stanford Cars folder (needed: no default)")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="the part of each class of the training images held out for validation")
    data.add_argument("--no-crop", action="store_true", help="use whole images, not the bounding boxes")


def load_data(args: argparse.Namespace) -> Splits:
    if args.data is None:
        raise ValueError("--data is needed: the folder that holds cars_train/, cars_test/ and devkit/")
    crop = not args.no_crop
    train_tf, eval_tf = train_transform(args.img_size), eval_transform(args.img_size)
    augmented = stanford_cars(args.data, "train", transform=train_tf, crop_to_box=crop)
    test = None
    if has_test_labels(args.data):
        test = stanford_cars(args.data, "test", transform=eval_tf, crop_to_box=crop)
    else:
        say("No test labels (cars_test_annos_withlabels.mat) beside the folders: the best models are "
            "scored on the validation part of the training images instead.")
    # Before the split, so that it is drawn among the images that can be read.
    readable = readable_images(augmented.paths + (test.paths if test is not None else []), str(args.data),
                               then="Keep them where they are: Stanford Cars lists its images and will not load "
                                    "with one missing (good copies in their place make another split: start a new "
                                    "run then)")
    if test is not None:
        test = test.select([index - len(augmented) for index in readable if index >= len(augmented)])
    augmented = augmented.select([index for index in readable if index < len(augmented)])
    plain = augmented.select(range(len(augmented)), eval_tf)  # the same photos, read unaugmented
    kept, held_out = stratified_split(augmented.labels, args.val_fraction, args.seed)
    return Splits(Subset(augmented, kept), Subset(plain, held_out), test)


if __name__ == "__main__":
    parser = make_parser(__doc__, DEFAULT_MODEL)
    add_data_arguments(parser)
    main(parser, load_data, "stanford_cars")
