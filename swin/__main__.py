"""``python -m swin``: the table of variants, their parameters and multiply-adds."""
import argparse
import sys
from collections.abc import Sequence

from swin.variants import VARIANTS, build


def main(argv: Sequence[str] = ()) -> None:
    # A parser, though there are no options: --help (or a typo) must answer at once, not after
    # building every variant, Swin-L twice among them (half a minute and gigabytes).
    argparse.ArgumentParser(prog="python -m swin", description=__doc__).parse_args(argv)
    print(f"{'variant':<10} {'image':>6} {'window':>6} {'parameters':>14} {'multiply-adds':>16}")
    for name in VARIANTS:
        sizes = (224, 384) if name != "swin_mini" else (64,)
        for img_size in sizes:
            model = build(name, img_size=img_size)
            print(f"{name:<10} {img_size:>6} {model.window_size:>6} {model.num_parameters():>14,} "
                  f"{model.flops():>16,}")


if __name__ == "__main__":
    main(sys.argv[1:])
