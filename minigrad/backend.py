"""Array backend: which module computes on an array, and moving arrays between devices.

An array lives on one device. ``"cpu"`` arrays are NumPy's, ``"gpu"`` (alias ``"cuda"``) arrays are
CuPy's. Code that computes on tensors never names NumPy: it asks ``get_array_module(a)`` for ``xp``
and calls ``xp.exp``, ``xp.matmul`` and so on, so one code path serves both devices.

The few places where NumPy and CuPy differ live here, one function each: ``scatter_add``, ``erf``,
host transfer (``asnumpy``, ``to_device``) and random numbers (``manual_seed``, ``random_uniform``,
``random_normal``).

For tests on machines without a GPU, ``MINIGRAD_FAKE_GPU=1`` serves device ``"gpu"`` on the CPU with
a strict stand-in (``FakeGpuArray``) that, like CuPy, refuses to mix with plain NumPy arrays and
counts every host-device transfer (``transfer_count``). It is a test tool, never used otherwise.
"""
from __future__ import annotations

import functools
import os
import types
from typing import Any

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

    Finding a GPU is not enough: CuPy compiles its kernels with NVRTC and multiplies with cuBLAS,
    libraries a wheel without the ``[ctk]`` extra expects from a local CUDA Toolkit. A tiny matmul
    and kernel here turn their absence into this message, not an error deep inside the first step.
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
    if name == "gpu" and not fake_gpu_enabled():
        problem = gpu_problem()
        if problem is not None:
            raise RuntimeError(f"device 'gpu' was asked for, but {problem} {_INSTALL_HINT}")
    return name


_default_device = "cpu"


def set_default_device(device: str) -> None:
    """Set the device on which tensors made from Python numbers and lists are created."""
    global _default_device
    _default_device = normalize_device(device)


def get_default_device() -> str:
    return _default_device


# --------------------------------------------------------------------------------------------
# The strict stand-in for CuPy.


class _TransferCounter:
    """Counts host<->device transfers of the stand-in GPU (tests assert on it)."""

    def __init__(self) -> None:
        self.count = 0


transfer_count = _TransferCounter()


def _refuse_host_arrays(values) -> None:
    for value in values:
        if type(value) is numpy.ndarray:
            raise TypeError(f"Unsupported type {type(value)}")
        if isinstance(value, (list, tuple)):
            _refuse_host_arrays(value)


def _to_base(value):
    if isinstance(value, FakeGpuArray):
        return value.view(numpy.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_base(item) for item in value)
    if isinstance(value, dict):
        return {key: _to_base(item) for key, item in value.items()}
    return value


def _to_fake(value):
    if isinstance(value, numpy.ndarray):
        return value.view(FakeGpuArray)
    if isinstance(value, numpy.generic):  # CuPy returns 0-d arrays where NumPy returns scalars
        return numpy.asarray(value).view(FakeGpuArray)
    if isinstance(value, tuple):
        return tuple(_to_fake(item) for item in value)
    if isinstance(value, list):
        return [_to_fake(item) for item in value]
    return value


def _wrap_like_cupy(index, shape: tuple[int, ...]):
    """``index`` with its integer arrays taken modulo their axis's length, as CuPy takes them: an
    index out of range wraps around there instead of raising. (Index tuples with one axis per part;
    others pass unchanged.)"""
    parts = index if isinstance(index, tuple) else (index,)
    masks = any(isinstance(part, numpy.ndarray) and part.dtype == bool for part in parts)  # may span axes
    if masks or any(part is None or part is Ellipsis for part in parts) or len(parts) > len(shape):
        return index
    wrapped = []
    for axis, part in enumerate(parts):
        if isinstance(part, (list, numpy.ndarray)) and numpy.asarray(part).dtype.kind in "iu" and shape[axis]:
            part = numpy.asarray(part) % shape[axis]
        wrapped.append(part)
    return tuple(wrapped) if isinstance(index, tuple) else wrapped[0]


def _refuse_a_where_mask(kwargs) -> None:
    """CuPy's ufuncs and reductions take no ``where=`` (NumPy's own reductions pass ``where=True``)."""
    if kwargs.get("where", True) is not True:
        raise TypeError(f"Wrong arguments {{'where': {kwargs['where']!r}}}")


class FakeGpuArray(numpy.ndarray):
    """A NumPy array that plays a CuPy array in tests: same results, CuPy's strictness.

    Mixing it with a plain ``numpy.ndarray`` in an operation raises CuPy's ``TypeError``; reading
    values to the host (``item``, ``float``, ``bool``, ``tolist``, ``get``, printing) counts as a transfer;
    an integer array index out of range wraps around, as on CuPy, where NumPy would raise.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host_arrays(inputs)
        _refuse_host_arrays(kwargs.values())  # out=, and where=/initial= of a reduction
        _refuse_a_where_mask(kwargs)
        inputs = _to_base(inputs)
        if method == "at":  # ufunc.at(target, index, ...)
            inputs = (inputs[0], _wrap_like_cupy(inputs[1], inputs[0].shape), *inputs[2:])
        result = getattr(ufunc, method)(*inputs, **_to_base(kwargs))
        return None if method == "at" else _to_fake(result)

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host_arrays(args)
        _refuse_host_arrays(kwargs.values())
        return _to_fake(func(*_to_base(args), **_to_base(kwargs)))

    def __getitem__(self, index):
        _refuse_host_arrays(index if isinstance(index, tuple) else (index,))
        return _to_fake(super().__getitem__(_wrap_like_cupy(_to_base(index), self.shape)))

    def __setitem__(self, index, value):
        _refuse_host_arrays(index if isinstance(index, tuple) else (index,))
        _refuse_host_arrays((value,))
        super().__setitem__(_wrap_like_cupy(_to_base(index), self.shape), _to_base(value))

    def _host_read(self):
        transfer_count.count += 1
        return self.view(numpy.ndarray)

    def item(self, *args):
        return self._host_read().item(*args)

    def tolist(self):
        return self._host_read().tolist()

    def get(self) -> numpy.ndarray:
        return self._host_read().copy()

    def __float__(self):
        return float(self._host_read())

    def __int__(self):
        return int(self._host_read())

    def __bool__(self):
        return bool(self._host_read())

    def __index__(self):
        return self._host_read().__index__()

    # CuPy prints from a host copy: one transfer, however many elements are shown.
    def __repr__(self):
        return "FakeGpuArray(" + repr(self._host_read())[6:]

    def __str__(self):
        return str(self._host_read())

    def __format__(self, format_spec: str) -> str:
        return format(self._host_read(), format_spec)


class _HostRandomState:
    """NumPy's seeded Generator behind the two methods of ``cupy.random.RandomState`` we use."""

    def __init__(self, seed: int | None = None) -> None:
        self._generator = numpy.random.default_rng(seed)

    def random_sample(self, size=None, dtype=float):
        return self._generator.random(size, dtype=dtype)

    def standard_normal(self, size=None, dtype=float):
        return self._generator.standard_normal(size, dtype=dtype)


class _FakeCupyRandomState(_HostRandomState):
    """Plays ``cupy.random.RandomState``: host samples handed out as stand-in GPU arrays."""

    def random_sample(self, size=None, dtype=float):
        return _to_fake(super().random_sample(size, dtype))

    def standard_normal(self, size=None, dtype=float):
        return _to_fake(super().standard_normal(size, dtype))


class _FakeUfunc:
    """Plays a CuPy ufunc reached through the module (``xp.exp``, ``xp.add.at``): NumPy arrays are
    refused and results live on the device, also when no stand-in array is among the arguments
    (with one, NumPy hands the call to ``FakeGpuArray.__array_ufunc__`` anyway)."""

    def __init__(self, ufunc: numpy.ufunc, method: str = "__call__") -> None:
        self._ufunc, self._method = ufunc, method

    def __call__(self, *args, **kwargs):
        _refuse_host_arrays(args)
        _refuse_host_arrays(kwargs.values())
        _refuse_a_where_mask(kwargs)
        return _to_fake(getattr(self._ufunc, self._method)(*args, **kwargs))

    def __getattr__(self, name: str):
        attribute = getattr(self._ufunc, name)
        return _FakeUfunc(self._ufunc, name) if name in ("reduce", "accumulate", "outer", "at") else attribute


class _FakeCupyModule(types.ModuleType):
    """Plays the ``cupy`` module: NumPy's functions, returning stand-in GPU arrays.

    ``asarray``/``array`` of host data is a host-to-device transfer and is counted as one.
    """

    _UPLOADS = ("asarray", "array", "ascontiguousarray")

    def __init__(self) -> None:
        super().__init__("fake_cupy")

    def __getattr__(self, name: str):
        attribute = getattr(numpy, name)
        if isinstance(attribute, numpy.ufunc):
            return _FakeUfunc(attribute)
        if isinstance(attribute, (type, types.ModuleType)) or not callable(attribute):
            return attribute  # dtypes, constants
        upload = name in self._UPLOADS

        def on_fake_gpu(*args, **kwargs):
            if upload and args and not isinstance(args[0], FakeGpuArray):
                transfer_count.count += 1
                args = (numpy.asarray(args[0]),) + args[1:]
            elif not upload:
                _refuse_host_arrays(args)
                _refuse_host_arrays(kwargs.values())
            return _to_fake(attribute(*_to_base(args), **_to_base(kwargs)))

        on_fake_gpu.__name__ = name
        return on_fake_gpu


_fake_cupy = _FakeCupyModule()


# --------------------------------------------------------------------------------------------
# Which module, which device.


def _gpu_module():
    return _fake_cupy if fake_gpu_enabled() else cupy


def get_array_module(array: Any):
    """Return ``numpy`` or ``cupy`` (or the stand-in) for the device ``array`` lives on."""
    if isinstance(array, FakeGpuArray):
        return _fake_cupy
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def device_of(array: Any) -> str:
    """``"gpu"`` for a CuPy (or stand-in) array, ``"cpu"`` otherwise."""
    return "cpu" if get_array_module(array) is numpy else "gpu"


def array_module_for(device: str):
    """The array module that computes on ``device``."""
    return numpy if normalize_device(device) == "cpu" else _gpu_module()


def asnumpy(array: Any) -> numpy.ndarray:
    """Copy ``array`` to the host as a plain NumPy array (a no-op view for host arrays)."""
    if isinstance(array, FakeGpuArray):
        return array.get()
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)


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
    return _gpu_module().asarray(array if device_of(array) == "gpu" else asnumpy(array))


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


def erf(x):
    """The error function, elementwise, on the device of ``x``: SciPy's on the host (Cephes, within
    a few ulps), CuPy's on the GPU. NumPy has none."""
    if isinstance(x, FakeGpuArray):
        return _to_fake(numpy.asarray(scipy.special.erf(x.view(numpy.ndarray))))
    if get_array_module(x) is numpy:
        return numpy.asarray(scipy.special.erf(x))  # a 0-d array stays an array, as elsewhere
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


# --------------------------------------------------------------------------------------------
# Random numbers: one seeded generator per device.

_generators: dict[str, Any] = {}
_seed: int | None = None


def _new_generator(device: str, seed: int | None):
    if device == "cpu":
        return _HostRandomState(seed)
    return _FakeCupyRandomState(seed) if fake_gpu_enabled() else cupy.random.RandomState(seed)


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
    return _generator(device).random_sample(shape, dtype=dtype)


def random_normal(shape: tuple[int, ...], dtype, device: str):
    """Standard normal samples of ``shape`` and ``dtype`` on ``device``."""
    return _generator(device).standard_normal(shape, dtype=dtype)
