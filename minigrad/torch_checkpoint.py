"""PyTorch checkpoints (``.pth``, ``.pt``, ``.bin`` from ``torch.save``) read without PyTorch.

Since PyTorch 1.6 such a file is a zip archive. ``<name>/data.pkl`` pickles the saved object; each
tensor in it is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``,
and each storage is a reference ``("storage", torch.FloatStorage, key, location, numel)`` to raw
bytes in ``<name>/data/<key>``, in the byte order ``<name>/byteorder`` names (little when absent).

The unpickler below maps those few torch names to NumPy code that rebuilds each tensor as an array,
bounds-checked against its storage. Every other class the pickle names (a training config, an
optimizer's state) becomes an inert ``Unknown`` that only records what it was given: nothing in the
file is run, so a checkpoint from anywhere is safe to read.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import numpy

# Storage classes and dtypes as torch pickles them, as NumPy type codes; "bf16" is widened to float32.
_STORAGES = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
             "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
             "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1"}
_DTYPES = {"float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "bf16", "int64": "i8", "int32": "i4",
           "int16": "i2", "int8": "i1", "uint64": "u8", "uint32": "u4", "uint16": "u2", "uint8": "u1", "bool": "?"}


class Unknown(dict):
    """Stands in for an object of a class this reader does not rebuild (``origin`` names it); holds
    its arguments and state (as a dict, since many such classes are dicts) and has no behaviour."""

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Unknown":
        # Here, not in __init__: protocol 2 pickles an ordinary object as NEWOBJ, which calls __new__ alone.
        self = super().__new__(cls)
        self.args, self.state = args, None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()  # not dict's __init__(*args), which would read the arguments as items

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.setdefault("items", []).append(item)

    def extend(self, items: Any) -> None:
        self.setdefault("items", []).extend(items)


class _TypeCode(str):
    """A storage class or dtype named in the pickle, as the NumPy type code it stands for."""


def _rebuild_tensor(storage: numpy.ndarray, offset: int, size, stride, *unused) -> numpy.ndarray:
    """The array ``torch.as_strided(storage, size, stride, offset)`` would give, as a fresh copy."""
    size, stride = tuple(size), tuple(stride)
    numbers = size + stride + (offset,)
    if len(size) != len(stride) or not all(type(number) is int and number >= 0 for number in numbers):
        raise ValueError(f"a tensor of size {size} and stride {stride} at offset {offset} is malformed")
    if 0 in size:
        return numpy.empty(size, dtype=storage.dtype)
    last = offset + sum((length - 1) * step for length, step in zip(size, stride))
    if last >= storage.size:
        raise ValueError(f"a tensor of size {size}, stride {stride} and offset {offset} reaches element {last} "
                         f"of a storage of {storage.size}: the file is damaged")
    strides = tuple(step * storage.itemsize for step in stride)
    return numpy.lib.stride_tricks.as_strided(storage[offset:], size, strides).copy()


def bfloat16_as_float32(halves: numpy.ndarray) -> numpy.ndarray:
    """bfloat16 values, given as their uint16 bit patterns, widened exactly: a bfloat16 is the high
    half of a float32 (NumPy has no bfloat16)."""
    return (halves.astype(numpy.uint32) << 16).view(numpy.float32)


def _as_type(raw: bytes, code: str, byteorder: str) -> numpy.ndarray:
    if code == "bf16":
        return bfloat16_as_float32(numpy.frombuffer(raw, dtype=byteorder + "u2"))
    return numpy.frombuffer(raw, dtype=numpy.dtype(code).newbyteorder(byteorder)).astype(numpy.dtype(code))


_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, *unused: data,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *unused: data,
    ("torch._tensor", "_rebuild_from_type_v2"): lambda rebuild, new_type, args, state: rebuild(*args),
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(archive.open(prefix + "data.pkl"))
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.storages: dict[str, numpy.ndarray] = {}  # tensors may share one storage
        self.unknown: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REBUILDERS:
            return _REBUILDERS[module, name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
            return self.rebuild_tensor_with_dtype
        if module in ("torch", "torch.storage") and name in _STORAGES:
            return _TypeCode(_STORAGES[name])
        if module == "torch" and name in _DTYPES:
            return _TypeCode(_DTYPES[name])
        origin = f"{module}.{name}"
        if origin not in self.unknown:
            self.unknown[origin] = type(name, (Unknown,), {"origin": origin})
        return self.unknown[origin]

    def rebuild_tensor_with_dtype(self, storage, offset, size, stride, requires_grad, hooks, dtype, *unused):
        """``_rebuild_tensor_v3``: the storage comes as raw bytes, the dtype separately."""
        if not isinstance(dtype, _TypeCode):
            raise ValueError(f"a tensor of a dtype this reader does not know ({dtype.origin})")
        return _rebuild_tensor(_as_type(storage.tobytes(), dtype, self.byteorder), offset, size, stride)

    def persistent_load(self, reference: Any) -> numpy.ndarray:
        kind, code, key, _location, count = reference[:5]
        if kind != "storage" or not isinstance(code, _TypeCode):
            raise ValueError(f"a storage of a type this reader does not know: {reference!r}")
        if key not in self.storages:
            storage = _as_type(self.archive.read(f"{self.prefix}data/{key}"), code, self.byteorder)
            if storage.size != count:
                raise ValueError(f"storage {key} holds {storage.size} elements where the pickle says {count}")
            self.storages[key] = storage
        return self.storages[key]


def is_zip_checkpoint(path: str | os.PathLike) -> bool:
    """True for ``torch.save``'s zip format (PyTorch 1.6 and later), which ``load`` reads: a file
    that starts as a zip archive does (as torch tells the formats apart), even if cut short."""
    with open(path, "rb") as file:
        return file.read(4) == b"PK\x03\x04"


def load(path: str | os.PathLike) -> Any:
    """The object saved in a ``torch.save`` zip file, its tensors as host NumPy arrays."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} starts as a zip archive but cannot be read ({error}): the file is damaged "
                         "or was not downloaded completely; download it again") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
        if not pickles:
            raise ValueError(f"{path} is a zip file but not a torch.save checkpoint (it has no <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        return _CheckpointUnpickler(archive, prefix, "<" if order == "little" else ">").load()
