"""The stand-in GPU: CuPy played on the CPU, as strict as CuPy, for tests on machines without a GPU.

With ``MINIGRAD_FAKE_GPU=1`` the backend serves device ``"gpu"`` from this module: ``cupy`` plays
the ``cupy`` module and its arrays are ``FakeGpuArray``. They hold NumPy arrays and compute with
NumPy, but behave as CuPy's arrays do wherever the two differ, so a GPU bug shows on any machine:

- A stand-in array is not a NumPy array. Every implicit conversion to the host
  (``numpy.asarray(a)``, ``memoryview(a)``, a NumPy array among its operands) raises CuPy's
  ``TypeError``; only the explicit ones move data (``get``, ``item``, ``float``, ``cupy.asnumpy``,
  printing).
- What CuPy has is read from the real ``cupy`` package, which installs and imports without a GPU
  (only launching a kernel fails): a name CuPy lacks raises ``AttributeError``; arguments are bound
  against CuPy's signatures; ``ufunc.at`` and ``ufunc.reduce`` exist where CuPy implements them, for
  the dtypes it takes; ufunc operands must be what CuPy's kernels take (device arrays and scalars,
  not lists) and match one of CuPy's type loops. Without ``cupy`` installed the same facts come from
  ``cupy_api.json``, a snapshot that ``python -m minigrad.testing.fake_gpu`` writes from it.
- Random numbers come from a stream of its own (Philox), not the CPU's, as CuPy's cuRAND stream is
  not NumPy's: no test can rely on both devices drawing the same masks.
- ``transfer_count`` counts what crosses between host and device as CuPy incurs it, and its bytes:
  uploads (host data given to ``asarray`` or ``ndarray.set``, and index lists and NumPy index
  arrays, on every call), downloads (every read to the host) and synchronisations (boolean masks,
  ``nonzero`` and one-argument ``where``, whose result size the host must read first).
- ``cupy.cuda`` streams, events and pinned memory are played with CuPy's timing rules at their
  strictest: a copy from pinned memory on a non-blocking stream happens only when something waits
  for it (``Stream``), so a missing wait, or a pinned buffer refilled before anything waited for
  the copy from it, shows on the CPU.
- Results that a GPU computes otherwise than NumPy differ from NumPy's in their last bit, as
  CuPy's do: CUDA's exp, log, erf, tanh and power are not the C library's or SciPy's, its sums
  and cuBLAS's matrix products add in another order, and the fused kernels (minigrad/kernels.py)
  do both. So a test that expects NumPy's very bits from the GPU fails here too. The change is a
  function of the value alone (the same value always gets the same bits), and spares exact
  results (sums of small integers) and what is correctly rounded on both (the basic arithmetic,
  sqrt, the optimizers' kernels).
- ``operation_count`` counts the kernels CuPy would launch: every operation that computes or copies
  on the device, by name, and the copies CuPy's own code makes (``matmul``'s of operands not in C
  order); views (reshape, transpose, slicing, ``asarray`` of a device array) launch none. On a GPU
  each launch costs 5-10 us of host time, so this count is the GPU's speed proxy.
"""
from __future__ import annotations

import ast
import collections
import functools
import inspect
import json
import numbers
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy
import scipy.special

SNAPSHOT = Path(__file__).with_name("cupy_api.json")

# The dtypes CuPy's ufunc.at takes, by the ufunc's scatter operation, as _scatter_op_single checks
# them in cupy/_core/_routines_indexing.pyx (compiled in the package, so not readable from it).
_WORDS = ["int32", "int64", "uint32", "uint64"]
SCATTER_DTYPES = {
    "add": _WORDS + ["float16", "float32", "float64"],
    "sub": ["int32", "uint32"],
    "max": _WORDS + ["float32", "float64"],
    "min": _WORDS + ["float32", "float64"],
    "and": _WORDS,
    "or": _WORDS,
    "xor": _WORDS,
}
# The only ufuncs whose reduce, accumulate and reduceat CuPy implements (ufunc in _kernel.pyx).
_REDUCING = {"reduce": ("add", "multiply"), "accumulate": ("add", "multiply"), "reduceat": ("add",)}
_UPLOADS = ("array", "asarray", "asanyarray", "ascontiguousarray")  # take host data to the device
_SYNCHRONISING = ("nonzero", "argwhere", "flatnonzero", "unique")  # sized by the data: read first
# What a GPU rounds its own way (see the module's docstring): CuPy's functions, ufuncs, ufunc
# methods and ndarray methods by name, and the fused kernels whose results are not correctly rounded.
_ROUNDED_OTHERWISE = frozenset({
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "power", "float_power", "cbrt", "sin", "cos",
    "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
    "hypot", "logaddexp", "logaddexp2", "erf", "erfc", "erfinv", "erfcinv",
    "sum", "prod", "mean", "var", "std", "average", "nansum", "nanprod", "nanmean", "nanvar", "nanstd",
    "cumsum", "cumprod", "add.reduce", "add.accumulate", "add.reduceat", "multiply.reduce",
    "multiply.accumulate", "matmul", "dot", "vdot", "inner", "outer", "tensordot", "einsum",
    "softmax_forward", "softmax_bias_mask_forward", "softmax_backward", "layer_norm_forward",
    "layer_norm_backward", "gelu_forward", "gelu_backward", "gelu_bias_forward", "column_sums"})
_EXACT_FIRST_RESULT = ("gelu_bias_forward",)  # its first result is x + bias: one addition, exact
_NOT_ON_THE_HOST = ("Implicit conversion to a NumPy array is not allowed. "
                    "Please use `.get()` to construct a NumPy array explicitly.")


class Tally:
    """A running count, ``count`` in all and ``kinds`` by kind; for transfers, ``bytes`` moved by kind."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.bytes: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, nbytes: int = 0) -> None:
        self.count += 1
        self.kinds[kind] += 1
        self.bytes[kind] += nbytes


transfer_count = Tally()  # by kind: "upload", "download", "sync"
operation_count = Tally()  # by operation: "add", "ndarray.sum", "getitem", ...


def _launch(name: str, result, inputs) -> None:
    """Count the kernel that computed ``result`` from ``inputs`` (host arrays), unless ``result``
    is a view of one of them, memory only allocated, or a dtype (``result_type``, worked out on the
    host), which CuPy makes without a kernel."""
    if name in ("empty", "empty_like") or isinstance(result, (numpy.dtype, type)):
        return
    if isinstance(result, numpy.ndarray) and any(
            isinstance(x, numpy.ndarray) and numpy.may_share_memory(result, x) for x in _host_arrays(inputs)):
        return
    operation_count.add(name)


def _round_as_a_gpu(name: str, value, inputs=()):
    """``value``, a result of operation ``name``, with a GPU's last bits where a GPU rounds
    otherwise than NumPy: about half of its finite elements changed by one unit in the last place,
    in place. Left alone: exact results, whose last eight bits are 0; results that are views of
    ``inputs`` (an einsum that only transposes), which computed nothing."""
    if name.removeprefix("cupy.").removeprefix("ndarray.") not in _ROUNDED_OTHERWISE:
        return value
    if isinstance(value, tuple):
        rounded = value[1:] if name in _EXACT_FIRST_RESULT else value
        arrays = {id(item._host): item._host for item in rounded
                  if isinstance(item, FakeGpuArray)}  # once each: a kernel's results can be one array
        for array in arrays.values():
            _change_last_bits(array)
    elif isinstance(value, FakeGpuArray) and not any(
            numpy.may_share_memory(value._host, x) for x in _host_arrays(inputs)):
        _change_last_bits(value._host)
    return value


def _change_last_bits(array: numpy.ndarray) -> None:
    """Flip the last bit of the finite floating-point elements whose last eight bits are not all 0
    and whose tenth bit is 1: about half of them, and always the same for the same value."""
    if array.dtype.kind != "f":
        return
    bits = array.view(f"u{array.itemsize}")
    bits ^= (numpy.isfinite(array) & (bits & 0xFF != 0) & (bits >> 9 & 1 == 1)).astype(bits.dtype)


def _host_arrays(values):
    for value in values:
        if isinstance(value, numpy.ndarray):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _host_arrays(value)


# --------------------------------------------------------------------------------------------
# The truth: what CuPy has, read from the package or from the snapshot of it.


def _signature_from_text(text: str) -> inspect.Signature:
    """A signature from its text, ``"(a, axis=None, *, dtype=None)"``: names and kinds are what
    binding needs, so every default becomes ``...``."""
    arguments = ast.parse(f"def f{text}: pass").body[0].args
    Parameter = inspect.Parameter
    parameters = [Parameter(a.arg, Parameter.POSITIONAL_ONLY) for a in arguments.posonlyargs]
    parameters += [Parameter(a.arg, Parameter.POSITIONAL_OR_KEYWORD) for a in arguments.args]
    first_default = len(parameters) - len(arguments.defaults)
    parameters = [p.replace(default=...) if i >= first_default else p for i, p in enumerate(parameters)]
    if arguments.vararg:
        parameters.append(Parameter(arguments.vararg.arg, Parameter.VAR_POSITIONAL))
    parameters += [Parameter(a.arg, Parameter.KEYWORD_ONLY, default=Parameter.empty if d is None else ...)
                   for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg:
        parameters.append(Parameter(arguments.kwarg.arg, Parameter.VAR_KEYWORD))
    return inspect.Signature(parameters)


def _signature_from_docstring(function) -> inspect.Signature | None:
    """The signature a compiled (Cython) function's docstring opens with, as CuPy's do:
    ``_ndarray_base.max(self, axis=None, out=None, keepdims=False) -> _ndarray_base``."""
    first_line = (getattr(function, "__doc__", None) or "").lstrip().split("\n")[0]
    match = re.match(r"[\w.]+(\(.*\))(\s*->.*)?$", first_line)
    if match is None:
        return None
    # Cython writes C types before names ("int axis=-1", "_ndarray_base b"): keep the names.
    text = re.sub(r"(?<![\w=.'\"])[A-Za-z_]\w*\s+(?=\**[A-Za-z_])", "", match.group(1))
    try:
        return _signature_from_text(text)
    except SyntaxError:
        return None


def _signature_text(function) -> str | None:
    """``function``'s parameters as text, without ``self``, annotations or default values;
    None where neither ``inspect`` nor the docstring tells them."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = _signature_from_docstring(function)
        if signature is None:
            return None
    parameters = [p.replace(annotation=p.empty, default=p.empty if p.default is p.empty else ...)
                  for p in signature.parameters.values()]
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return str(inspect.Signature(parameters)).replace("=Ellipsis", "=...")


def _numpy_knows(loop: str) -> bool:
    """Whether NumPy has every dtype of a ufunc's type loop, ``"ff->f"``: CuPy 14 adds bfloat16
    loops (type code ``E``) where ml_dtypes is installed, which the stand-in's NumPy arrays never
    meet, and which must not make the same CuPy's description differ from one machine to another."""
    try:
        for code in loop.replace("->", ""):
            numpy.dtype(code)
    except TypeError:
        return False
    return True


def _describe(value) -> dict:
    if type(value).__name__ == "ufunc" and hasattr(value, "types"):  # cupy._core._kernel.ufunc
        return {"kind": "ufunc", "nin": value.nin, "nout": value.nout,
                "types": [loop for loop in value.types if _numpy_knows(loop)],
                "scatter": getattr(value, "_scatter_op", None)}
    if callable(value) and not isinstance(value, type):
        return {"kind": "function", "signature": _signature_text(value)}
    return {"kind": "value"}


def _public_names(namespace) -> list[str]:
    return sorted(name for name in dir(namespace) if not name.startswith("_"))


def _members(cls) -> dict:
    """Each public member of ``cls``: a method with its signature, or a value (a property, a constant)."""
    return {name: {"kind": "method", "signature": _signature_text(getattr(cls, name))}
            if callable(getattr(cls, name)) else {"kind": "value"} for name in _public_names(cls)}


# What the stand-in plays of cupy.cuda (a test holds its signatures to CuPy's).
PLAYED_CUDA_CLASSES = ("Stream", "Event")
PLAYED_CUDA_FUNCTIONS = ("get_current_stream", "alloc_pinned_memory")


def describe_cupy(cupy_module, special_module) -> dict:
    """What the stand-in needs to know of CuPy, read from the installed ``cupy`` and
    ``cupyx.scipy.special``: every public name (also of ``cupy.cuda``), each function's signature,
    each ufunc's type loops and scatter operation, every ndarray method's signature, and the
    constructor and members of the ``cupy.cuda`` classes it plays."""
    return {
        "version": cupy_module.__version__,
        "module": {name: _describe(getattr(cupy_module, name)) for name in _public_names(cupy_module)},
        "special": {name: _describe(getattr(special_module, name)) for name in _public_names(special_module)},
        "ndarray": _members(cupy_module.ndarray),
        "cuda": {name: _describe(getattr(cupy_module.cuda, name)) for name in _public_names(cupy_module.cuda)},
        "cuda_classes": {name: {"signature": _signature_text(getattr(cupy_module.cuda, name)),
                                "members": _members(getattr(cupy_module.cuda, name))}
                         for name in PLAYED_CUDA_CLASSES},
    }


def _installed_cupy():
    """``cupy`` and ``cupyx.scipy.special`` when they import (no GPU needed), else None."""
    try:
        import cupy
        import cupyx.scipy.special
    except Exception:  # not installed, or installed but missing a library it loads at import
        return None
    return cupy, cupyx.scipy.special


@functools.cache
def cupy_api() -> dict:
    """The truth the stand-in plays: the installed CuPy's, or the snapshot's without one."""
    installed = _installed_cupy()
    if installed is not None:
        return describe_cupy(*installed) | {"source": "installed"}
    return json.loads(SNAPSHOT.read_text()) | {"source": "snapshot"}


def truth_source() -> str:
    """Where the stand-in's knowledge of CuPy comes from, for the test report's header."""
    api = cupy_api()
    return f"CuPy {api['version']}, " + ("the installed package" if api["source"] == "installed"
                                          else f"the snapshot {SNAPSHOT.name} (cupy is not installed)")


@functools.cache
def _signature(text: str) -> inspect.Signature:
    return _signature_from_text(text)


def _bind(text: str | None, name: str, args, kwargs) -> None:
    """Raise CuPy's TypeError where ``name`` would not take these arguments."""
    if text is None:
        return
    signature = _signature(text)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [key for key in kwargs if key not in signature.parameters and not takes_any]
    if unknown:  # what Python says first, before any missing argument
        raise TypeError(f"{name}() got an unexpected keyword argument {unknown[0]!r}")
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{name}() {error}") from None


# --------------------------------------------------------------------------------------------
# Moving between the stand-in's arrays and the NumPy arrays inside them.


def _to_host(value):
    """The NumPy arrays inside ``value`` (stand-in arrays, also in lists, tuples and dicts)."""
    if isinstance(value, FakeGpuArray):
        return value._host
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(item) for item in value)
    if isinstance(value, dict):
        return {key: _to_host(item) for key, item in value.items()}
    return value


def _to_device(value):
    """NumPy results as stand-in arrays; scalars become 0-d arrays, as CuPy returns them."""
    if isinstance(value, numpy.ndarray):
        return FakeGpuArray(value)
    if isinstance(value, numpy.generic):
        return FakeGpuArray(numpy.asarray(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item) for item in value)
    return value


def _refuse_host_arrays(values) -> None:
    """CuPy's TypeError for a NumPy array among ``values`` (also inside lists and tuples)."""
    for value in values:
        if isinstance(value, numpy.ndarray):
            raise TypeError(f"Unsupported type {type(value)}")
        if isinstance(value, (list, tuple)):
            _refuse_host_arrays(value)


def _is_scalar(value) -> bool:
    return isinstance(value, (numbers.Number, numpy.generic))


def _device_index(index, shape: tuple[int, ...]):
    """``index`` made ready for NumPy as CuPy would take it: each list or NumPy array in it is
    uploaded (counted, on every call), each boolean mask synchronises (CuPy reads how many
    elements it selects), and integer arrays wrap around out of range instead of raising."""
    parts = index if isinstance(index, tuple) else (index,)
    host_parts = []
    for part in parts:
        if isinstance(part, FakeGpuArray):
            part = part._host
        elif not (part is None or part is Ellipsis or isinstance(part, slice)
                  or (_is_scalar(part) and not isinstance(part, (bool, numpy.bool_)))):
            part = numpy.asarray(part)
            transfer_count.add("upload", part.nbytes)
            if part.size == 0:
                part = part.astype(numpy.int32)  # an empty list selects nothing: it is no mask
        if isinstance(part, numpy.ndarray) and part.dtype == bool:
            transfer_count.add("sync")
        host_parts.append(part)
    return _wrap_like_cupy(tuple(host_parts), shape) if isinstance(index, tuple) else \
        _wrap_like_cupy(host_parts[0], shape)


def _wrap_like_cupy(index, shape: tuple[int, ...]):
    """``index`` with its integer arrays taken modulo their axis's length, as CuPy takes them.
    (Index tuples with one axis per part; others pass unchanged.)"""
    parts = index if isinstance(index, tuple) else (index,)
    masks = any(isinstance(part, numpy.ndarray) and part.dtype == bool for part in parts)  # may span axes
    if masks or any(part is None or part is Ellipsis for part in parts) or len(parts) > len(shape):
        return index
    wrapped = tuple(part % shape[axis] if isinstance(part, numpy.ndarray) and part.dtype.kind in "iu"
                    and shape[axis] else part for axis, part in enumerate(parts))
    return wrapped if isinstance(index, tuple) else wrapped[0]


def _has_array_part(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, numpy.ndarray) for part in parts)


# --------------------------------------------------------------------------------------------
# Functions and ufuncs.


def _function(name: str, numpy_function, signature: str | None):
    """``cupy.<name>``: NumPy's function behind CuPy's signature and CuPy's refusal of host arrays."""
    qualified = f"cupy.{name}" if name not in _UPLOADS else name

    def call(*args, **kwargs):
        _bind(signature, qualified, args, kwargs)
        if name in _UPLOADS and args and not isinstance(args[0], FakeGpuArray):
            args = (numpy.array(_to_host(args[0])),) + args[1:]  # a copy in the device's memory
            if args[0].dtype.kind not in "biufc":  # objects, strings, dates: CuPy has no such arrays
                raise ValueError(f"Unsupported dtype {args[0].dtype}")
            transfer_count.add("upload", args[0].nbytes)
        else:
            _refuse_host_arrays(args)
            _refuse_host_arrays(kwargs.values())
        if name == "where":
            return _where(*args, **kwargs)
        if name in _SYNCHRONISING:
            transfer_count.add("sync")
        host_args = _to_host(args)
        result = numpy_function(*host_args, **_to_host(kwargs))
        _launch(name, result, host_args)
        if name == "matmul":
            _count_matmul_copies(*args[:2], args[2] if len(args) > 2 else kwargs.get("out"))
        return _round_as_a_gpu(name, _result(result, kwargs), host_args)

    call.__name__ = call.__qualname__ = name
    return call


def _count_matmul_copies(a, b, out) -> None:
    """The copies CuPy's matmul makes around its cuBLAS call (cupy/_core/_routines_linalg.pyx):
    above two dimensions every operand not in C order is copied first (its batched GEMM takes no
    transposed operand); in two, ``dot`` copies an operand in neither C nor Fortran order; and an
    ``out`` not in C order is written by a copy from a result of its own."""
    stacked = max(a.ndim, b.ndim) > 2
    for operand in (a, b):
        flags = operand._host.flags
        if not (flags.c_contiguous or (flags.f_contiguous and not stacked)):
            operation_count.add("matmul.operand_copy")
    if isinstance(out, FakeGpuArray) and not out._host.flags.c_contiguous:
        operation_count.add("matmul.out_copy")


def _where(condition, x=None, y=None):
    operation_count.add("where")
    if x is None and y is None:  # as nonzero: the host reads how many there are
        transfer_count.add("sync")
        return _to_device(numpy.nonzero(_to_host(condition)))
    if not isinstance(condition, FakeGpuArray):  # CuPy calls condition.astype(bool)
        raise AttributeError(f"'{type(condition).__name__}' object has no attribute 'astype'")
    return _to_device(numpy.where(*_to_host((condition, x, y))))


class Ufunc:
    """``cupy.<name>`` for a CuPy ufunc: NumPy's computes, CuPy's rules apply."""

    def __init__(self, name: str, numpy_ufunc, info: dict) -> None:
        self.__name__ = name
        self.nin, self.nout, self.types = info["nin"], info["nout"], info["types"]
        self._numpy, self._scatter = numpy_ufunc, info["scatter"]
        self._loops: dict[tuple, bool] = {}

    def __repr__(self) -> str:
        return f"<ufunc 'cupy_{self.__name__}' (stand-in)>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind", **unknown):
        if unknown:  # where=, order=, subok=, ... are NumPy's alone
            raise TypeError(f"Wrong arguments {unknown}")
        if not self.nin <= len(args) <= self.nin + self.nout:
            raise TypeError(f"Wrong number of arguments for 'cupy_{self.__name__}'. It must be either "
                            f"{self.nin} or {self.nin + self.nout} (with outputs), but given {len(args)}.")
        inputs, outputs = args[:self.nin], args[self.nin:] or (
            () if out is None else out if isinstance(out, tuple) else (out,))
        for value in inputs:
            if not (isinstance(value, FakeGpuArray) or _is_scalar(value)):
                raise TypeError(f"Unsupported type {type(value)}")
        for value in outputs:
            if not isinstance(value, FakeGpuArray):
                raise TypeError(f"Unsupported type {type(value)}")
        self._check_loop(inputs)
        result = self._numpy(*_to_host(inputs), out=_to_host(tuple(outputs)) or None, dtype=dtype,
                             casting=casting)
        operation_count.add(self.__name__)
        if outputs:
            return _round_as_a_gpu(self.__name__, outputs[0] if self.nout == 1 else tuple(outputs))
        return _round_as_a_gpu(self.__name__, _to_device(result))

    def _check_loop(self, inputs) -> None:
        """CuPy's TypeError where none of its type loops takes these arrays' dtypes."""
        dtypes = tuple(value.dtype if isinstance(value, FakeGpuArray) else None for value in inputs)
        if all(dtype is None for dtype in dtypes):
            return
        if dtypes not in self._loops:
            self._loops[dtypes] = any(
                all(dtype is None or numpy.can_cast(dtype, code, "safe") for dtype, code in zip(dtypes, loop))
                for loop in (loop.split("->")[0] for loop in self.types))
        if not self._loops[dtypes]:
            raise TypeError(f"Wrong type ({dtypes}) of arguments for cupy_{self.__name__}")

    def _reducing(self, method: str) -> None:
        if self.__name__ not in _REDUCING[method]:
            raise NotImplementedError(f"`cupy_{self.__name__}.{method}` is not supported yet")

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        self._reducing("reduce")
        return self._numpy_method("reduce", array, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        self._reducing("accumulate")
        return self._numpy_method("accumulate", array, axis=axis, dtype=dtype, out=out)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        self._reducing("reduceat")
        return self._numpy_method("reduceat", array, indices, axis=axis, dtype=dtype, out=out)

    def _numpy_method(self, method: str, *args, **kwargs):
        _refuse_host_arrays(args)
        _refuse_host_arrays(kwargs.values())
        operation_count.add(f"{self.__name__}.{method}")
        result = getattr(self._numpy, method)(*_to_host(args), **_to_host(kwargs))
        return _round_as_a_gpu(f"{self.__name__}.{method}", _result(result, kwargs))

    def outer(self, a, b, **kwargs):
        a, b = (value if isinstance(value, FakeGpuArray) else cupy.array(value) for value in (a, b))
        return self(a.reshape(a.shape + (1,) * b.ndim), b.reshape((1,) * a.ndim + b.shape), **kwargs)

    def at(self, a, indices, b=None) -> None:
        """``a[indices] (op)= b`` with repeated indices accumulating, where CuPy has a scatter
        kernel for this ufunc and ``a``'s dtype; a host ``b`` is uploaded, as CuPy does."""
        if self._scatter is None:
            raise NotImplementedError(f"`cupy_{self.__name__}.at` is not supported yet")
        if not isinstance(a, FakeGpuArray):
            raise AttributeError(f"'{type(a).__name__}' object has no attribute '_scatter_op'")
        if a.dtype.name not in SCATTER_DTYPES[self._scatter]:
            raise TypeError(f"cupy.{self.__name__}.at only supports "
                            f"{', '.join(SCATTER_DTYPES[self._scatter])} as data type")
        index = _device_index(indices, a.shape)
        if b is not None and not (isinstance(b, FakeGpuArray) or _is_scalar(b)):
            transfer_count.add("upload", numpy.asarray(b).nbytes)
        self._numpy.at(a._host, index, *(() if b is None else (_to_host(b),)))
        operation_count.add(f"{self.__name__}.at")


# --------------------------------------------------------------------------------------------
# The array.


def _defers_to(array, other) -> bool:
    """CuPy's rule (``_should_use_rop`` in cupy/_core/core.pyx) for leaving ``array (op) other``
    to ``other``'s reflected operator: when ``other`` opts out of NumPy's ufuncs, or, having no
    ``__array_ufunc__``, when its ``__array_priority__`` is higher (as a minigrad Tensor's)."""
    other_ufunc = getattr(other, "__array_ufunc__", _NOT_SET)
    if other_ufunc is not _NOT_SET:
        return other_ufunc is None
    return getattr(array, "__array_priority__", 0) < getattr(other, "__array_priority__", 0)


_NOT_SET = object()


def _operator(ufunc_name: str, reflected: bool = False, in_place: bool = False):
    def apply(self, other):
        ufunc = getattr(cupy, ufunc_name)
        if in_place:
            return ufunc(self, other, out=self)
        if reflected:  # Python asks the right operand last: CuPy computes
            return ufunc(other, self)
        if not isinstance(other, FakeGpuArray) and _defers_to(self, other):
            return NotImplemented
        return ufunc(self, other)

    return apply


def _unary(ufunc_name: str):
    return lambda self: getattr(cupy, ufunc_name)(self)


class FakeGpuArray:
    """An array on the stand-in GPU: a NumPy array inside, CuPy's ``ndarray`` outside.

    Its attributes are those of ``cupy.ndarray``, bound against CuPy's signatures; it mixes with no
    NumPy array; integer index arrays out of range wrap around, as on CuPy.
    """

    __slots__ = ("_host",)
    __hash__ = None  # type: ignore[assignment]
    __array_priority__ = 100  # CuPy's

    def __init__(self, host: numpy.ndarray) -> None:
        self._host = host

    # What NumPy calls its array, CuPy calls its array too, read without a transfer.
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)

    @property
    def data(self) -> "MemoryPointer":
        """Where the array lives in the device's memory: no array, as CuPy's is not."""
        return MemoryPointer(self)

    def __getattr__(self, name: str):
        member = cupy_api()["ndarray"].get(name) if not name.startswith("_") else None
        if member is None:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        try:
            value = getattr(self._host, name)
        except AttributeError:
            raise AttributeError(f"the stand-in GPU does not play cupy.ndarray.{name} "
                                 "(NumPy's arrays have no such attribute)") from None
        if member["kind"] != "method":
            return _to_device(value)
        return functools.partial(_method, value, f"cupy.ndarray.{name}", member["signature"])

    # Reads to the host: each is a transfer, as on CuPy.
    def get(self, stream=None, order="C", out=None, blocking=True) -> numpy.ndarray:
        transfer_count.add("download", self._host.nbytes)
        if out is not None:
            out[...] = self._host
            return out
        return numpy.array(self._host, order=order)

    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __float__(self) -> float:
        return float(self.get())

    def __int__(self) -> int:
        return int(self.get())

    def __complex__(self) -> complex:
        return complex(self.get())

    def __bool__(self) -> bool:
        return bool(self.get())

    def __repr__(self) -> str:  # CuPy prints from one host copy
        return repr(self.get())

    def __str__(self) -> str:
        return str(self.get())

    def __format__(self, format_spec: str) -> str:
        return format(self.get(), format_spec)

    def set(self, arr: numpy.ndarray, stream=None) -> None:
        """Copy ``arr`` in, on ``stream`` (by default the current one): a copy from pinned memory on
        a non-blocking stream is left until something waits for it (see ``Stream``)."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._host.flags.c_contiguous or self._host.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        transfer_count.add("upload", arr.nbytes)
        # CUDA reads pageable memory before the call returns, pinned memory when the copy runs.
        source = arr if _is_pinned(arr) else arr.copy()
        (get_current_stream() if stream is None else stream)._enqueue(_Copy(self._host, source))

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_NOT_ON_THE_HOST)

    def __reduce__(self):  # pickled, as CuPy's, by way of a host copy
        return _upload, (self.get(),)

    def __copy__(self) -> "FakeGpuArray":
        operation_count.add("copy")
        return FakeGpuArray(self._host.copy())

    def __deepcopy__(self, memo) -> "FakeGpuArray":
        return self.__copy__()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, index):
        result = self._host[_device_index(index, self.shape)]
        _launch("getitem", result, (self._host,))
        return _to_device(result)

    def __setitem__(self, index, value) -> None:
        host_index = _device_index(index, self.shape)
        if not (isinstance(value, FakeGpuArray) or _is_scalar(value)):
            if not _has_array_part(host_index):  # CuPy fills with it, which only a scalar can do
                raise TypeError(f"Unsupported type {type(value)}")
            transfer_count.add("upload", numpy.asarray(value).nbytes)  # an advanced-index assignment uploads them
        self._host[host_index] = _to_host(value)
        operation_count.add("setitem")

    # NumPy's functions hand stand-in arrays to CuPy's, as CuPy's arrays have them do.
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        function = _cupy_callable(ufunc.__name__)
        if method != "__call__":
            function = getattr(function, method, None)
        if function is None:
            return NotImplemented
        if "out" in kwargs:
            kwargs["out"] = kwargs["out"][0] if len(kwargs["out"]) == 1 else kwargs["out"]
        if any(not (isinstance(x, (FakeGpuArray, numpy.ndarray)) or _is_scalar(x)) for x in inputs):
            return NotImplemented
        return function(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func.__module__ != "numpy" or not hasattr(cupy, func.__name__):
            return NotImplemented
        return getattr(cupy, func.__name__)(*args, **kwargs)

    __neg__, __pos__ = _unary("negative"), _unary("positive")
    __abs__, __invert__ = _unary("absolute"), _unary("invert")
    __eq__, __ne__ = _operator("equal"), _operator("not_equal")
    __lt__, __le__ = _operator("less"), _operator("less_equal")
    __gt__, __ge__ = _operator("greater"), _operator("greater_equal")


_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "matmul": "matmul",
           "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
           "lshift": "left_shift", "rshift": "right_shift"}
for _name, _ufunc_name in _BINARY.items():
    setattr(FakeGpuArray, f"__{_name}__", _operator(_ufunc_name))
    setattr(FakeGpuArray, f"__r{_name}__", _operator(_ufunc_name, reflected=True))
    setattr(FakeGpuArray, f"__i{_name}__", _operator(_ufunc_name, in_place=True))


def _method(bound, name: str, signature: str | None, *args, **kwargs):
    """A ``cupy.ndarray`` method, computed by NumPy's."""
    _bind(signature, name, args, kwargs)
    _refuse_host_arrays(args)
    _refuse_host_arrays(kwargs.values())
    if name == "cupy.ndarray.nonzero":
        transfer_count.add("sync")
    result = bound(*_to_host(args), **_to_host(kwargs))
    inputs = (bound.__self__,) + tuple(_to_host(args))
    _launch(name.removeprefix("cupy."), result, inputs)
    return _round_as_a_gpu(name, _result(result, kwargs), inputs)


def _result(result, kwargs):
    """``result`` on the device; the very ``out=`` array where it was written there, as CuPy
    returns it."""
    out = kwargs.get("out")
    if isinstance(out, FakeGpuArray) and result is out._host:
        return out
    return _to_device(result)


def fused(name: str, reference, arrays) -> Any:
    """A fused kernel (minigrad/kernels.py) on the stand-in: its NumPy reference, one launch, and a
    GPU's last bits."""
    _refuse_host_arrays(arrays)
    operation_count.add(name)
    host_arrays = _to_host(tuple(arrays))
    given = {id(host): array for host, array in zip(host_arrays, arrays) if isinstance(array, FakeGpuArray)}

    def on_device(value):  # an array given to be written (out=) comes back itself, as from the kernel
        return given[id(value)] if id(value) in given else _to_device(value)

    result = reference(*host_arrays)
    if isinstance(result, tuple):
        return _round_as_a_gpu(name, tuple(map(on_device, result)), host_arrays)
    if id(result) in given:  # the kernel's result all the same, rounded as it rounds
        return _round_as_a_gpu(name, given[id(result)], ())
    return _round_as_a_gpu(name, _to_device(result), host_arrays)


def _upload(host: numpy.ndarray) -> FakeGpuArray:
    transfer_count.add("upload", host.nbytes)
    return FakeGpuArray(numpy.array(host))


class MemoryPointer:
    """Plays ``cupy.cuda.MemoryPointer``, what ``ndarray.data`` gives: an address, not the values
    (NumPy's ``.data`` is a buffer of them)."""

    def __init__(self, array: FakeGpuArray) -> None:
        self.ptr = array._host.__array_interface__["data"][0]

    def __repr__(self) -> str:
        return f"<MemoryPointer 0x{self.ptr:x} (stand-in GPU)>"


# --------------------------------------------------------------------------------------------
# Streams, events and pinned memory: cupy.cuda.


class _Copy:
    """A copy from the host into a device array's memory, done once, when it runs."""

    def __init__(self, target: numpy.ndarray, source: numpy.ndarray) -> None:
        self.target, self.source, self.done = target, source, False

    def run(self) -> None:
        if not self.done:
            self.target[...] = self.source
            self.done = True


class Stream:
    """Plays ``cupy.cuda.Stream``.

    The stand-in computes at once, in the order the program asks: the order of the null stream, and
    of any stream that synchronises with it (``non_blocking=False``), whose copies it does at once.
    A copy on a non-blocking stream (``ndarray.set(array, stream=s)``) is left until something waits
    for it: ``s.synchronize()``, or an event recorded on ``s`` after it, which the host synchronizes
    or a stream waits for. That is the latest a GPU may do it, so code that reads the target before
    waiting finds the old values there, and code that refills a pinned host buffer before anything
    waited for the copy from it sends the new contents, as a GPU may. (Kernels, on any stream, run
    at once, so a copy waited for by a stream is done then, not later.)
    """

    null: Stream  # the default stream, set below

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None) -> None:
        self._non_blocking = bool(non_blocking) and not (null or ptds)
        self._queued: list[_Copy] = []

    @property
    def is_non_blocking(self) -> bool:
        return self._non_blocking

    @property
    def done(self) -> bool:
        return all(copy.done for copy in self._queued)

    def _enqueue(self, copy: _Copy) -> None:
        if not self._non_blocking:
            copy.run()
            return
        self._queued = [queued for queued in self._queued if not queued.done] + [copy]

    def record(self, event=None) -> Event:
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        event.synchronize()  # what this stream runs next comes after the event's copies

    def synchronize(self) -> None:
        for copy in self._queued:
            copy.run()
        self._queued = []

    def use(self) -> Stream:
        _current_streams[-1] = self
        return self

    def __enter__(self) -> Stream:
        _current_streams.append(self)
        return self

    def __exit__(self, *exception) -> None:
        _current_streams.pop()


class Event:
    """Plays ``cupy.cuda.Event``: it marks the copies queued on a stream when it was recorded."""

    def __init__(self, block=False, disable_timing=False, interprocess=False) -> None:
        self._copies: list[_Copy] = []

    @property
    def done(self) -> bool:
        return all(copy.done for copy in self._copies)

    def record(self, stream=None) -> None:
        self._copies = list((get_current_stream() if stream is None else stream)._queued)

    def synchronize(self) -> None:
        for copy in self._copies:
            copy.run()


Stream.null = Stream(null=True)
_current_streams = [Stream.null]  # the current stream last; ``with stream:`` pushes one


def get_current_stream(device_id=None) -> Stream:
    return _current_streams[-1]


class PinnedMemoryPointer(bytearray):
    """Plays the page-locked host memory of ``cupy.cuda.alloc_pinned_memory``: a buffer that NumPy
    arrays are made over (``numpy.ndarray(shape, dtype, buffer=pointer)``), and that copies read late."""


def alloc_pinned_memory(size) -> PinnedMemoryPointer:
    return PinnedMemoryPointer(size)


def _is_pinned(array: numpy.ndarray) -> bool:
    """Whether ``array`` lies in memory from ``alloc_pinned_memory``."""
    base = array
    while isinstance(base, (numpy.ndarray, memoryview)):
        base = base.obj if isinstance(base, memoryview) else base.base
    return isinstance(base, PinnedMemoryPointer)


class _CudaStandIn(types.ModuleType):
    """Plays ``cupy.cuda``: streams, events and pinned memory, with CuPy's signatures (a test holds
    them to the installed CuPy's). Any other name of CuPy's raises that the stand-in does not play it."""

    Stream, Event, PinnedMemoryPointer = Stream, Event, PinnedMemoryPointer
    get_current_stream = staticmethod(get_current_stream)
    alloc_pinned_memory = staticmethod(alloc_pinned_memory)

    def __init__(self) -> None:
        super().__init__("cupy.cuda", "cupy.cuda, played on the CPU by minigrad's stand-in GPU")

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in cupy_api()["cuda"]:
            raise AttributeError(f"module 'cupy.cuda' has no attribute {name!r}")
        raise AttributeError(f"the stand-in GPU does not play cupy.cuda.{name}")


# --------------------------------------------------------------------------------------------
# The modules: cupy, cupy.random, cupyx.


class RandomState:
    """Plays ``cupy.random.RandomState`` with a stream of its own (Philox), not NumPy's default
    (PCG64) that the CPU draws from: CuPy's cuRAND draws other numbers than the CPU too."""

    def __init__(self, seed: int | None = None) -> None:
        self._generator = numpy.random.Generator(numpy.random.Philox(seed))

    def random_sample(self, size=None, dtype=float) -> FakeGpuArray:
        operation_count.add("random.random_sample")
        return FakeGpuArray(numpy.asarray(self._generator.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=float) -> FakeGpuArray:
        operation_count.add("random.standard_normal")
        return FakeGpuArray(numpy.asarray(self._generator.standard_normal(size, dtype=dtype)))


class _ModuleStandIn(types.ModuleType):
    """Plays a CuPy module whose names are listed in ``cupy_api()[section]``, with the same-named
    functions of ``host_module`` (NumPy, SciPy's special functions) computing."""

    def __init__(self, name: str, section: str, host_module) -> None:
        super().__init__(name, f"{name}, played on the CPU by minigrad's stand-in GPU")
        self._section, self._host_module = section, host_module

    def __getattr__(self, name: str):
        info = cupy_api()[self._section].get(name) if not name.startswith("_") else None
        if info is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        host = getattr(self._host_module, name, None)
        if host is None:
            raise AttributeError(f"the stand-in GPU does not play {self.__name__}.{name} "
                                 f"({self._host_module.__name__} has none)")
        if info["kind"] == "ufunc":
            value = Ufunc(name, host, info)
        elif info["kind"] == "function" and not isinstance(host, type):
            value = _function(name, host, info["signature"])
        else:
            value = host  # dtypes, constants
        setattr(self, name, value)  # found once
        return value


class _CupyStandIn(_ModuleStandIn):
    """Plays ``cupy``: NumPy's functions and ufuncs under CuPy's names and rules."""

    ndarray = FakeGpuArray
    random = types.SimpleNamespace(RandomState=RandomState)
    cuda = _CudaStandIn()

    def __init__(self) -> None:
        super().__init__("cupy", "module", numpy)

    @staticmethod
    def asnumpy(a, stream=None, order="C", out=None, *, blocking=True) -> numpy.ndarray:
        if isinstance(a, FakeGpuArray):
            return a.get(order=order, out=out)
        return numpy.asarray(a, order=order)


cupy = _CupyStandIn()
cupyx = types.SimpleNamespace(
    scipy=types.SimpleNamespace(special=_ModuleStandIn("cupyx.scipy.special", "special", scipy.special)))


def _cupy_callable(name: str) -> Any:
    """The stand-in's ``cupy.<name>`` or ``cupyx.scipy.special.<name>`` (a ufunc, or a function
    such as matmul), as CuPy's ``__array_ufunc__`` looks for it; None where neither has it."""
    for module in (cupy, cupyx.scipy.special):
        try:
            return getattr(module, name)
        except AttributeError:
            continue
    return None


def write_snapshot(path: Path = SNAPSHOT) -> None:
    """Write what the installed CuPy says to ``path``: the truth on machines without ``cupy``."""
    installed = _installed_cupy()
    if installed is None:
        sys.exit("cupy does not import here: pip install cupy-cuda12x (no GPU needed), then run this again")
    path.write_text(json.dumps(describe_cupy(*installed), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: CuPy {installed[0].__version__}")


if __name__ == "__main__":
    write_snapshot()
