"""Reading torch.save's zip checkpoints without torch: files written here opcode for opcode as
torch writes them (checked against real torch.save files where torch is installed), tensors of
every layout, damaged files, and pickles that try to run code."""
import collections
import importlib.util
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minigrad import torch_checkpoint
from minigrad.serialization import load_arrays

HAS_TORCH = importlib.util.find_spec("torch") is not None


class TorchName:
    """A name in torch (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``), pickled as torch pickles it."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("only pickled, never called")


class TorchStorage:
    def __init__(self, key, values, storage_class="FloatStorage", module="torch"):
        self.key, self.values, self.storage_class = key, np.ascontiguousarray(values), storage_class
        self.module = module  # "torch.storage" for the UntypedStorage of _rebuild_tensor_v3


class TorchTensor:
    """What torch pickles for a tensor: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2", dtype=None):
        self.arguments = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        if dtype is not None:  # _rebuild_tensor_v3: the dtype after the hooks, as torch.<dtype>
            self.arguments += (TorchName("torch", dtype),)
        self.rebuild = rebuild

    def __reduce__(self):
        return TorchName("torch._utils", self.rebuild), self.arguments


class TorchParameter:
    def __init__(self, tensor, state=None):
        self.tensor, self.state = tensor, state

    def __reduce__(self):
        if self.state is not None:  # a Parameter carrying Python attributes
            return (TorchName("torch._utils", "_rebuild_parameter_with_state"),
                    (self.tensor, True, collections.OrderedDict(), self.state))
        return TorchName("torch._utils", "_rebuild_parameter"), (self.tensor, True, collections.OrderedDict())


class TorchStylePickler(pickle._Pickler):
    """Protocol 2, storages as persistent ids, torch's names as GLOBAL opcodes: torch.save's data.pkl."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)

    def persistent_id(self, obj):
        if isinstance(obj, TorchStorage):
            count = obj.values.nbytes if obj.storage_class == "UntypedStorage" else obj.values.size
            return "storage", TorchName(obj.module, obj.storage_class), obj.key, "cpu", count
        return None

    def save_torch_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[TorchName] = save_torch_name


def write_checkpoint(path: Path, obj, storages, byteorder="little", archive="archive"):
    """A zip laid out as torch.save lays it out."""
    data = io.BytesIO()
    TorchStylePickler(data).dump(obj)
    with zipfile.ZipFile(path, "w") as file:
        file.writestr(f"{archive}/data.pkl", data.getvalue())
        if byteorder is not None:  # None: no record, as in files of older PyTorch (little-endian)
            file.writestr(f"{archive}/byteorder", byteorder)
        for storage in storages:
            values = storage.values
            file.writestr(f"{archive}/data/{storage.key}",
                          values.astype(values.dtype.newbyteorder("<" if byteorder != "big" else ">")).tobytes())
        file.writestr(f"{archive}/version", "3\n")


def test_tensors_of_every_layout_come_back_as_arrays(tmp_path):
    grid = TorchStorage("0", np.arange(24, dtype=np.float32))
    counts = TorchStorage("1", np.array([3, -1, 7], dtype=np.int64), "LongStorage")
    halves = TorchStorage("2", np.array([0.5, -2.0], dtype=np.float16), "HalfStorage")
    flags = TorchStorage("3", np.array([True, False]), "BoolStorage")
    doubles = TorchStorage("4", np.array([np.pi]), "DoubleStorage")
    nothing = TorchStorage("5", np.zeros(0, dtype=np.float32))
    config = collections.Counter(a=1)  # any other object: read as an inert stand-in
    state = {"model": collections.OrderedDict([
        ("grid", TorchTensor(grid, 0, (4, 6), (6, 1))),
        ("transposed", TorchTensor(grid, 0, (6, 4), (1, 6))),
        ("strided", TorchTensor(grid, 7, (2, 3), (6, 2))),  # rows 1..2, every other column from 1: same storage
        ("weight", TorchParameter(TorchTensor(grid, 2, (3,), (1,)))),
        ("tagged_weight", TorchParameter(TorchTensor(grid, 5, (2,), (1,)), state={"tag": 1})),
        ("counts", TorchTensor(counts, 0, (3,), (1,))),
        ("halves", TorchTensor(halves, 0, (2,), (1,))),
        ("flags", TorchTensor(flags, 0, (2,), (1,))),
        ("scalar", TorchTensor(doubles, 0, (), ())),
        ("empty", TorchTensor(grid, 0, (0, 3), (3, 1))),
        ("no_columns", TorchTensor(nothing, 0, (3, 0), (1, 1))),  # torch.zeros(3, 0): strides (1, 1), no storage
    ]), "config": config, "epoch": 300}
    write_checkpoint(tmp_path / "weights.pth", state, [grid, counts, halves, flags, doubles, nothing])
    loaded = torch_checkpoint.load(tmp_path / "weights.pth")
    model = loaded["model"]
    grid_values = np.arange(24, dtype=np.float32).reshape(4, 6)
    expected = {"grid": grid_values, "transposed": grid_values.T, "strided": grid_values[1:3, 1::2],
                "weight": np.float32([2, 3, 4]), "tagged_weight": np.float32([5, 6]), "counts": np.int64([3, -1, 7]), "halves": np.float16([0.5, -2.0]),
                "flags": np.array([True, False]), "scalar": np.array(np.pi), "empty": np.zeros((0, 3), np.float32),
                "no_columns": np.zeros((3, 0), np.float32)}
    assert list(model) == list(expected)
    for key, value in expected.items():
        assert model[key].dtype == value.dtype and model[key].shape == value.shape, key
        np.testing.assert_array_equal(model[key], value, err_msg=key)
        assert model[key].flags.writeable and model[key].flags.c_contiguous, key
    assert isinstance(loaded["config"], torch_checkpoint.Unknown) and loaded["config"].origin == "collections.Counter"
    assert loaded["epoch"] == 300
    assert sorted(load_arrays(tmp_path / "weights.pth")) == sorted(expected)


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_bfloat16_is_widened_to_float32_exactly(tmp_path, byteorder):
    values = np.float32([1.5, -2.25, 1.5 * 2.0**127, -0.0, 2.0**-130])  # all exact in bfloat16
    storage = TorchStorage("0", (values.view(np.uint32) >> 16).astype(np.uint16), "BFloat16Storage")
    write_checkpoint(tmp_path / "b.pth", {"w": TorchTensor(storage, 0, (5,), (1,))}, [storage], byteorder=byteorder)
    loaded = torch_checkpoint.load(tmp_path / "b.pth")["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.view(np.uint32), values.view(np.uint32))


# Each storage class torch pickles, with values at the ends of its dtype's range.
STORAGE_VALUES = {"DoubleStorage": np.array([np.pi, -1e300]), "FloatStorage": np.float32([1.0, -2.5, 1e30]),
                  "HalfStorage": np.float16([0.5, -65504.0]), "LongStorage": np.int64([3, -2**62]),
                  "IntStorage": np.int32([-7, 2**31 - 1]), "ShortStorage": np.int16([-300, 32767]),
                  "CharStorage": np.int8([-128, 127]), "ByteStorage": np.uint8([0, 255]),
                  "BoolStorage": np.array([True, False])}


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("storage_class", STORAGE_VALUES)
def test_every_storage_class_reads_as_its_dtype_in_the_byte_order_the_file_names(tmp_path, storage_class, byteorder):
    values = STORAGE_VALUES[storage_class]
    storage = TorchStorage("0", values, storage_class)
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(storage, 0, values.shape, (1,))}, [storage], byteorder=byteorder)
    loaded = torch_checkpoint.load(tmp_path / "w.pth")["w"]
    assert loaded.dtype == values.dtype  # native order, whatever the file's
    np.testing.assert_array_equal(loaded, values)


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    storage = TorchStorage("0", np.zeros(6, dtype=np.float32))
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(storage, 1, (2, 3), (3, 1))}, [storage])
    with pytest.raises(ValueError, match="reaches element 6 of a storage of 6: the file is damaged"):
        torch_checkpoint.load(tmp_path / "w.pth")


@pytest.mark.parametrize("declared, stored", [(6, 4), (4, 6)], ids=["shorter", "longer"])
def test_a_storage_of_another_length_than_the_pickle_says_is_refused(tmp_path, declared, stored):
    storage = TorchStorage("0", np.zeros(declared, dtype=np.float32))
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(storage, 0, (declared,), (1,))},
                     [TorchStorage("0", np.zeros(stored, np.float32))])
    with pytest.raises(ValueError, match=f"storage 0 holds {stored} elements where the pickle says {declared}"):
        torch_checkpoint.load(tmp_path / "w.pth")


def test_a_file_cut_short_says_to_download_it_again(tmp_path):
    storage = TorchStorage("0", np.zeros(1000, dtype=np.float32))
    write_checkpoint(tmp_path / "whole.pth", {"w": TorchTensor(storage, 0, (1000,), (1,))}, [storage])
    whole = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="damaged or was not downloaded completely; download it again"):
        load_arrays(tmp_path / "cut.pth")


@pytest.mark.parametrize("offset, size, stride", [(-1, (2,), (1,)), (4, (2,), (-1,)), (0, (2, 3), (3,))],
                         ids=["negative offset", "negative stride", "stride of another rank"])
def test_a_malformed_tensor_is_refused(tmp_path, offset, size, stride):
    """Checked before any memory is touched: a negative offset or stride would read outside the storage."""
    storage = TorchStorage("0", np.arange(6, dtype=np.float32))
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(storage, offset, size, stride)}, [storage])
    with pytest.raises(ValueError, match="is malformed"):
        torch_checkpoint.load(tmp_path / "w.pth")


def test_a_file_without_a_byteorder_record_is_little_endian(tmp_path):
    """Files of PyTorch before 1.10 have no <name>/byteorder and are little-endian."""
    storage = TorchStorage("0", np.array([1.0, -2.5, 1e30], dtype=np.float32))
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(storage, 0, (3,), (1,))}, [storage], byteorder=None)
    with zipfile.ZipFile(tmp_path / "w.pth") as archive:
        assert "archive/byteorder" not in archive.namelist()
    np.testing.assert_array_equal(torch_checkpoint.load(tmp_path / "w.pth")["w"], np.float32([1.0, -2.5, 1e30]))


class TorchTensorWithState:
    """What torch pickles for a tensor carrying Python attributes: _rebuild_from_type_v2(rebuild, torch.Tensor, args, state)."""

    def __init__(self, tensor, state):
        self.tensor, self.state = tensor, state

    def __reduce__(self):
        return (TorchName("torch._tensor", "_rebuild_from_type_v2"),
                (TorchName("torch._utils", self.tensor.rebuild), TorchName("torch", "Tensor"), self.tensor.arguments,
                 self.state))


def test_tensors_of_dtypes_without_a_typed_storage_and_tensors_with_attributes(tmp_path):
    """_rebuild_tensor_v3 over a torch.storage.UntypedStorage of raw bytes, the dtype given apart (uint16 here);
    _rebuild_from_type_v2 around a tensor that carries Python attributes (its state is dropped)."""
    raw = TorchStorage("0", np.frombuffer(np.uint16([1, 2, 300]).tobytes(), np.uint8), "UntypedStorage", "torch.storage")
    floats = TorchStorage("1", np.float32([0.5, 1.5, 2.5]))
    state = {"u": TorchTensor(raw, 1, (2,), (1,), rebuild="_rebuild_tensor_v3", dtype="uint16"),
             "tagged": TorchTensorWithState(TorchTensor(floats, 0, (3,), (1,)), {"tag": 5})}
    write_checkpoint(tmp_path / "w.pth", state, [raw, floats])
    loaded = torch_checkpoint.load(tmp_path / "w.pth")
    assert loaded["u"].dtype == np.uint16 and loaded["tagged"].dtype == np.float32
    np.testing.assert_array_equal(loaded["u"], [2, 300])
    np.testing.assert_array_equal(loaded["tagged"], [0.5, 1.5, 2.5])


# _rebuild_tensor_v3 names the dtype as torch.<name>: NumPy's names for the same types.
V3_VALUES = {values.dtype.name: values for values in STORAGE_VALUES.values()} | {
    "uint16": np.uint16([1, 65535]), "uint32": np.uint32([1, 2**32 - 1]), "uint64": np.uint64([1, 2**64 - 1])}


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("dtype", V3_VALUES)
def test_rebuild_tensor_v3_reads_every_dtype_in_the_byte_order_the_file_names(tmp_path, dtype, byteorder):
    values = np.concatenate([np.zeros(1, V3_VALUES[dtype].dtype), V3_VALUES[dtype]])  # read from offset 1
    raw = values.astype(values.dtype.newbyteorder("<" if byteorder == "little" else ">")).tobytes()
    storage = TorchStorage("0", np.frombuffer(raw, np.uint8), "UntypedStorage", "torch.storage")
    tensor = TorchTensor(storage, 1, (len(values) - 1,), (1,), rebuild="_rebuild_tensor_v3", dtype=dtype)
    write_checkpoint(tmp_path / "w.pth", {"w": tensor}, [storage], byteorder=byteorder)
    loaded = torch_checkpoint.load(tmp_path / "w.pth")["w"]
    assert loaded.dtype == V3_VALUES[dtype].dtype
    np.testing.assert_array_equal(loaded, V3_VALUES[dtype])


def test_a_dtype_this_reader_does_not_know_is_named(tmp_path):
    raw = TorchStorage("0", np.zeros(16, np.uint8), "UntypedStorage", "torch.storage")
    write_checkpoint(tmp_path / "w.pth", {"w": TorchTensor(raw, 0, (2,), (1,), "_rebuild_tensor_v3", "complex64")}, [raw])
    with pytest.raises(ValueError, match=r"a dtype this reader does not know \(torch.complex64\)"):
        torch_checkpoint.load(tmp_path / "w.pth")


class TrainingConfig:
    """An ordinary object: protocol 2 pickles it as NEWOBJ (the class's __new__ alone), then BUILD with its __dict__."""

    def __init__(self, lr):
        self.lr = lr


class Milestones(list):
    """A list subclass: NEWOBJ, then its items by APPEND (one) or APPENDS (several)."""


class ImageSize(tuple):
    """A tuple subclass: NEWOBJ with an argument, the tuple itself."""


def test_objects_of_other_classes_keep_their_arguments_state_and_items(tmp_path):
    saved = {"config": TrainingConfig(0.1), "one": Milestones([30]), "three": Milestones([30, 60, 90]),
             "size": ImageSize((224, 224)), "counter": collections.Counter(a=1)}  # Counter: REDUCE with an argument
    write_checkpoint(tmp_path / "w.pth", saved, [])
    loaded = torch_checkpoint.load(tmp_path / "w.pth")
    assert {key: value.origin for key, value in loaded.items()} == {
        "config": "test_torch_checkpoint.TrainingConfig", "one": "test_torch_checkpoint.Milestones",
        "three": "test_torch_checkpoint.Milestones", "size": "test_torch_checkpoint.ImageSize",
        "counter": "collections.Counter"}
    assert loaded["config"].args == () and loaded["config"].state == {"lr": 0.1}
    assert loaded["one"]["items"] == [30] and loaded["three"]["items"] == [30, 60, 90]
    assert loaded["size"].args == ((224, 224),) and loaded["size"].state is None
    assert loaded["counter"].args == ({"a": 1},) and loaded["counter"].state is None


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    write_checkpoint(tmp_path / "evil.pth", {"model": {}, "payload": RunsACommand(marker)}, [])
    loaded = torch_checkpoint.load(tmp_path / "evil.pth")
    assert not marker.exists()
    assert loaded["payload"].origin in ("posix.system", "nt.system") and loaded["payload"].args == (f"touch {marker}",)


def test_a_pickled_model_object_is_named_not_loaded(tmp_path):
    write_checkpoint(tmp_path / "m.pth", {"model": collections.Counter(a=1)}, [])
    with pytest.raises(ValueError, match="holds a pickled collections.Counter, not its weights; save its state_dict"):
        load_arrays(tmp_path / "m.pth")


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".PTH"])
def test_load_arrays_reads_torch_save_files_under_each_of_their_suffixes(tmp_path, suffix):
    storage = TorchStorage("0", np.float32([1.5, -2.0]))
    write_checkpoint(tmp_path / f"weights{suffix}", {"w": TorchTensor(storage, 0, (2,), (1,))}, [storage])
    np.testing.assert_array_equal(load_arrays(tmp_path / f"weights{suffix}")["w"], np.float32([1.5, -2.0]))


def test_a_file_that_holds_no_dict_says_what_it_holds(tmp_path):
    storage = TorchStorage("0", np.zeros(2, dtype=np.float32))
    tensor = TorchTensor(storage, 0, (2,), (1,))
    for saved, kind in [(tensor, "ndarray"), ([tensor], "list")]:  # torch.save(tensor), torch.save([tensor])
        write_checkpoint(tmp_path / "w.pth", saved, [storage])
        with pytest.raises(ValueError, match=f"w.pth holds a {kind}, not a dict of weights"):
            load_arrays(tmp_path / "w.pth")


def test_a_zip_that_is_not_a_checkpoint_says_so(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as file:
        file.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a torch.save checkpoint"):
        load_arrays(tmp_path / "other.pth")


# ---- against real torch.save files


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="writing real .pth files needs torch")
def test_real_torch_save_files_read_the_same_as_torch_reads_them(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"grid": base, "transposed": base.t(), "strided": base[1:3, 1::2], "weight": torch.nn.Parameter(base[0]),
               "bfloat16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16), "half": torch.tensor([0.1], dtype=torch.half),
               "long": torch.arange(3), "bool": torch.tensor([True, False]), "scalar": torch.tensor(3.5),
               "uint16": torch.tensor([1, 2, 300], dtype=torch.int32).to(torch.uint16)[1:],  # _rebuild_tensor_v3
               "int8": torch.tensor([-128, 127], dtype=torch.int8), "int16": torch.tensor([-300], dtype=torch.int16),
               "int32": torch.tensor([-7], dtype=torch.int32), "uint8": torch.tensor([0, 255], dtype=torch.uint8),
               "double": torch.tensor([1e300], dtype=torch.float64), "no_columns": torch.zeros(3, 0)}
    torch.save({"model": tensors, "config": collections.Counter(a=1), "epoch": 3}, tmp_path / "real.pth")
    loaded = torch_checkpoint.load(tmp_path / "real.pth")
    for key, tensor in tensors.items():
        expected = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
        assert loaded["model"][key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded["model"][key], expected, err_msg=key)
    assert loaded["epoch"] == 3


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="writing real .pth files needs torch")
def test_the_hand_written_files_match_torch_save_byte_for_byte(tmp_path):
    import torch

    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, tmp_path / "real.pth")
    storage = TorchStorage("0", np.arange(6, dtype=np.float32))
    write_checkpoint(tmp_path / "ours.pth", {"w": TorchTensor(storage, 0, (3, 2), (1, 3))}, [storage])
    with zipfile.ZipFile(tmp_path / "real.pth") as real, zipfile.ZipFile(tmp_path / "ours.pth") as ours:
        real_prefix = real.namelist()[0].split("/")[0]
        for name in ("data.pkl", "data/0", "byteorder"):
            assert ours.read(f"archive/{name}") == real.read(f"{real_prefix}/{name}"), name


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="writing the format before PyTorch 1.6 needs torch")
@pytest.mark.parametrize("nesting", ["flat", "under model"])
def test_the_format_before_pytorch_1_6_reads_parameters_and_bfloat16_through_torch(tmp_path, nesting):
    import torch

    weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6).reshape(2, 3))  # requires grad
    half = torch.tensor([1.5, -2.0, 3.0e38], dtype=torch.bfloat16)
    state = {"w": weight, "h": half}
    saved = state if nesting == "flat" else {"model": state, "epoch": 300}  # as official checkpoints nest it
    torch.save(saved, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    loaded = load_arrays(tmp_path / "old.pth")
    assert sorted(loaded) == ["h", "w"] and all(type(value) is np.ndarray for value in loaded.values())
    np.testing.assert_array_equal(loaded["w"], weight.detach().numpy())
    assert loaded["h"].dtype == np.float32
    np.testing.assert_array_equal(loaded["h"], half.float().numpy())


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="writing the format before PyTorch 1.6 needs torch")
def test_a_pickle_in_the_format_before_pytorch_1_6_that_would_run_code_is_refused(tmp_path):
    """torch reads that format, with weights_only=True: it refuses what is not a tensor or a container."""
    import torch

    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "payload": RunsACommand(marker)}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError):
        load_arrays(tmp_path / "evil.pth")
    assert not marker.exists()
