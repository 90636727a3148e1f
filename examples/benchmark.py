"""How fast is a Swin training step here, next to PyTorch eager on the same machine?

Times forward + backward of the same model and batch in minigrad and, when torch and timm are
installed, in PyTorch eager (timm's implementation of the same model), and prints the ratio. GPU
times come from CUDA events, never from the host clock alone.

    python examples/benchmark.py                               # Swin-T, batch 2, CPU
    python examples/benchmark.py --device gpu --batch-size 32  # needs CuPy (and torch with CUDA for the reference)
    python examples/benchmark.py --update                      # the whole step: also clipping and AdamW

--model, --batch-size and --device are named as in the training scripts (--variant and --batch,
the names of earlier versions, still work).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

import minigrad
import optim
from minigrad import backend
from cli import HelpFormatter, add_device_argument
from minigrad import functional as F
from swin import VARIANTS, build

TIMM_NAMES = {"swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224",
              "swin_b": "swin_base_patch4_window7_224", "swin_l": "swin_large_patch4_window7_224"}


def median_seconds(step: Callable[[], None], repeats: int, warmup: int, clock: Callable) -> float:
    for _ in range(warmup):
        step()
    return statistics.median(clock(step) for _ in range(repeats))


def host_clock(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def cupy_clock(step: Callable[[], None]) -> float:
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    step()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / 1000.0


def torch_clock(step: Callable[[], None]) -> float:
    import torch

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1000.0


def minigrad_step_time(args, images: np.ndarray, labels: np.ndarray) -> float:
    minigrad.manual_seed(0)
    model = build(args.model, num_classes=args.classes).to(args.device)
    x, y = backend.to_device(images, args.device), backend.to_device(labels, args.device)
    optimizer = optim.AdamW(optim.weight_decay_groups(model, 0.05), lr=1e-4)

    def step():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if args.update:
            optim.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()

    return median_seconds(step, args.repeats, args.warmup, host_clock if args.device == "cpu" else cupy_clock)


def torch_step_time(args, images: np.ndarray, labels: np.ndarray) -> float | None:
    try:
        import timm
        import torch
    except ImportError:
        return None
    device = "cpu" if args.device == "cpu" else "cuda"
    if args.model not in TIMM_NAMES or (device == "cuda" and not torch.cuda.is_available()):
        return None
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[args.model], num_classes=args.classes).to(device)
    x, y = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if args.update:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()

    return median_seconds(step, args.repeats, args.warmup, host_clock if device == "cpu" else torch_clock)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", "--variant", dest="model", default="swin_t", choices=sorted(VARIANTS),
                        metavar="MODEL", help=f"Swin variant, at its own image size: {', '.join(sorted(VARIANTS))}")
    add_device_argument(parser)
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=2, help="images per step")
    parser.add_argument("--classes", type=int, default=11, help="classes of the model's head")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps; their median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--update", action="store_true",
                        help="time the whole training step: also gradient clipping and an AdamW step")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    for option in ("batch_size", "classes", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    try:
        args.device = backend.normalize_device(args.device)
    except (RuntimeError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.device == "gpu" and backend.fake_gpu_enabled():
        parser.error("MINIGRAD_FAKE_GPU=1 serves 'gpu' on the CPU, for tests: timing it measures nothing; unset it")

    size = VARIANTS[args.model].get("img_size", 224)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, args.classes, size=args.batch_size)

    ours = minigrad_step_time(args, images, labels)
    reference = torch_step_time(args, images, labels)
    what = "forward + backward + clipping + AdamW" if args.update else "forward + backward"
    print(f"{args.model}, batch {args.batch_size}, {size} px, {what}, median of {args.repeats}, on {args.device}")
    print(f"  minigrad        {ours * 1000:9.1f} ms/step  {args.batch_size / ours:8.1f} images/s")
    if reference is None:
        print("  PyTorch eager   not measured (needs torch and timm, and a timm name for the variant)")
    else:
        print(f"  PyTorch eager   {reference * 1000:9.1f} ms/step  {args.batch_size / reference:8.1f} images/s")
        print(f"  minigrad / PyTorch time ratio: {ours / reference:.2f}")


if __name__ == "__main__":
    main()
