"""``.safetensors`` weights (Hugging Face's format, timm's hub weights) read with NumPy alone.

The format is a header and the raw bytes of each tensor, nothing else:

    8 bytes     N, the header's length, a little-endian unsigned 64-bit integer
    N bytes     a JSON object: name -> {"dtype": "F32", "shape": [768, 3], "data_offsets": [begin, end]}
                (and perhaps "__metadata__": {str: str}); offsets count from the end of the header
    the rest    the tensors' bytes, little-endian and C-ordered, one after another with no gaps

Reading it here, rather than with the ``safetensors`` package, costs some forty lines and gives what
the package's NumPy reader refuses: ``BF16`` tensors (NumPy has no bfloat16), widened exactly to
float32 as ``.pth`` files are. Every offset and size is checked against the header and the file, so
a file cut short or otherwise damaged is named as such instead of read as wrong numbers.
"""
from __future__ import annotations

import json
import math
import os

import numpy

from minigrad.torch_checkpoint import bfloat16_as_float32

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_LARGEST_HEADER = 100_000_000  # the format's own limit (MAX_HEADER_SIZE in the reference reader)


def load(path: str | os.PathLike) -> dict[str, numpy.ndarray]:
    """Every tensor of the file as a host array (BF16 as float32).

    ValueError names a damaged file (or one in another format); TypeError a dtype not read here.
    """
    with open(path, "rb") as file:
        try:
            data_start, entries = _read_header(file)
        except ValueError as error:
            raise ValueError(f"{path} is damaged or not a .safetensors file ({error}); if it was downloaded, "
                             f"download it again") from None
        arrays = {}
        for name, (code, shape, (begin, end)) in entries.items():
            file.seek(data_start + begin)
            raw = bytearray(end - begin)  # a buffer of our own, so the array is writable without a copy
            file.readinto(raw)
            arrays[name] = _as_array(raw, code, shape)
        return arrays


def _read_header(file) -> tuple[int, dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]]:
    """Where the data starts, and each tensor's checked ``(dtype code, shape, (begin, end))``."""
    file_size = os.fstat(file.fileno()).st_size
    if file_size < 8:
        raise ValueError(f"it is {file_size} bytes long, too short for a header")
    header_size = int.from_bytes(file.read(8), "little")
    if header_size > _LARGEST_HEADER:
        raise ValueError(f"its header length {header_size} is over the format's limit of {_LARGEST_HEADER} bytes")
    if not 0 < header_size <= file_size - 8:
        raise ValueError(f"its header length {header_size} does not fit a file of {file_size} bytes")
    try:
        header = json.loads(file.read(header_size).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    header.pop("__metadata__", None)
    entries = {name: _checked_entry(name, entry) for name, entry in header.items()}
    _check_layout(entries, data_size=file_size - 8 - header_size)
    return 8 + header_size, entries


def _checked_entry(name: str, entry) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """``(dtype code, shape, (begin, end))`` of a header entry whose fields are all well formed."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise ValueError(f"tensor {name!r} lacks its dtype, shape or data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPES:
        raise TypeError(f"tensor {name!r} has dtype {dtype}, which this reader does not know "
                        f"(it reads {', '.join(_DTYPES)}); convert the file's tensors to one of those")
    if not _naturals(shape) or not (_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise ValueError(f"tensor {name!r} has a malformed shape {shape} or data_offsets {offsets}")
    expected = math.prod(shape) * numpy.dtype(_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != expected:
        raise ValueError(f"tensor {name!r} of shape {shape} and dtype {dtype} needs {expected} bytes, "
                         f"its data_offsets {offsets} hold {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _naturals(values) -> bool:
    return isinstance(values, list) and all(type(value) is int and value >= 0 for value in values)


def _check_layout(entries: dict, data_size: int) -> None:
    """The tensors must tile the data that follows the header: no gap, no overlap, nothing missing."""
    position = 0
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin != position:
            raise ValueError(f"tensor {name!r} starts at byte {begin} of the data, where {position} was expected")
        position = end
    if position != data_size:
        raise ValueError(f"the tensors take {position} bytes, but {data_size} follow the header "
                         f"(the file is {'cut short' if position > data_size else 'longer than its header says'})")


def _as_array(raw: bytearray, code: str, shape: tuple[int, ...]) -> numpy.ndarray:
    values = numpy.frombuffer(raw, dtype=_DTYPES[code])
    if code == "BF16":
        values = bfloat16_as_float32(values)
    return values.astype(values.dtype.newbyteorder("="), copy=False).reshape(shape)
