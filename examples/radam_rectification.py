"""When does RAdam start to use its adaptive learning rate?

RAdam (Liu et al. 2019) treats Adam's second-moment average at step t as a simple average over
rho_t gradients, rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t) with rho_inf = 2 / (1 - beta2) - 1,
and rectifies the adaptive rate only once rho_t > 5; until then it takes a plain momentum step.
This prints rho_t for a few beta2 and the first rectified step. With beta2 <= 2/3, rho_inf <= 5:
RAdam never rectifies and stays SGD with bias-corrected momentum for good.

    python examples/radam_rectification.py
"""
import argparse
from collections.abc import Sequence
from itertools import count

from optim.radam import rectification, rho

BETA2S = (0.6, 0.9, 0.99, 0.999)
STEPS = (*range(1, 11), 20, 50, 100, 1000, 10_000)


def first_rectified_step(beta2: float) -> int | None:
    """The first t with rho_t > 5, or None if rho_t never gets there (rho_inf <= 5)."""
    if 2 / (1 - beta2) - 1 <= 5:
        return None
    return next(t for t in count(1) if rectification(t, beta2) is not None)


def main(argv: Sequence[str] | None = None) -> None:
    # No options; a parser all the same, so that --help answers (and a typo is refused).
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print("rho_t (RAdam rectifies where rho_t > 5)")
    print(f"{'t':>8}" + "".join(f"{f'beta2={beta2}':>14}" for beta2 in BETA2S))
    for t in STEPS:
        print(f"{t:>8}" + "".join(f"{rho(t, beta2):>14.6f}" for beta2 in BETA2S))
    print(f"{'rho_inf':>8}" + "".join(f"{2 / (1 - beta2) - 1:>14.6f}" for beta2 in BETA2S))
    firsts = [first_rectified_step(beta2) for beta2 in BETA2S]
    print(f"{'first t':>8}" + "".join(f"{'never' if t is None else t:>14}" for t in firsts))


if __name__ == "__main__":
    main()
