"""Train Swin on your own photos, sorted into one folder per class, with Adam and with RAdam.

    python examples/train_folder.py --data ~/my_cars --device gpu
    python examples/train_folder.py --data ~/my_cars --device gpu \\
        --pretrained swin_tiny_patch4_window7_224.safetensors --lr 1e-4

--data holds one subfolder per class (my_cars/Red/car1.jpg, my_cars/Black/...). A tenth of each
class is held out for validation (which picks the best epoch) and another tenth for the final test.
With a few hundred photos, start from ImageNet weights (--pretrained): from scratch, Swin needs
far more data.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import ImageFiles, Subset, eval_transform, image_folder, stratified_split, train_transform
from runs import main, make_parser
from training import Splits, say

DEFAULT_MODEL = "swin_t at 224 px"  # what main trains without --model


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    # Not required=True: with --resume it comes from the run's config.json.
    data.add_argument("--data", type=Path, help="a folder with one subfolder of images per class (needed: no default)")
    data.add_argument("--val-fraction", type=float, default=0.1, help="the part of each class used for validation")
    data.add_argument("--test-fraction", type=float, default=0.1,
                      help="the part of each class kept for the final test (0: score on the validation part)")


def load_data(args: argparse.Namespace) -> Splits:
    if args.data is None:
        raise ValueError("--data is needed: a folder with one subfolder of images per class")
    if not (0 < args.val_fraction and 0 <= args.test_fraction and args.val_fraction + args.test_fraction < 1):
        raise ValueError(f"need --val-fraction > 0, --test-fraction >= 0 and their sum < 1, "
                         f"got {args.val_fraction} and {args.test_fraction}")
    augmented = image_folder(args.data, train_transform(args.img_size))
    # The same photos, read unaugmented; not a second scan, which would open every photo again.
    plain = ImageFiles(augmented.paths, augmented.labels, augmented.classes, eval_transform(args.img_size))
    held_out_fraction = args.val_fraction + args.test_fraction
    kept, held_out = stratified_split(augmented.labels, held_out_fraction, args.seed)
    if args.test_fraction == 0:
        return Splits(Subset(augmented, kept), Subset(plain, held_out), None)
    val, test = stratified_split(plain.labels[held_out], args.test_fraction / held_out_fraction, args.seed)
    if len(test) == 0:
        say(f"Too few photos to hold out a test split too: the best models are scored on the "
            f"{len(held_out)} validation photos.")
        return Splits(Subset(augmented, kept), Subset(plain, held_out), None)
    return Splits(Subset(augmented, kept), Subset(plain, held_out[val]), Subset(plain, held_out[test]))


if __name__ == "__main__":
    parser = make_parser(__doc__, DEFAULT_MODEL)
    add_data_arguments(parser)
    main(parser, load_data, "folder")
