"""``save`` and ``load``: state dicts and nested containers of arrays in one ``.npz`` file.

Arrays are stored as NumPy arrays; everything around them (dicts with str or int keys, lists,
tuples, numbers, strings, None) is described by a JSON manifest stored beside them. Nothing is
pickled, so loading a file cannot run code. Writing goes to a temporary file first, then replaces
the target in one step, so an interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy

from minigrad import backend, safetensors_file, torch_checkpoint
from minigrad.tensor import Tensor

_MANIFEST = "__manifest__"


def _encode(value: Any, arrays: dict[str, numpy.ndarray]) -> Any:
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"save: dict keys must be str or int, not {type(key).__name__} ({key!r})")
        return {"dict": [[key, _encode(item, arrays)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):  # named tuples and list subclasses as plain ones
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(item, arrays) for item in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        array = backend.asnumpy(value)
        if array.dtype.hasobject:  # numpy.savez would pickle it, and load refuses pickles
            raise TypeError("save: cannot store an array of Python objects; use numeric arrays")
        name = f"a{len(arrays)}"
        arrays[name] = array
        return {"array": name}
    raise TypeError(f"save: cannot store a {type(value).__name__}; use arrays, tensors, numbers, "
                    f"strings, None, and dicts, lists or tuples of them")


def _decode(node: dict, arrays) -> Any:
    (kind, content), = node.items()
    if kind == "dict":
        return {key: _decode(item, arrays) for key, item in content}
    if kind in ("list", "tuple"):
        items = [_decode(item, arrays) for item in content]
        return items if kind == "list" else tuple(items)
    if kind == "array":
        return arrays[content]
    return content


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (e.g. a state dict, or a dict of several) to ``path`` as ``.npz``."""
    arrays: dict[str, numpy.ndarray] = {}
    manifest = json.dumps(_encode(obj, arrays))
    arrays[_MANIFEST] = numpy.frombuffer(manifest.encode(), dtype=numpy.uint8)
    path = Path(path)
    # Named after the file it becomes (".last.npz.k2j4x8.tmp"), so that what a process killed mid-write
    # leaves behind can be told from the user's own files and removed (temporary_files_of).
    handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            numpy.savez(file, **arrays)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def temporary_files_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files ``save(..., path)`` leaves beside ``path`` when its process is killed
    mid-write (an interrupted save cleans up after itself)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load(path: str | os.PathLike) -> Any:
    """Read what ``save`` wrote; arrays come back as host NumPy arrays."""
    arrays, manifest = _read_npz(path)
    if manifest is None:
        raise ValueError(f"{path} was not written by minigrad.save (it has no manifest)")
    return _decode(manifest, arrays)


def _read_npz(path: str | os.PathLike) -> tuple[dict[str, numpy.ndarray], Any]:
    """Every array of an .npz archive by name, and the manifest ``save`` stores beside them (None in
    a file it did not write); a file cut short, corrupted or of another kind is named as such."""
    def damaged(error: Exception) -> ValueError:
        return ValueError(f"{path} is damaged or not an .npz archive ({error}); if it was downloaded or copied, "
                          f"do that again")

    # Told apart by their first bytes: given anything but a zip archive, numpy.load guesses a pickle
    # and answers with advice on loading pickles, which would mislead here.
    with open(path, "rb") as file:
        start = file.read(6)
    if start == b"\x93NUMPY":
        raise ValueError(f"{path} is a single array, not an .npz archive")
    if not start.startswith(b"PK"):
        raise damaged(f"it begins with {start!r}, where a zip archive begins with b'PK'")
    try:
        loaded = numpy.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise damaged(error) from error
    with loaded as archive:
        try:
            arrays = {name: archive[name] for name in archive.files}
        except (zipfile.BadZipFile, EOFError, zlib.error, ValueError) as error:
            # A member that fails its CRC or ends early; in a compressed one (numpy.savez_compressed) the
            # damage may stop decompression, or garble the .npy header, before the CRC is checked.
            raise damaged(error) from error
    manifest = arrays.pop(_MANIFEST, None)
    return arrays, None if manifest is None else json.loads(manifest.tobytes().decode())


def load_arrays(path: str | os.PathLike) -> dict[str, numpy.ndarray]:
    """Read a flat mapping name -> host array from a weights file, whoever wrote it.

    ``.npz`` (from ``minigrad.save`` or plain ``numpy.savez``), ``.safetensors`` (Hugging Face's, read by
    ``safetensors_file``), ``.pth``/``.pt``/``.bin`` (``torch.save``'s files, read without
    PyTorch by ``torch_checkpoint``; no code in them runs).
    Official Swin checkpoints nest the weights under ``"model"``; that level is taken off.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays, manifest = _read_npz(path)
        found = arrays if manifest is None else _decode(manifest, arrays)
    elif suffix == ".safetensors":
        found = safetensors_file.load(path)
    elif suffix in (".pth", ".pt", ".bin"):
        found = _load_torch_file(path)
    else:
        raise ValueError(f"{path}: unknown weights format {suffix!r}; use .npz, .safetensors or .pth")
    for nesting in ("model", "state_dict"):
        if isinstance(found.get(nesting), dict):
            found = found[nesting]
    if isinstance(found, torch_checkpoint.Unknown):
        raise ValueError(f"{path} holds a pickled {found.origin}, not its weights; save its state_dict() instead")
    return {name: value for name, value in found.items() if hasattr(value, "shape")}


def _load_torch_file(path: Path) -> dict[str, Any]:
    """A ``torch.save`` file: its zip format is read here; the format before PyTorch 1.6 needs torch."""
    if torch_checkpoint.is_zip_checkpoint(path):
        found = torch_checkpoint.load(path)
    else:
        try:
            import torch
        except ImportError:
            raise ImportError(
                f"{path.name} is in the format of PyTorch before 1.6, which only PyTorch reads. Convert it once "
                f"on a machine that has it:\n  python -c \"import torch; torch.save(torch.load('{path.name}', "
                f"map_location='cpu', weights_only=True), '{path.stem}-new{path.suffix}')\"\nthen load "
                f"{path.stem}-new{path.suffix}.") from None
        found = _tensors_to_arrays(torch.load(path, map_location="cpu", weights_only=True), torch)
    if not isinstance(found, dict):
        raise ValueError(f"{path} holds a {type(found).__name__}, not a dict of weights")
    return found


def _tensors_to_arrays(value: Any, torch: Any) -> Any:
    if isinstance(value, dict):
        return {key: _tensors_to_arrays(item, torch) for key, item in value.items()}
    if isinstance(value, torch.Tensor):  # NumPy has no bfloat16: widen it, exactly, to float32
        value = value.detach()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return value
