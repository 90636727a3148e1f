"""Array backend: which module computes on an array, and moving arrays between devices.

An array lives on one device. ``"cpu"`` arrays are NumPy's, ``"gpu"`` (alias ``"cuda"``) arrays are
CuPy's. Code that computes on tensors never names NumPy: it asks ``get_array_module(a)`` for ``xp``
and calls ``xp.exp``, ``xp.matmul`` and so on, so one code path serves both devices.

The few places where NumPy and CuPy differ live here, one function each: ``scatter_add``, ``erf``,
host transfer (``asnumpy``, ``to_device``), random numbers (``manual_seed``, ``random_uniform``,
``random_normal``) and fused kernels (``fused``: NumPy's several passes, or one CUDA kernel).

For tests on machines without a GPU, ``MINIGRAD_FAKE_GPU=1`` serves device ``"gpu"`` with the
stand-in of ``minigrad/testing/fake_gpu.py``, which plays CuPy on the CPU as strictly as CuPy. It is a
test tool: this module only loads it when asked, and otherwise knows nothing of it.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from typing import Any, Callable, Iterator

import numpy
import scipy.special

_cupy_import_error: str | None = None
try:  # The "gpu" extra installs cupy-cuda12x; a machine may carry another CuPy wheel by this name.
    import cupy
except ImportError as error:
    cupy = None
    if error.name != "cupy":  # installed, but it failed to load (a CUDA library, a version clash)
        _cupy_import_error = str(error)

DEVICES = ("cpu", "gpu")
_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}

_INSTALL_HINT = (
    "Install CuPy with the CUDA libraries for your driver: pip install -e \".[gpu]\" (CUDA 12) or "
    "pip install -e \".[gpu-cuda13]\" (CUDA 13), on a machine with an NVIDIA GPU."
)


def fake_gpu_enabled() -> bool:
    """True when the stand-in GPU is on (environment variable ``MINIGRAD_FAKE_GPU=1``)."""
    return os.environ.get("MINIGRAD_FAKE_GPU", "") == "1"


def gpu_problem() -> str | None:
    """Why the real GPU cannot be used, in a sentence, or None when it can."""
    if _cupy_import_error is not None:
        return f"CuPy is installed but does not load ({_cupy_import_error})."
    return _gpu_problem(cupy)


@functools.lru_cache(maxsize=None)
def _gpu_problem(cupy_module) -> str | None:
    """Asked once per process (every op checks its device), keyed by the module for tests.

    Finding a GPU is not enough: CuPy compiles its kernels with NVRTC, multiplies with cuBLAS and
    draws random numbers with cuRAND, libraries a wheel without the ``[ctk]`` extra expects from a
    local CUDA Toolkit. A tiny matmul, kernel and random draw here turn their absence into this
    message, not an error deep inside the first step (cuRAND's at the first drop-path).
    """
    if cupy_module is None:
        return "CuPy is not installed."
    try:
        count = cupy_module.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDA error types here
        return f"CuPy cannot reach a GPU ({error})."
    if count == 0:
        return "CuPy found no GPU on this machine."
    try:
        square = cupy_module.arange(4, dtype=cupy_module.float32).reshape(2, 2)
        float((square @ square + 1).sum())
    except Exception as error:
        return (f"CuPy found a GPU but cannot compute on it ({type(error).__name__}: {error}); "
                "its CUDA libraries (NVRTC, cuBLAS) are probably missing.")
    try:
        float(cupy_module.random.RandomState(0).random_sample((2,), dtype=cupy_module.float32).sum())
    except Exception as error:
        return (f"CuPy found a GPU but cannot draw random numbers on it ({type(error).__name__}: {error}); "
                "its cuRAND library is probably missing.")
    return None


def is_gpu_available() -> bool:
    """True when device ``"gpu"`` can be used: real CuPy with a GPU, or the test stand-in."""
    return fake_gpu_enabled() or gpu_problem() is None


def normalize_device(device: str | None) -> str:
    """Return the canonical name of ``device`` (``"cpu"`` or ``"gpu"``); None means the default."""
    if device is None:
        return _default_device
    name = _ALIASES.get(str(device).lower())
    kind, _, number = str(device).lower().partition(":")
    if name is None and kind in ("gpu", "cuda") and number.isdigit():
        raise ValueError(f"unknown device {device!r}: there is one device 'gpu' (alias 'cuda'), the first GPU the "
                         f"process sees; to use GPU {number}, set CUDA_VISIBLE_DEVICES={number} and ask for 'gpu'")
    if name is None:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu' (alias 'cuda')")
    if name == "gpu" and gpu_problem() is not None and not fake_gpu_enabled():  # the cached answer first
        raise RuntimeError(f"device 'gpu' was asked for, but {gpu_problem()} {_INSTALL_HINT}")
    return name


_default_device = "cpu"


def set_default_device(device: str) -> None:
    """Set the device on which tensors made from Python numbers and lists are created."""
    global _default_device
    _default_device = normalize_device(device)


def get_default_device() -> str:
    return _default_device


# --------------------------------------------------------------------------------------------
# Which module, which device.


_stand_in = None  # minigrad.testing.fake_gpu, once MINIGRAD_FAKE_GPU=1 has asked for it


def _load_stand_in():
    global _stand_in
    if _stand_in is None:
        from minigrad.testing import fake_gpu as _stand_in
    return _stand_in


def _gpu_module():
    """``cupy``, or the stand-in that plays it when ``MINIGRAD_FAKE_GPU=1``."""
    return _load_stand_in().cupy if fake_gpu_enabled() else cupy


def _gpu_special_functions():
    """``cupyx.scipy.special``, or the stand-in's."""
    if fake_gpu_enabled():
        return _load_stand_in().cupyx.scipy.special
    import cupyx.scipy.special

    return cupyx.scipy.special


def get_array_module(array: Any):
    """Return ``numpy`` or ``cupy`` (or the stand-in) for the device ``array`` lives on."""
    if isinstance(array, numpy.ndarray):
        return numpy
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    if _stand_in is not None and isinstance(array, _stand_in.FakeGpuArray):
        return _stand_in.cupy
    return numpy


def device_of(array: Any) -> str:
    """``"gpu"`` for a CuPy (or stand-in) array, ``"cpu"`` otherwise."""
    return "cpu" if get_array_module(array) is numpy else "gpu"


def array_module_for(device: str):
    """The array module that computes on ``device``."""
    return numpy if normalize_device(device) == "cpu" else _gpu_module()


def asnumpy(array: Any) -> numpy.ndarray:
    """Copy ``array`` to the host as a plain NumPy array (a no-op view for host arrays)."""
    xp = get_array_module(array)
    return numpy.asarray(array) if xp is numpy else xp.asnumpy(array)


def host_copy(array: Any) -> numpy.ndarray:
    """A fresh host NumPy copy of ``array``, never sharing memory with it."""
    if get_array_module(array) is numpy:  # asnumpy would give the array itself, or a view of a subclass
        return numpy.array(array)  # a copy, as a plain ndarray
    return asnumpy(array)  # a copy from the device


def to_device(array: Any, device: str | None):
    """Return ``array`` (or a Python number or list) as an array on ``device``, copying only
    when it lives elsewhere."""
    if normalize_device(device) == "cpu":
        return asnumpy(array)
    if device_of(array) == "gpu":
        return array  # not even a no-op asarray: every tensor made on the GPU passes here
    return _gpu_module().asarray(asnumpy(array))


def check_same_device(arrays) -> str:
    """Return the one device that all ``arrays`` live on; raise naming both if they differ."""
    devices = {device_of(array) for array in arrays}
    if len(devices) > 1:
        raise RuntimeError(
            "expected all tensors on one device, but found them on 'cpu' and 'gpu': "
            "move them with .to(device) first"
        )
    return devices.pop() if devices else _default_device


# --------------------------------------------------------------------------------------------
# Where NumPy and CuPy differ.


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` accumulating repeated indices (``np.add.at``, CuPy's add.at)."""
    get_array_module(target).add.at(target, index, values)


def fused(name: str, reference: Callable[..., Any], kernel: Callable[..., Any], *arrays: Any) -> Any:
    """One fused operation on ``arrays`` (see minigrad/kernels.py): ``reference``, NumPy's passes,
    on the CPU; ``kernel``, one CUDA launch, on CuPy (or, where it returns NotImplemented for
    arrays it does not take, the reference). The stand-in GPU runs the reference on its host arrays
    and counts the one launch CuPy would make."""
    xp = get_array_module(arrays[0])
    if xp is numpy:
        return reference(*arrays)
    if xp is cupy:
        result = kernel(*arrays)
        return reference(*arrays) if result is NotImplemented else result
    return _stand_in.fused(name, reference, arrays)


def erf(x):
    """The error function, elementwise, on the device of ``x``: SciPy's on the host (Cephes, within
    a few ulps), CuPy's on the GPU. NumPy has none."""
    if get_array_module(x) is numpy:
        return numpy.asarray(scipy.special.erf(x))  # a 0-d array stays an array, as elsewhere
    return _gpu_special_functions().erf(x)


# --------------------------------------------------------------------------------------------
# Host memory.

_MMAP_THRESHOLD, _TRIM_THRESHOLD = -3, -1  # glibc's mallopt parameters M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def keep_freed_host_memory() -> bool:
    """Ask the C library's malloc (glibc's) to keep the memory freed arrays held, for the next
    arrays, instead of handing it back to the system. Returns whether it agreed (False elsewhere).

    By default glibc maps each array over 32 MB afresh from the system and unmaps it when it is
    freed, and gives back the top of its heap once 128 kB to 64 MB of it is free; every page of
    memory taken anew then costs a page fault and is filled with zeros, some 0.1 ms a megabyte. A
    Swin-T step at batch 8 makes and frees a few gigabytes of temporaries: faulted in afresh each
    step, that was a tenth of the step. Kept, the memory stays with the process at its peak, which
    a training run reaches again at every step anyway. The training scripts and the benchmark
    call this; a library does not change its host's allocator unasked."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to do
        return False
    mapped_above = next((size for size in (1 << 30, 1 << 25) if mallopt(_MMAP_THRESHOLD, size)), None)
    return mapped_above is not None and bool(mallopt(_TRIM_THRESHOLD, (1 << 31) - 1))


# --------------------------------------------------------------------------------------------
# Random numbers: one seeded generator per device.

class _HostRandomState:
    """NumPy's seeded Generator behind the two methods of ``cupy.random.RandomState`` we use."""

    def __init__(self, seed: int | None = None) -> None:
        self._generator = numpy.random.default_rng(seed)

    def random_sample(self, size=None, dtype=float):
        return self._generator.random(size, dtype=dtype)

    def standard_normal(self, size=None, dtype=float):
        return self._generator.standard_normal(size, dtype=dtype)


_generators: dict[str, Any] = {}
_seed: int | None = None


def _new_generator(device: str, seed: int | None):
    if device == "cpu":
        return _HostRandomState(seed)
    return _gpu_module().random.RandomState(seed)


def manual_seed(seed: int) -> None:
    """Seed the generators of every device (initialisation, dropout, drop-path).

    Each device's generator is made at its first draw, from this seed: seeding never starts a GPU
    (a CUDA context, cuRAND) in a program that computes on the CPU only. So the range is checked
    here, where CuPy would only refuse a seed outside it at that first draw.
    """
    global _seed
    if not 0 <= seed < 2**64:
        raise ValueError(f"a seed must lie in [0, 2**64), got {seed}")
    _seed = seed
    _generators.clear()


def _generator(device: str):
    device = normalize_device(device)
    if device not in _generators:
        _generators[device] = _new_generator(device, _seed)
    return _generators[device]


def random_uniform(shape: tuple[int, ...], dtype, device: str):
    """Uniform samples in [0, 1) of ``shape`` and ``dtype`` on ``device``."""
    return _draw(_generator(device).random_sample, shape, dtype)


def random_normal(shape: tuple[int, ...], dtype, device: str):
    """Standard normal samples of ``shape`` and ``dtype`` on ``device``."""
    return _draw(_generator(device).standard_normal, shape, dtype)


# In data-parallel training (minigrad.distributed) each process holds rows start:start+count of a
# global batch of total rows: (start, count, total), or None in a process that holds the whole batch.
_batch_share: tuple[int, int, int] | None = None


@contextlib.contextmanager
def batch_share(start: int, count: int, total: int) -> Iterator[None]:
    """Within this block, this process holds rows ``start:start + count`` of a batch of ``total``:
    a draw whose first axis grows with the batch (a mask per sample, per window, per token) is
    drawn for the whole batch and cut to this process's rows. So the drop-path and dropout masks
    of a data-parallel step are those one process would draw for the whole batch, and every
    process's generator moves on as that one process's would."""
    global _batch_share
    if not 0 <= start < start + count <= total:
        raise ValueError(f"rows {start}:{start + count} are not a share of a batch of {total}")
    outer, _batch_share = _batch_share, (start, count, total)
    try:
        yield
    finally:
        _batch_share = outer


def _draw(sample: Callable, shape: tuple[int, ...], dtype):
    if _batch_share is None or not shape or shape[0] % _batch_share[1]:
        return sample(shape, dtype=dtype)
    start, count, total = _batch_share
    per_row = shape[0] // count  # 1 for a mask per sample, the windows of an image for one per window
    whole = sample((per_row * total,) + tuple(shape[1:]), dtype=dtype)
    return whole[per_row * start:per_row * (start + count)]
