"""Data parallelism over MPI, and NCCL on GPUs, the way ChainerMN did it.

The same script runs in N processes (``mpiexec -n N python examples/train_dvm.py``), the ranks.
Each holds a whole copy of the model and computes the gradients of its own 1/N of every batch;
before each optimizer step, an all-reduce averages the gradients over the ranks, so every rank
takes the same step and the copies stay equal (they start equal: rank 0's weights are broadcast).
The mean of N equal shares of a batch's gradient is the gradient of the whole batch, so N ranks
train as one process would on the same batches. Random masks (drop-path, dropout) are drawn as
one process would draw them for the whole batch, each rank keeping its own rows
(``share_of_batch``), so even those agree.

Processes and hosts talk through MPI (mpi4py; ``pip install -e ".[mpi]"`` brings it and an MPI
library as wheels). On GPUs each rank takes one of its machine's (``use_local_gpu``), and the
gradients go through NCCL (``cupy.cuda.nccl``), device to device, with NCCL's id handed from rank
0 to the others over MPI. An optimizer that packs its parameters (optim/flat.py) gives a few flat
gradient arrays, so a Swin step is a few all-reduces, not 173.

Run without ``mpiexec``, this is one process, rank 0 of 1: every function here is then a no-op,
and MPI is never imported.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import traceback
from typing import Any, Iterable, Iterator

from minigrad import backend

# Set by mpiexec/mpirun of MPICH (PMI_*), Open MPI (OMPI_*) and PMIx launchers.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


@functools.cache
def _world():
    """mpi4py's world communicator, or None for a process not started by an MPI launcher."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError(f"this process was started by mpiexec, but mpi4py does not import ({error}): "
                           "pip install -e \".[mpi]\"") from None
    return MPI.COMM_WORLD


def rank() -> int:
    """This process's number among the ranks, 0 for the first (and for a process on its own)."""
    world = _world()
    return 0 if world is None else world.Get_rank()


def world_size() -> int:
    """How many ranks train together (1 without mpiexec)."""
    world = _world()
    return 1 if world is None else world.Get_size()


def is_main() -> bool:
    """Rank 0: the one that writes files and draws progress bars."""
    return rank() == 0


def label() -> str:
    """``"[rank 1 of 4] "`` under mpiexec, to begin a message with; ``""`` in one process."""
    return f"[rank {rank()} of {world_size()}] " if world_size() > 1 else ""


def local_rank() -> int:
    """This process's number among the ranks on its own machine (0 without mpiexec)."""
    world = _world()
    if world is None:
        return 0
    from mpi4py import MPI

    return world.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


def use_local_gpu() -> None:
    """Put this rank on a GPU of its own, the ``local_rank()``-th of those its machine shows, before
    anything starts CUDA. (Where ``CUDA_VISIBLE_DEVICES`` shows each rank one GPU, that one.)"""
    if world_size() == 1 or backend.cupy is None:
        return
    runtime = backend.cupy.cuda.runtime
    try:
        count = runtime.getDeviceCount()
    except runtime.CUDARuntimeError:
        return  # no GPU here: asking for device "gpu" says why
    backend.cupy.cuda.Device(local_rank() % count).use()


def share_of_batch(rows: int) -> contextlib.AbstractContextManager:
    """A block in which this rank holds its ``rows`` rows of a global batch split evenly over the
    ranks: the random masks drawn in it (drop-path, dropout) are cut from the whole batch's, as
    one process would draw them (``backend.batch_share``)."""
    if world_size() == 1:
        return contextlib.nullcontext()
    return backend.batch_share(rank() * rows, rows, world_size() * rows)


def all_reduce_mean_(arrays: Iterable[Any]) -> None:
    """Replace each array, in place, by its mean over the ranks (the gradients before a step).

    Host arrays go through MPI; GPU arrays through NCCL, never through the host.
    """
    size = world_size()
    if size == 1:
        return
    for array in arrays:
        if backend.device_of(array) == "gpu":
            _nccl().all_reduce_sum_(array)
        else:
            from mpi4py import MPI

            _world().Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        array /= size


def broadcast_(arrays: Iterable[Any], root: int = 0) -> None:
    """Overwrite each array, in place, with rank ``root``'s (the initial weights)."""
    if world_size() == 1:
        return
    for array in arrays:
        if backend.device_of(array) == "gpu":
            _nccl().broadcast_(array, root)
        else:
            _world().Bcast(array, root=root)


def broadcast_object(value: Any, root: int = 0) -> Any:
    """Rank ``root``'s ``value`` (any picklable object: the run's folder), on every rank."""
    world = _world()
    return value if world is None else world.bcast(value, root=root)


def all_reduce_sum(value: Any) -> Any:
    """The sum over the ranks of a host value: a number or a NumPy array (loss sums, counts)."""
    world = _world()
    if world is None:
        return value
    from mpi4py import MPI

    return world.allreduce(value, op=MPI.SUM)


@contextlib.contextmanager
def ending_all_ranks_on_error() -> Iterator[None]:
    """Within this block, an exception on one rank prints its message and ends every rank
    (``MPI_Abort``), instead of leaving the others waiting in a collective for ever. A
    ``sys.exit`` with an error status (a script's own error message, printed already) ends them
    all with that status."""
    try:
        yield
    except BaseException as error:
        world = _world()
        exiting = isinstance(error, SystemExit)
        if world is None or world.Get_size() == 1 or exiting and not error.code:
            raise
        if exiting:
            sys.stderr.write(f"{label()}stopped (exit status {error.code}); ending every rank\n")
        else:
            sys.stderr.write(label() + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)  # for the launcher to pass on what this rank wrote before Abort ends them all
        world.Abort(error.code if exiting and isinstance(error.code, int) else 1)
        raise  # Abort ends this process too; should it come back, the error still goes on up


class _Nccl:
    """NCCL over the ranks' GPUs (one each: ``use_local_gpu``), its id sent by MPI."""

    def __init__(self) -> None:
        from cupy.cuda import nccl

        if not nccl.available:
            raise RuntimeError("training on several GPUs needs NCCL, which CuPy cannot load here: "
                               "pip install -e \".[multi-gpu]\" (CUDA 12) or -e \".[multi-gpu-cuda13]\" (CUDA 13)")
        world = _world()
        unique_id = world.bcast(nccl.get_unique_id() if world.Get_rank() == 0 else None, root=0)
        self._nccl = nccl
        self._communicator = nccl.NcclCommunicator(world.Get_size(), unique_id, world.Get_rank())
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def _call(self, operation: str, array, *extra) -> None:
        import cupy

        if not array.flags.c_contiguous:
            raise ValueError("NCCL reduces contiguous arrays: pack the gradients (an optimizer does)")
        stream = cupy.cuda.get_current_stream().ptr
        pointer, count, dtype = array.data.ptr, array.size, self._types[str(array.dtype)]
        getattr(self._communicator, operation)(pointer, pointer, count, dtype, *extra, stream)

    def all_reduce_sum_(self, array) -> None:
        self._call("allReduce", array, self._nccl.NCCL_SUM)

    def broadcast_(self, array, root: int) -> None:
        self._call("broadcast", array, root)


@functools.cache
def _nccl() -> _Nccl:
    return _Nccl()
