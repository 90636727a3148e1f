"""The .safetensors reader: files written by Hugging Face's own package read back exactly, BF16
widened to float32 bit for bit, and every kind of damage named as such."""
import json
import sys

import numpy as np
import pytest

from minigrad import safetensors_file
from minigrad.serialization import load_arrays


def write(path, tensors, header=None, tail=b""):
    """A .safetensors file of ``tensors`` (name -> (dtype, shape, raw bytes)), laid out as the format
    says; ``header`` replaces the header that layout gives, ``tail`` follows the data."""
    entries, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(entries if header is None else header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data + tail)
    return path


@pytest.fixture
def official():
    return pytest.importorskip("safetensors.numpy")


def test_every_numpy_dtype_written_by_the_safetensors_package_reads_back_exactly(tmp_path, official):
    rng = np.random.default_rng(0)
    arrays = {"f64": rng.standard_normal((2, 3)), "f32": rng.standard_normal(5).astype(np.float32),
              "f16": rng.standard_normal((4, 1)).astype(np.float16), "scalar": np.array(2.5, dtype=np.float32),
              "empty": np.zeros((0, 3), dtype=np.float32), "bool": np.array([True, False, True])}
    for dtype in (np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8):
        arrays[np.dtype(dtype).name] = rng.integers(0, 100, size=(3, 2)).astype(dtype)
    official.save_file(arrays, str(tmp_path / "all.safetensors"), metadata={"format": "np"})
    loaded = safetensors_file.load(tmp_path / "all.safetensors")
    assert sorted(loaded) == sorted(arrays)
    for name, expected in arrays.items():
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        assert np.array_equal(loaded[name], expected), name
        assert loaded[name].flags.writeable and loaded[name].dtype.isnative


def test_bfloat16_is_widened_to_float32_bit_for_bit(tmp_path):
    # bfloat16 is the upper half of a float32: 0x3F80 is 1.0, 0xC000 is -2.0, 0x3F81 is 1 + 2^-7,
    # 0x7F80 is infinity, 0x0001 the smallest subnormal, 2^-133.
    bits = np.array([0x3F80, 0xC000, 0x3F81, 0x7F80, 0x0001, 0x8000], dtype="<u2")
    path = write(tmp_path / "bf16.safetensors", {"w": ("BF16", (2, 3), bits.tobytes())})
    loaded = load_arrays(path)["w"]
    assert loaded.dtype == np.float32 and loaded.shape == (2, 3)
    expected = np.array([[1.0, -2.0, 1 + 2**-7], [np.inf, 2.0**-133, -0.0]], dtype=np.float32)
    assert np.array_equal(loaded.view(np.uint32), expected.view(np.uint32))


def test_bfloat16_written_by_torch_matches_torchs_float32(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    safetensors_torch.save_file({"w": values}, str(tmp_path / "bf16.safetensors"))
    assert np.array_equal(safetensors_file.load(tmp_path / "bf16.safetensors")["w"], values.float().numpy())


def test_reading_needs_no_safetensors_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # any import of it now fails
    path = write(tmp_path / "w.safetensors", {"w": ("F32", (2,), np.array([1.5, -3.0], "<f4").tobytes())})
    assert np.array_equal(load_arrays(path)["w"], np.array([1.5, -3.0], dtype=np.float32))


def two_tensors():
    return {"a": ("F32", (2,), np.ones(2, "<f4").tobytes()), "b": ("I64", (1,), np.ones(1, "<i8").tobytes())}


def entries(**changes):
    """The header ``two_tensors`` is written with (a at bytes 0-8, b at 8-16), with ``changes``."""
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]}}
    for name, entry in changes.items():
        header[name] = entry
    return header


@pytest.mark.parametrize("damage, header, tail", [
    ("a gap between tensors", entries(b={"dtype": "I64", "shape": [1], "data_offsets": [9, 17]}), b"\0"),
    ("overlapping tensors", entries(b={"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}), b""),
    ("bytes beyond the last tensor", None, b"\0" * 8),
    ("offsets that do not hold the shape", entries(a={"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}), b""),
    ("offsets reaching past the file", entries(b={"dtype": "I64", "shape": [2], "data_offsets": [8, 24]}), b""),
    ("negative sizes", entries(a={"dtype": "F32", "shape": [-2, -1], "data_offsets": [0, 8]}), b""),  # 2 elements
    ("a fractional size", entries(a={"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}), b""),
    ("a boolean size", entries(a={"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}), b""),
    ("offsets the wrong way round", entries(a={"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}), b""),
    ("three offsets", entries(a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}), b""),
    ("no dtype", entries(a={"shape": [2], "data_offsets": [0, 8]}), b""),
    ("no shape", entries(a={"dtype": "F32", "data_offsets": [0, 8]}), b""),
    ("an entry that is not an object", entries(a=[0, 8]), b""),
    ("a header that is a list", [1, 2], b""),
])
def test_a_damaged_header_or_layout_is_named_as_such(tmp_path, damage, header, tail):
    path = write(tmp_path / "model.safetensors", two_tensors(), header=header, tail=tail)
    with pytest.raises(ValueError, match="model.safetensors is damaged or not a .safetensors file"):
        load_arrays(path)


LATIN_1_HEADER = '{"\xe9": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}'.encode("latin-1")  # JSON, not UTF-8


@pytest.mark.parametrize("content", [b"", b"\x01\x02", (1000).to_bytes(8, "little") + b"{}",
                                     (2).to_bytes(8, "little") + b"\xff\xfe", (2).to_bytes(8, "little") + b"{,",
                                     len(LATIN_1_HEADER).to_bytes(8, "little") + LATIN_1_HEADER,
                                     b"PK\x03\x04 a zip archive, say a .pth file"],
                         ids=["empty", "shorter than the length", "length past the end", "not UTF-8", "not JSON",
                              "a name in Latin-1", "another format"])
def test_a_file_that_is_not_safetensors_at_all_is_named_as_such(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="model.safetensors is damaged or not a .safetensors file"):
        safetensors_file.load(path)


def test_the_header_may_list_the_tensors_in_any_order(tmp_path):
    """The format orders the data, not the header: the reference sorts the entries by their offsets."""
    header = entries()
    path = write(tmp_path / "w.safetensors", two_tensors(), header={"b": header["b"], "a": header["a"]})
    loaded = safetensors_file.load(path)
    assert loaded["a"].dtype == np.float32 and loaded["b"].dtype == np.int64
    assert np.array_equal(loaded["a"], np.ones(2)) and np.array_equal(loaded["b"], np.ones(1))


@pytest.mark.parametrize("length, reason", [(100_000_000, "does not fit a file of 10 bytes"),
                                            (100_000_001, "is over the format's limit of 100000000 bytes")])
def test_a_header_longer_than_the_format_allows_is_refused_as_such(tmp_path, length, reason):
    """The reference refuses a header of more than 100,000,000 bytes (MAX_HEADER_SIZE; not 100 MiB),
    however long the file."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(length.to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match=f"model.safetensors is damaged .*its header length {length} {reason}"):
        safetensors_file.load(path)


def test_metadata_is_skipped_and_an_empty_file_of_tensors_reads_as_empty(tmp_path):
    path = write(tmp_path / "empty.safetensors", {}, header={"__metadata__": {"format": "pt"}})
    assert safetensors_file.load(path) == {}


def test_a_dtype_the_reader_does_not_know_is_named_with_those_it_does(tmp_path):
    path = write(tmp_path / "f8.safetensors", {"w": ("F8_E4M3", (4,), bytes(4))})
    with pytest.raises(TypeError, match=r"'w' has dtype F8_E4M3, which this reader does not know \(it reads F64, "):
        load_arrays(path)
