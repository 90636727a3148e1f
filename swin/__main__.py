"""``python -m swin``: the table of variants, their parameters and multiply-adds."""
from swin.variants import VARIANTS, build


def main() -> None:
    print(f"{'variant':<10} {'image':>6} {'window':>6} {'parameters':>14} {'multiply-adds':>16}")
    for name in VARIANTS:
        sizes = (224, 384) if name != "swin_mini" else (64,)
        for img_size in sizes:
            model = build(name, img_size=img_size)
            print(f"{name:<10} {img_size:>6} {model.window_size:>6} {model.num_parameters():>14,} "
                  f"{model.flops():>16,}")


if __name__ == "__main__":
    main()
