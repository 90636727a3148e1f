"""save/load: state dicts and nested containers in one .npz, no pickle, atomic writes."""
import collections
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.serialization import load_arrays


def assert_same(loaded, expected):
    """Equal in structure, types and values (arrays exactly, with their dtype)."""
    if isinstance(expected, np.ndarray):
        assert type(loaded) is np.ndarray and loaded.dtype == expected.dtype and loaded.shape == expected.shape
        np.testing.assert_array_equal(loaded, expected)
    elif isinstance(expected, dict):
        assert type(loaded) is dict and list(loaded) == list(expected)
        for key in expected:
            assert type(key) is type(next(k for k in loaded if k == key))
            assert_same(loaded[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for item, expected_item in zip(loaded, expected):
            assert_same(item, expected_item)
    elif isinstance(expected, float) and math.isnan(expected):
        assert type(loaded) is float and math.isnan(loaded)
    else:
        assert type(loaded) is type(expected) and loaded == expected


def round_trip(obj, tmp_path):
    minigrad.save(obj, tmp_path / "checkpoint.npz")
    return minigrad.load(tmp_path / "checkpoint.npz")


def test_state_dict_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "weight": rng.standard_normal((3, 4)).astype(np.float32),
        "double": rng.standard_normal(5),
        "index": np.arange(7, dtype=np.int64),
        "small": np.array([-3, 4], dtype=np.int8),
        "mask": np.array([True, False]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": rng.standard_normal((4, 6))[::2, ::3].T,
    }
    assert_same(round_trip(state, tmp_path), state)


def test_nested_containers_round_trip(tmp_path):
    optimizer_state = {
        "state": {0: {"step": 3, "exp_avg": np.ones((2, 2), dtype=np.float32)}, 7: {"step": 0}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "params": [0, 7],
                          "name": "décay ✓", "schedule": None}],
        "limits": (math.inf, -math.inf, math.nan, 2 ** 62, -1, 0.1),
        "flags": [True, False, None, "", [], (), {}],
    }
    assert_same(round_trip(optimizer_state, tmp_path), optimizer_state)


def test_tensors_are_stored_as_arrays(tmp_path):
    loaded = round_trip({"t": minigrad.tensor([1.0, 2.0])}, tmp_path)
    assert_same(loaded, {"t": np.array([1.0, 2.0], dtype=np.float32)})


def test_named_tuples_come_back_as_tuples(tmp_path):
    Pair = collections.namedtuple("Pair", "first second")
    assert_same(round_trip({"pair": Pair(1, np.arange(2))}, tmp_path), {"pair": (1, np.arange(2))})


def test_module_state_dict_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    minigrad.manual_seed(5)
    other = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    other.load_state_dict(round_trip(model.state_dict(), tmp_path))
    assert_same(other.state_dict(), model.state_dict())


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    minigrad.save({"w": np.arange(3.0), "nested": {"b": np.ones(2, dtype=np.int32)}}, tmp_path / "x.npz")
    with np.load(tmp_path / "x.npz", allow_pickle=False) as archive:
        arrays = [archive[name] for name in archive.files]
    assert any(array.dtype == np.float64 and array.tolist() == [0.0, 1.0, 2.0] for array in arrays)
    assert all(array.dtype != object for array in arrays)


@pytest.mark.parametrize("obj", [{"f": object()}, {"s": {1, 2}}, {1.5: np.ones(1)}, {(1, 2): 3}, {True: 1},
                                 [lambda: 0], {"o": np.array([1, "a"], dtype=object)}])
def test_unsupported_objects_raise_type_error(obj, tmp_path):
    with pytest.raises(TypeError):
        minigrad.save(obj, tmp_path / "bad.npz")
    assert list(tmp_path.iterdir()) == []


def test_loading_a_foreign_npz_raises_value_error(tmp_path):
    np.savez(tmp_path / "foreign.npz", weight=np.ones(3))
    with pytest.raises(ValueError, match="foreign.npz"):
        minigrad.load(tmp_path / "foreign.npz")


def flip_a_byte_in_the_data(content: bytes) -> bytes:
    damaged = bytearray(content)
    damaged[500] ^= 0xFF  # inside the stored array: the member's CRC no longer matches
    return bytes(damaged)


def npz_with_a_garbled_header() -> bytes:
    """An .npz whose member (CRC and all intact) has an .npy header without the keys an array needs."""
    array, archive = io.BytesIO(), io.BytesIO()
    np.save(array, np.arange(3.0))
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("w.npy", array.getvalue().replace(b"'descr'", b"'dexcr'"))
    return archive.getvalue()


@pytest.mark.parametrize("damage", ["cut short", "a flipped byte", "a CSV file", "a pickle", "a garbled header"])
def test_a_damaged_or_foreign_file_is_named_as_such(tmp_path, damage):
    path = tmp_path / "last.npz"
    minigrad.save({"w": np.arange(1000.0)}, path)
    content = {"cut short": path.read_bytes()[:300], "a flipped byte": flip_a_byte_in_the_data(path.read_bytes()),
               "a CSV file": b"optimizer,epoch\nadam,1\n", "a pickle": pickle.dumps({"w": 1}),
               "a garbled header": npz_with_a_garbled_header()}[damage]
    path.write_bytes(content)
    for read in (minigrad.load, load_arrays):
        with pytest.raises(ValueError, match="last.npz is damaged or not an .npz archive") as raised:
            read(path)
        assert "pickle" not in str(raised.value)  # numpy.load's advice on loading pickles would mislead


def member_data_positions(content: bytes) -> list[int]:
    """Where the stored (perhaps compressed) bytes of each member of a zip archive lie."""
    positions = []
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for member in archive.infolist():
            header = member.header_offset
            name_length, extra_length = struct.unpack("<HH", content[header + 26:header + 30])
            start = header + 30 + name_length + extra_length  # after the member's local header
            positions += range(start, start + member.compress_size)
    return positions


@pytest.mark.parametrize("writer", ["minigrad.save", "numpy.savez_compressed"])
def test_any_flipped_byte_in_the_stored_data_is_named_as_damage(tmp_path, writer):
    """A stored member fails its CRC. A compressed one may fail to decompress, or decompress to a garbled
    .npy header, before its CRC is checked: each way the file is named as damaged. (A flip in deflate's
    padding changes nothing read, and the file loads as written.)"""
    path, arrays = tmp_path / "w.npz", {"w": np.linspace(-1.0, 1.0, 20), "i": np.arange(7)}
    minigrad.save(arrays, path) if writer == "minigrad.save" else np.savez_compressed(path, **arrays)
    content = path.read_bytes()
    for position in member_data_positions(content):
        damaged = bytearray(content)
        damaged[position] ^= 0xFF
        path.write_bytes(damaged)
        for read in (minigrad.load, load_arrays) if writer == "minigrad.save" else (load_arrays,):
            try:
                loaded = read(path)
            except ValueError as error:
                assert "w.npz is damaged or not an .npz archive" in str(error), (position, error)
            else:
                assert_same(loaded, arrays)


def test_a_safetensors_file_cut_short_is_named_as_such(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file({"w": np.arange(100.0)}, str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="model.safetensors is damaged or not a .safetensors file"):
        load_arrays(path)


def test_path_without_suffix_is_written_exactly_there(tmp_path):
    minigrad.save({"a": np.ones(2)}, tmp_path / "checkpoint")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert_same(minigrad.load(tmp_path / "checkpoint"), {"a": np.ones(2)})
    minigrad.save([1], str(tmp_path / "as_string.ckpt"))
    assert minigrad.load(str(tmp_path / "as_string.ckpt")) == [1]


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    minigrad.save({"epoch": 1}, path)
    minigrad.save({"epoch": 2}, path)
    assert minigrad.load(path) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    minigrad.save({"epoch": 1, "w": np.arange(4.0)}, path)
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        minigrad.save({"epoch": 2, "w": np.zeros(4)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_the_temporary_file_is_written_beside_the_target(tmp_path, monkeypatch):
    """In the same folder, so on the same file system, where os.replace is one step."""
    seen = []
    savez = np.savez

    def watched(file, **arrays):
        seen.append(sorted(os.listdir(tmp_path)))
        savez(file, **arrays)

    monkeypatch.setattr(np, "savez", watched)
    minigrad.save({"w": np.ones(2)}, tmp_path / "ckpt.npz")
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].endswith(".tmp")
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_load_arrays_names_a_missing_file_or_a_folder(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    for path in (tmp_path / "missing.npz", tmp_path / "folder.npz"):
        with pytest.raises(FileNotFoundError, match=f"no weights file at {path}"):
            load_arrays(path)


def test_load_arrays_reads_an_upper_case_suffix(tmp_path):
    with open(tmp_path / "weights.NPZ", "wb") as file:  # a path would get ".npz" appended
        np.savez(file, w=np.arange(3.0))
    assert_same(load_arrays(tmp_path / "weights.NPZ"), {"w": np.arange(3.0)})


def test_device_state_loads_back_as_host_arrays(device, tmp_path):
    minigrad.manual_seed(3)
    model = nn.Linear(4, 3)
    expected = model.state_dict()
    model.to(device)
    tensor = minigrad.tensor(np.arange(3.0), device=device)
    loaded = round_trip({"model": model.state_dict(), "tensor": tensor, "raw": tensor.data}, tmp_path)
    assert_same(loaded, {"model": expected, "tensor": np.arange(3.0), "raw": np.arange(3.0)})


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)], ids=["umask 027", "umask 002"])
def test_a_saved_file_has_an_ordinary_files_mode(tmp_path, umask, mode):
    """The temporary file is private (mkstemp's 0600); the checkpoint it becomes gets 0666 less the
    umask, which save reads and leaves as it was."""
    previous = os.umask(umask)
    try:
        minigrad.save({"w": np.ones(2)}, tmp_path / "ckpt.npz")
    finally:
        umask_after_save = os.umask(previous)
    assert umask_after_save == umask
    assert (tmp_path / "ckpt.npz").stat().st_mode & 0o777 == mode


def test_load_arrays_takes_off_a_state_dict_level_and_keeps_only_arrays(tmp_path):
    state = {"w": np.arange(3.0), "b": np.ones(2, dtype=np.float32)}
    minigrad.save({"state_dict": state, "model": "swin_tiny", "epoch": 3}, tmp_path / "nested.npz")
    assert_same(load_arrays(tmp_path / "nested.npz"), state)
    minigrad.save({**state, "epoch": 3, "name": "swin_tiny", "schedule": {"lr": 0.1}}, tmp_path / "flat.npz")
    assert_same(load_arrays(tmp_path / "flat.npz"), state)


def test_a_single_array_file_is_named_as_such(tmp_path):
    with open(tmp_path / "weights.npz", "wb") as file:
        np.save(file, np.ones(3))
    for read in (minigrad.load, load_arrays):
        with pytest.raises(ValueError, match="weights.npz is a single array, not an .npz archive"):
            read(tmp_path / "weights.npz")
