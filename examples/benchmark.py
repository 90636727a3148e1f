"""How fast is a Swin training step here, next to PyTorch eager on the same machine?

A training step is what the trainers run: forward, cross-entropy, backward, gradient clipping and
an AdamW step. The script times it and the forward alone, in minigrad and, when torch and timm are
installed, in PyTorch eager (timm's implementation of the same model, built with minigrad's window
and drop-path rate rather than timm's default rate of 0.1), one step of each in turn so that both
meet the same state of the machine; it reports the median and the range of each, images per second,
the arithmetic rate (GFLOP/s, from the model's own multiply-add count: a forward is 2 x flops() x
batch floating-point operations, a training step about three times that), the peak memory a model,
its optimizer and a step take (host memory on the CPU, the memory pool on a GPU) and the ratios.
GPU times come from CUDA events, never from the host clock alone.

On the stand-in GPU (MINIGRAD_FAKE_GPU=1 --device gpu), where time measures nothing, it counts the
array operations of a step instead (the kernels CuPy would launch), by phase.

    python examples/benchmark.py                               # Swin-T, batch 8, CPU
    python examples/benchmark.py --device gpu --batch-size 64  # needs CuPy (and torch with CUDA)
    python examples/benchmark.py --profile                     # and where minigrad's step goes
    MINIGRAD_FAKE_GPU=1 python examples/benchmark.py --device gpu  # array operations per step

--model, --batch-size, --device and --img-size are named as in the training scripts (--variant,
--batch and --repeats, the names of earlier versions, still work).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import minigrad  # before NumPy: minigrad/__init__.py tells OpenBLAS how long its threads spin
import numpy as np
import optim
from cli import HelpFormatter, add_device_argument
from minigrad import backend
from minigrad import functional as F
from swin import VARIANTS, build, settings_of
from swin.model import unusable_size_reason

TIMM_NAMES = {"swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224",
              "swin_b": "swin_base_patch4_window7_224", "swin_l": "swin_large_patch4_window7_224"}


class Contender:
    """One framework's model and optimizer, with a training step and a forward to time."""

    name = ""

    def train_step(self) -> None:
        raise NotImplementedError

    def forward(self) -> None:
        raise NotImplementedError

    def clock(self, run: Callable[[], None]) -> tuple[float, float]:
        """Seconds ``run`` takes (the host clock on the CPU, CUDA events on a GPU), and the seconds
        the host took to run it (on a GPU, to queue its kernels: where that comes near the first,
        the GPU waits for Python)."""
        raise NotImplementedError


class Minigrad(Contender):
    name = "minigrad"

    def __init__(self, args: argparse.Namespace, images: np.ndarray, labels: np.ndarray) -> None:
        minigrad.manual_seed(0)
        self.device = args.device
        self.model = build(args.model, num_classes=args.classes, img_size=args.img_size).to(args.device)
        self.optimizer = optim.AdamW(optim.weight_decay_groups(self.model, 0.05), lr=1e-4)
        self.images, self.labels = backend.to_device(images, args.device), backend.to_device(labels, args.device)

    def train_step(self) -> None:
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(self.images), self.labels).backward()
        optim.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()

    def forward(self) -> None:
        with minigrad.no_grad():
            self.model(self.images)

    def clock(self, run: Callable[[], None]) -> tuple[float, float]:
        if self.device == "cpu":
            return host_clock(run)
        cuda = backend.array_module_for("gpu").cuda
        return event_clock(run, cuda.Event(), cuda.Event(), cuda.get_elapsed_time)


class Torch(Contender):
    name = "PyTorch eager"

    def __init__(self, args: argparse.Namespace, images: np.ndarray, labels: np.ndarray) -> None:
        import timm
        import torch

        self.torch, self.device = torch, "cpu" if args.device == "cpu" else "cuda"
        torch.manual_seed(0)
        settings = settings_of(args.model, img_size=args.img_size)  # minigrad's: its window and drop-path rate
        self.model = timm.create_model(TIMM_NAMES[args.model], num_classes=args.classes, img_size=args.img_size,
                                       window_size=settings["window_size"],
                                       drop_path_rate=settings["drop_path_rate"]).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(labels).to(self.device)

    def train_step(self) -> None:
        self.optimizer.zero_grad()
        self.torch.nn.functional.cross_entropy(self.model(self.images), self.labels).backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()

    def forward(self) -> None:
        with self.torch.no_grad():
            self.model(self.images)

    def clock(self, run: Callable[[], None]) -> tuple[float, float]:
        if self.device == "cpu":
            return host_clock(run)
        cuda = self.torch.cuda
        return event_clock(run, cuda.Event(enable_timing=True), cuda.Event(enable_timing=True),
                           lambda start, end: start.elapsed_time(end))


def host_clock(run: Callable[[], None]) -> tuple[float, float]:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return seconds, seconds


def event_clock(run: Callable[[], None], start, end,
                milliseconds: Callable[[Any, Any], float]) -> tuple[float, float]:
    start.record()
    host_start = time.perf_counter()
    run()
    host_seconds = time.perf_counter() - host_start
    end.record()
    end.synchronize()
    return milliseconds(start, end) / 1000.0, host_seconds


def torch_available(args: argparse.Namespace) -> str | None:
    """Why PyTorch eager cannot be timed beside minigrad here, or None when it can."""
    try:
        import timm  # noqa: F401
        import torch
    except ImportError:
        return "torch and timm are not installed"
    if args.model not in TIMM_NAMES:
        return f"timm has no {args.model}"
    if args.device == "gpu" and not torch.cuda.is_available():
        return "this torch has no CUDA"
    return None


# ---- memory


def _peak_since_now(device: str, framework: str) -> Callable[[], int]:
    """Start measuring memory now; the function returned reads the most held since, in bytes."""
    if device == "gpu" and framework == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_reserved()
        return lambda: torch.cuda.max_memory_reserved() - baseline
    if device == "gpu":  # CuPy's pool keeps what it once held: its growth is the peak
        pool = backend.array_module_for("gpu").get_default_memory_pool()
        baseline = pool.total_bytes()
        return lambda: pool.total_bytes() - baseline
    baseline = _resident_bytes()
    try:  # Linux: the peak resident size starts again from the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return lambda: _peak_resident_bytes() - baseline


def _resident_bytes() -> int:
    return _status_kilobytes("VmRSS") * 1024


def _peak_resident_bytes() -> int:
    return _status_kilobytes("VmHWM") * 1024


def _status_kilobytes(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak only, in kilobytes on Linux


def peak_memory(make: Callable[[], Contender], device: str, framework: str) -> tuple[Contender, int]:
    """Build a contender and run two training steps; the peak memory that took, in bytes."""
    gc.collect()
    peak = _peak_since_now(device, framework)
    contender = make()
    for _ in range(2):
        contender.train_step()
    if device == "gpu":
        contender.clock(lambda: None)  # wait for the GPU
    return contender, max(peak(), 0)


# ---- reporting


def summary(seconds: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def measure(args: argparse.Namespace, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every figure of the report, for minigrad and, where it can be timed, PyTorch eager."""
    contenders = {"minigrad": peak_memory(lambda: Minigrad(args, images, labels), args.device, "minigrad")}
    missing = None if args.no_torch else torch_available(args)
    if not args.no_torch and missing is None:
        contenders["torch"] = peak_memory(lambda: Torch(args, images, labels), args.device, "torch")
    # For the timing (after the peaks above, each measured with the C library's defaults, which the
    # trainers' kept memory would blur: one framework would reuse what the other freed), both
    # frameworks reuse the memory they free, as the training scripts do.
    backend.keep_freed_host_memory()
    times: dict[str, dict[str, list[float]]] = {name: {"train_step": [], "forward": []} for name in contenders}
    host_times: dict[str, dict[str, list[float]]] = {name: {"train_step": [], "forward": []} for name in contenders}
    for kind in ("train_step", "forward"):
        for _ in range(args.warmup):
            for contender, _ in contenders.values():
                getattr(contender, kind)()
        for _ in range(args.steps):  # one of each in turn, so that both meet the same machine
            for name, (contender, _) in contenders.items():
                seconds, host_seconds = contender.clock(getattr(contender, kind))
                times[name][kind].append(seconds)
                host_times[name][kind].append(host_seconds)
    flops = contenders["minigrad"][0].model.flops()
    results: dict[str, Any] = {
        "model": args.model, "batch_size": args.batch_size, "img_size": args.img_size, "device": args.device,
        "threads": os.cpu_count(), "multiply_adds_per_image": flops,
        "reference_missing": None if "torch" in contenders else (missing or "--no-torch"),
    }
    for name, (_, memory) in contenders.items():
        step, forward = summary(times[name]["train_step"]), summary(times[name]["forward"])
        results[name] = {
            "train_step": step, "forward": forward, "peak_memory_bytes": memory,
            "images_per_s": args.batch_size / step["median_s"],
            "train_gflop_per_s": 6 * flops * args.batch_size / step["median_s"] / 1e9,
            "forward_gflop_per_s": 2 * flops * args.batch_size / forward["median_s"] / 1e9,
            "host_s": {kind: statistics.median(host_times[name][kind]) for kind in ("train_step", "forward")},
        }
    if "torch" in results:
        ours, theirs = results["minigrad"], results["torch"]
        results["ratio"] = {  # minigrad / PyTorch: above 1 is slower, or more memory
            "train_step": ours["train_step"]["median_s"] / theirs["train_step"]["median_s"],
            "forward": ours["forward"]["median_s"] / theirs["forward"]["median_s"],
            "peak_memory": ours["peak_memory_bytes"] / max(theirs["peak_memory_bytes"], 1),
        }
    return results


def print_report(results: dict[str, Any], steps: int) -> None:
    print(f"{results['model']}, batch {results['batch_size']}, {results['img_size']} px, on {results['device']} "
          f"({results['threads']} CPUs); median and range of {steps} steps")
    print(f"  {'':<14} {'training step ms':>26} {'forward ms':>26} {'images/s':>9} {'GFLOP/s':>8} {'peak MB':>8}")
    for key, label in (("minigrad", "minigrad"), ("torch", "PyTorch eager")):
        if key not in results:
            continue
        figures = results[key]
        step, forward = figures["train_step"], figures["forward"]
        print(f"  {label:<14} {_timing(step):>26} {_timing(forward):>26} {figures['images_per_s']:>9.1f} "
              f"{figures['train_gflop_per_s']:>8.1f} {figures['peak_memory_bytes'] / 2**20:>8.0f}")
    if results["device"] != "cpu":
        print("  the host's time to queue them (median ms; the GPU waits for Python where it nears the above): "
              + "; ".join(f"{label} step {results[key]['host_s']['train_step'] * 1000:.1f}, "
                          f"forward {results[key]['host_s']['forward'] * 1000:.1f}"
                          for key, label in (("minigrad", "minigrad"), ("torch", "PyTorch")) if key in results))
    if "ratio" in results:
        ratio = results["ratio"]
        print(f"  minigrad / PyTorch: training step {ratio['train_step']:.2f}, forward {ratio['forward']:.2f}, "
              f"peak memory {ratio['peak_memory']:.2f}")
    else:
        print(f"  PyTorch eager not measured: {results['reference_missing']}")


def _timing(seconds: dict[str, float]) -> str:
    return f"{seconds['median_s'] * 1000:.1f} ({seconds['min_s'] * 1000:.1f}-{seconds['max_s'] * 1000:.1f})"


def count_operations(args: argparse.Namespace, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """On the stand-in GPU: the array operations of one training step, by phase."""
    contender = Minigrad(args, images, labels)
    contender.train_step()  # the first step makes the optimizer's state
    with minigrad.profile() as profile:
        contender.train_step()
    totals = profile.totals()
    counts = {phase: int(totals[phase]["operations"]) for phase in ("forward", "backward", "clipping", "optimizer",
                                                                    "other", "total")}
    print(f"{args.model}, batch {args.batch_size}, {args.img_size} px, on the stand-in GPU (MINIGRAD_FAKE_GPU=1): "
          "array operations of one training step (the kernels CuPy would launch), not times")
    print("  " + ", ".join(f"{phase} {counts[phase]:,}" for phase in counts if phase != "total"))
    print(f"array operations per step: {counts['total']}")
    return {"model": args.model, "batch_size": args.batch_size, "img_size": args.img_size, "device": "stand-in gpu",
            "array_operations": counts}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", "--variant", dest="model", default="swin_t", choices=sorted(VARIANTS),
                        metavar="MODEL", help=f"Swin variant: {', '.join(sorted(VARIANTS))}")
    add_device_argument(parser)
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=8, help="images per step")
    parser.add_argument("--img-size", type=int, help="image side in pixels (default: the variant's, 224 for Swin-T)")
    parser.add_argument("--steps", "--repeats", dest="steps", type=int, default=5,
                        help="timed steps of each kind; their median and range are reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each kind first")
    parser.add_argument("--classes", type=int, default=11, help="classes of the model's head")
    parser.add_argument("--no-torch", action="store_true", help="time minigrad alone, even where torch is installed")
    parser.add_argument("--profile", action="store_true", help="also print where minigrad's step goes, op by op")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to this JSON file (default: print them only)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    for option in ("batch_size", "classes", "steps"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    try:
        args.device = backend.normalize_device(args.device)
    except (RuntimeError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json} exists already: name a new file (nothing is written over)")
    args.img_size = args.img_size or VARIANTS[args.model].get("img_size", 224)
    settings = settings_of(args.model, img_size=args.img_size)
    reason = unusable_size_reason(args.img_size, settings.get("patch_size", 4), settings["window_size"],
                                  len(settings["depths"]))
    if reason is not None:
        parser.error(f"--img-size {args.img_size} does not fit {args.model}: {reason}")

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, 3, args.img_size, args.img_size)).astype(np.float32)
    labels = rng.integers(0, args.classes, size=args.batch_size)
    if args.device == "gpu" and backend.fake_gpu_enabled():
        results = count_operations(args, images, labels)
    else:
        results = measure(args, images, labels)
        print_report(results, args.steps)
        if args.profile:
            contender = Minigrad(args, images, labels)
            for _ in range(2):  # a second step is still slower than the rest (measured): profile the third
                contender.train_step()
            with minigrad.profile() as profile:
                contender.train_step()
            print(profile.table(limit=20))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
