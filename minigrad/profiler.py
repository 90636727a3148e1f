"""Where a training step spends its time: per op, forward and backward, calls, array operations and time.

    with minigrad.profile() as prof:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    print(prof.table())

Every ``Function`` is measured in its forward and its backward; an optimizer's ``step`` and
``clip_grad_norm_`` are measured as regions of their own, and the gradients handed to leaves as
``AccumulateGrad`` (as torch names it). Time is wall-clock on the CPU; on a GPU, where an op only
queues kernels, it is the time between two CUDA events recorded around it, read once at the end, so
measuring does not make the host wait for the device, and the total is the GPU's time from the
first op's start to the last op's end (its "other": the GPU idle between ops, waiting for the
host, or running kernels no op measured). Array operations (the kernels CuPy would
launch, each 5-10 us of host time on a GPU) are counted on the stand-in GPU
(``MINIGRAD_FAKE_GPU=1``), the only device that sees every one; elsewhere that column shows ``-``.
"""
from __future__ import annotations

import collections
import contextlib
import time
from typing import Any, Callable, Iterator

from minigrad import backend

PHASES = ("forward", "backward", "clipping", "optimizer")

_active: "Profile | None" = None  # the profile being recorded, if any


class _Row:
    """What one (name, phase) accumulated."""

    def __init__(self) -> None:
        self.calls, self.operations, self.seconds = 0, 0, 0.0
        self.events: list[tuple[Any, Any]] = []  # CUDA (start, end) pairs, read at the end


class Profile:
    """Measurements of one ``with minigrad.profile():`` block. Use ``table()`` to read them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], _Row] = collections.defaultdict(_Row)
        self.wall_seconds = 0.0
        self.gpu_seconds: float | None = None  # from the first op's start to the last's end, on a GPU
        self.total_operations: int | None = None
        self._first_start: Any = None  # the first CUDA event recorded, and the last
        self._last_end: Any = None

    def measure(self, name: str, phase: str, run: Callable[..., Any], *args: Any,
                device: str | None = None) -> Any:
        """``run(*args)``, recorded under ``name`` and ``phase``; ``device`` is that of the first
        array among ``args`` unless given."""
        if device is None:
            device = next((backend.device_of(a) for a in args if hasattr(a, "shape")), "cpu")
        row = self.rows[name, phase]
        row.calls += 1
        before = _operations_so_far()
        events = _cuda_events() if device == "gpu" else None
        if events is not None:
            events[0].record()
        start = time.perf_counter()
        result = run(*args)
        if events is not None:
            events[1].record()
            row.events.append(events)
            if self._first_start is None:
                self._first_start = events[0]
            self._last_end = events[1]
        else:
            row.seconds += time.perf_counter() - start
        if before is not None:
            row.operations += _operations_so_far() - before
        return result

    def totals(self) -> dict[str, dict[str, float]]:
        """Calls, array operations and seconds by phase; ``"other"``, the array operations and time
        outside every measured op (summing gradients of tensors used twice, uploading a batch); and
        ``"total"``, the whole block's (on a GPU, its time from the first op's start to the last
        op's end)."""
        totals = {phase: {"calls": 0, "operations": 0, "seconds": 0.0} for phase in PHASES}
        for (_, phase), row in self.rows.items():
            for key in ("calls", "operations", "seconds"):
                totals[phase][key] += getattr(row, key)
        measured = {key: sum(totals[phase][key] for phase in PHASES) for key in ("calls", "operations")}
        total_operations = self.total_operations or 0
        seconds = self.wall_seconds if self.gpu_seconds is None else self.gpu_seconds
        totals["other"] = {"calls": 0, "operations": total_operations - measured["operations"],
                           "seconds": seconds - sum(totals[phase]["seconds"] for phase in PHASES)}
        totals["total"] = {"calls": measured["calls"], "operations": total_operations, "seconds": seconds}
        return totals

    def table(self, limit: int | None = None) -> str:
        """The ops by time spent, most first (the first ``limit`` of them), then totals by phase."""
        counted = self.total_operations is not None
        width = max([len(name) for name, _ in self.rows] + [24])
        lines = [f"{'op':<{width}} {'phase':<9} {'calls':>6} {'array ops':>9} {'time ms':>9} {'share':>6}"]
        measured = sum(row.seconds for row in self.rows.values()) or 1.0
        ordered = sorted(self.rows.items(), key=lambda item: -item[1].seconds)
        for (name, phase), row in ordered[:limit]:
            operations = f"{row.operations:>9}" if counted else f"{'-':>9}"
            lines.append(f"{name:<{width}} {phase:<9} {row.calls:>6} {operations} "
                         f"{1000 * row.seconds:>9.1f} {row.seconds / measured:>6.1%}")
        if limit is not None and len(ordered) > limit:
            lines.append(f"... {len(ordered) - limit} more")
        lines.append("")
        for phase, total in self.totals().items():
            operations = f"{total['operations']:>9}" if counted else f"{'-':>9}"
            lines.append(f"{phase:<{width}} {'':<9} {total['calls']:>6} {operations} "
                         f"{1000 * total['seconds']:>9.1f}")
        if counted:
            lines.append("(array operations counted on the stand-in GPU)")
        return "\n".join(lines)

    def _finish(self) -> None:
        """Read the CUDA events, waiting for the GPU once, at the end."""
        timed = [row for row in self.rows.values() if row.events]
        if not timed:
            return
        cuda = backend.array_module_for("gpu").cuda
        cuda.get_current_stream().synchronize()  # every event recorded is then complete
        for row in timed:
            row.seconds += sum(cuda.get_elapsed_time(start, end) for start, end in row.events) / 1000
            row.events.clear()
        self.gpu_seconds = cuda.get_elapsed_time(self._first_start, self._last_end) / 1000


@contextlib.contextmanager
def profile() -> Iterator[Profile]:
    """Record every op run inside the block; the ``Profile`` it yields has the results."""
    global _active
    if _active is not None:
        raise RuntimeError("minigrad.profile() blocks do not nest: one is recording already")
    recording = _active = Profile()
    before = _operations_so_far()
    start = time.perf_counter()
    try:
        yield recording
    finally:
        _active = None
        recording._finish()
        recording.wall_seconds = time.perf_counter() - start
        if before is not None:
            recording.total_operations = _operations_so_far() - before


def measured(name: str, phase: str, run: Callable[..., Any], *args: Any, device: str | None = None) -> Any:
    """``run(*args)``, measured when a profile is recording (the engine calls this around ops)."""
    if _active is None:
        return run(*args)
    return _active.measure(name, phase, run, *args, device=device)


def _operations_so_far() -> int | None:
    """The stand-in GPU's count of array operations, or None where nothing counts them."""
    if not backend.fake_gpu_enabled():
        return None
    from minigrad.testing import fake_gpu

    return fake_gpu.operation_count.count


def _cuda_events():
    """A (start, end) pair of CUDA events on real CuPy; None on the stand-in, which is timed by
    the clock (its arrays compute on the CPU)."""
    if backend.fake_gpu_enabled():
        return None
    cupy = backend.array_module_for("gpu")
    return cupy.cuda.Event(), cupy.cuda.Event()
