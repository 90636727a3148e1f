"""Car colour from a photo: Swin trained with Adam and with RAdam on DVM-Car's 11 most common colours.

Without --data it trains on the built-in synthetic car-colour set (no download), a laptop-sized
Swin at 64 px, in a few minutes on a CPU:

    python examples/train_dvm.py
    python examples/train_dvm.py --device gpu --max-steps 50          # a GPU smoke run

With DVM-Car (https://deepvisualmarketing.github.io/, the folder that holds resized_DVM/):

    python examples/train_dvm.py --data ~/data/DVM --device gpu --epochs 30
    python examples/train_dvm.py --data ~/data/DVM --device gpu --viewpoints 315 0 45   # front views
    python examples/train_dvm.py --data ~/data/DVM --device gpu --pretrained swin_tiny_patch4_window7_224.safetensors

Photos of one advert all go to the same split, so the test set holds cars the model never saw.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import SyntheticCarColours, dvm_colours, eval_transform, train_transform
from runs import main, make_parser
from training import Splits, say

DEFAULT_MODEL = "swin_mini at 64 px without --data, swin_t at 224 px with it"  # what main trains without --model

# The synthetic set's crops keep at least 70 % of the picture: its car is a band across a quarter
# to a half of it, which a crop of a third (the default for photos) can miss, leaving a label with
# too little car to show it.
SYNTHETIC_CROP_SCALE = (0.7, 1.0)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path,
                      help="the DVM-Car folder (holding resized_DVM/ or resized_DVM_clean/) (default: none, "
                           "the built-in synthetic set)")
    data.add_argument("--images", choices=("all", "fronts"), default="all",
                      help="all views (resized_DVM) or front views only (confirmed_fronts)")
    data.add_argument("--viewpoints", type=int, nargs="+", metavar="DEGREES",
                      help="keep only photos of these viewpoints (0 front, 45, 90, ..., 180 rear, ..., 315), "
                           "as DVM-Car's Image_table.csv predicts them, e.g. --viewpoints 315 0 45 (default: all)")
    data.add_argument("--colours", type=int, default=11,
                      help="how many of DVM-Car's most common colours to keep (the synthetic set has 11)")
    data.add_argument("--max-per-class", type=int, help="cap each colour in each split, for quick runs (default: "
                                                         "no cap)")
    data.add_argument("--synthetic-size", type=int, default=2200,
                      help="training images of the synthetic set (validation and test get a quarter each)")


def load_data(args: argparse.Namespace) -> Splits:
    eval_tf = eval_transform(args.img_size)
    if args.data is None:
        say("No --data given: training on the built-in synthetic car-colour set.")
        sizes = {"train": args.synthetic_size, "val": args.synthetic_size // 4, "test": args.synthetic_size // 4}
        train_tf = train_transform(args.img_size, scale=SYNTHETIC_CROP_SCALE)
        return Splits(*(SyntheticCarColours(size, args.img_size, split, args.seed,
                                            train_tf if split == "train" else eval_tf)
                        for split, size in sizes.items()))
    if args.colours < 2:  # before the scan, which takes minutes
        raise ValueError(f"--colours must be at least 2, got {args.colours}: a classifier of one colour is "
                         f"always right")
    return Splits(*dvm_colours(args.data, train_transform(args.img_size), eval_tf, num_colours=args.colours,
                               images=args.images, seed=args.seed, max_per_class=args.max_per_class,
                               viewpoints=args.viewpoints))


if __name__ == "__main__":
    parser = make_parser(__doc__, DEFAULT_MODEL)
    add_data_arguments(parser)
    main(parser, load_data, "dvm")
