"""The stand-in GPU (minigrad/testing/fake_gpu.py) behaves as CuPy does, not as we believe CuPy does.

Where a CuPy behaviour shows without a GPU (a missing name, a keyword its signature lacks, a ufunc
method it does not implement: all refused before any kernel would run), the same call is made on
the installed ``cupy`` too, so these tests check the stand-in against CuPy itself. The tests are
marked ``gpu``, so both of CI's passes run them.
"""
import copy
import inspect
import json
import pickle
import re

import numpy as np
import pytest

import minigrad
from minigrad import backend, kernels
from minigrad.testing import fake_gpu
from minigrad.testing.fake_gpu import FakeGpuArray

pytestmark = pytest.mark.gpu

UNSUPPORTED = re.escape("Unsupported type <class 'numpy.ndarray'>")


def installed_cupy():
    return pytest.importorskip("cupy", reason="cupy is not installed: the stand-in's snapshot of it is checked alone")


@pytest.fixture(autouse=True)
def fake_gpu_on(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")


@pytest.fixture(params=["stand-in", "cupy"])
def xp(request):
    """The stand-in's cupy module, and the installed cupy (for calls that fail before a kernel would run)."""
    return fake_gpu.cupy if request.param == "stand-in" else installed_cupy()


def on_device(values) -> FakeGpuArray:
    array = backend.to_device(np.asarray(values), "gpu")
    assert type(array) is FakeGpuArray
    return array


def transfers(kind: str | None = None) -> int:
    return fake_gpu.transfer_count.count if kind is None else fake_gpu.transfer_count.kinds[kind]


# ---- where the truth comes from


def test_the_snapshot_is_what_the_installed_cupy_says():
    cupy = installed_cupy()
    import cupyx.scipy.special

    snapshot = json.loads(fake_gpu.SNAPSHOT.read_text())
    if snapshot["version"] != cupy.__version__:
        pytest.skip(f"the snapshot is of CuPy {snapshot['version']}, {cupy.__version__} is installed: "
                    "python -m minigrad.testing.fake_gpu writes it anew")
    installed = fake_gpu.describe_cupy(cupy, cupyx.scipy.special)
    differing = {section: sorted(name for name in installed[section].keys() | snapshot[section].keys()
                                 if installed[section].get(name) != snapshot[section].get(name))
                 for section in installed if section != "version"}
    assert not any(differing.values()), f"differing from the snapshot: {differing}"


def test_without_cupy_the_stand_in_plays_the_snapshot(monkeypatch):
    monkeypatch.setattr(fake_gpu, "_installed_cupy", lambda: None)
    fake_gpu.cupy_api.cache_clear()
    try:
        api = fake_gpu.cupy_api()
        assert api["source"] == "snapshot" and "snapshot" in fake_gpu.truth_source()
        assert "errstate" not in api["module"] and "stack" in api["module"]
        assert "arrays" not in fake_gpu._signature(api["module"]["stack"]["signature"]).parameters
    finally:
        fake_gpu.cupy_api.cache_clear()


@pytest.mark.parametrize("text, expected", [
    ("_ndarray_base.max(self, axis=None, out=None, keepdims=False) -> _ndarray_base", "(axis=..., out=..., keepdims=...)"),
    ("_ndarray_base.sort(self, int axis=-1, kind=None)", "(axis=..., kind=...)"),
    ("_ndarray_base.dot(self, _ndarray_base b, _ndarray_base out=None)", "(b, out=...)"),
    ("_ndarray_base.reshape(self, *shape, order='C', copy=None)", "(*shape, order=..., copy=...)"),
    ("_ndarray_base.item(self)", "()"),
    ("Returns the sum.", None),
])
def test_signatures_are_read_from_cythons_docstrings(text, expected):
    assert fake_gpu._signature_text(_Compiled(text)) == expected


class _Compiled:
    """A callable whose signature inspect cannot read, as Cython's methods."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __call__(self):
        pass

    @property
    def __signature__(self):
        raise ValueError("no signature found for builtin")


# ---- not a NumPy array: no implicit conversion to the host


@pytest.mark.parametrize("convert", [np.asarray, np.array, memoryview, lambda a: np.float64(1.0) + np.asarray(a),
                                     lambda a: minigrad.Tensor([a[0], a[1]])])
def test_an_implicit_conversion_to_the_host_raises_as_on_cupy(convert):
    array = on_device([1.0, 2.0])
    before = transfers()
    with pytest.raises(TypeError):
        convert(array)
    assert transfers() == before


def test_the_stand_in_array_is_no_ndarray_as_cupys_is_not():
    assert not isinstance(on_device([1.0]), np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(on_device([1.0]))  # CuPy's words (cupy/_core/core.pyx, __array__)
    cupy = installed_cupy()
    assert not issubclass(cupy.ndarray, np.ndarray)


@pytest.mark.parametrize("mix", [lambda g, h: g + h, lambda g, h: h + g, lambda g, h: g * h, lambda g, h: h @ g,
                                 lambda g, h: np.add(g, h), lambda g, h: np.maximum(h, g),
                                 lambda g, h: np.concatenate([g, h]), lambda g, h: np.where(g > 0, g, h)])
def test_a_host_array_in_a_device_operation_raises(mix):
    with pytest.raises(TypeError, match=UNSUPPORTED):
        mix(on_device(np.ones((2, 2))), np.ones((2, 2)))


def test_a_0d_host_array_is_refused_but_numpy_scalars_are_taken():
    array = on_device(np.ones(2))
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array + np.array(2.0)
    np.testing.assert_array_equal(backend.asnumpy(array * np.float64(2.0) + np.float32(1.0)), [3.0, 3.0])


@pytest.mark.parametrize("write", [lambda g, h: np.add(g, g, out=h), lambda g, h: np.exp(g, out=h),
                                   lambda g, h: backend.get_array_module(g).exp(g, out=h)])
def test_a_host_array_as_out_is_refused_and_left_alone(write):
    host = np.zeros(2)
    with pytest.raises(TypeError):
        write(on_device(np.ones(2)), host)
    np.testing.assert_array_equal(host, [0.0, 0.0])


def test_a_tensor_operand_gets_its_turn_as_cupy_gives_it():
    """CuPy leaves ``array (op) other`` to ``other`` when its __array_priority__ is higher: a
    Tensor, which computes the op itself, on the device."""
    product = on_device([2.0, 3.0]) * minigrad.tensor(on_device([4.0, 5.0]))
    assert isinstance(product, minigrad.Tensor) and product.device == "gpu"
    np.testing.assert_array_equal(product.numpy(), [8.0, 15.0])


# ---- what CuPy has: names, keywords, ufunc methods


@pytest.mark.parametrize("name", ["errstate", "seterr", "nditer", "nanpercentile", "float128", "ma"])
def test_a_name_cupy_lacks_raises_attribute_error(xp, name):
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(xp, name)


@pytest.mark.parametrize("call, error, message", [
    (lambda xp: xp.stack(arrays=[1.0]), TypeError, "unexpected keyword argument 'arrays'"),
    (lambda xp: xp.concatenate(arrays=[1.0]), TypeError, "unexpected keyword argument 'arrays'"),
    (lambda xp: xp.add(1.0, 2.0, where=True), TypeError, re.escape("Wrong arguments {'where': True}")),
    (lambda xp: xp.exp(1.0, order="C"), TypeError, "Wrong arguments"),
    (lambda xp: xp.exp(1.0, 2.0, 3.0), TypeError, "Wrong number of arguments for 'cupy_exp'"),
    (lambda xp: xp.where(True, 1.0, 2.0), AttributeError, "'bool' object has no attribute 'astype'"),
    (lambda xp: xp.exp.at(None, None), NotImplementedError, "`cupy_exp.at` is not supported yet"),
    (lambda xp: xp.multiply.at(None, None, 2.0), NotImplementedError, "`cupy_multiply.at` is not supported yet"),
    (lambda xp: xp.subtract.at(None, None), AttributeError, "'NoneType' object has no attribute '_scatter_op'"),
    (lambda xp: xp.maximum.reduce(None), NotImplementedError, "`cupy_maximum.reduce` is not supported yet"),
    (lambda xp: xp.maximum.accumulate(None), NotImplementedError, "`cupy_maximum.accumulate` is not supported"),
    (lambda xp: xp.multiply.reduceat(None, None), NotImplementedError, "`cupy_multiply.reduceat` is not supported"),
])
def test_calls_cupy_refuses_before_any_kernel_runs(xp, call, error, message):
    with pytest.raises(error, match=message):
        call(xp)


@pytest.mark.parametrize("method, refused", [("max", {"initial": 0.0}), ("sum", {"where": True}),
                                             ("min", {"initial": 0.0}), ("astype", {"device": "cpu"})])
def test_array_methods_take_cupys_keywords_only(method, refused):
    array = on_device([1.0, 2.0])
    with pytest.raises(TypeError, match=f"cupy.ndarray.{method}.*{next(iter(refused))}"):
        getattr(array, method)(**({"dtype": np.float32} if method == "astype" else {}), **refused)
    keywords = fake_gpu.cupy_api()["ndarray"][method]["signature"]
    assert next(iter(refused)) not in keywords
    cupy = installed_cupy()
    assert next(iter(refused)) not in getattr(cupy.ndarray, method).__doc__.split("\n")[0]


def test_item_takes_no_position_as_on_cupy():
    array = on_device([1.0, 2.0])
    with pytest.raises(TypeError):
        array.item(0)
    with pytest.raises(ValueError, match="size 1"):
        array.item()
    assert on_device([2.5]).item() == 2.5
    assert fake_gpu.cupy_api()["ndarray"]["item"]["signature"] == "()"


def test_an_array_attribute_cupy_lacks_raises():
    array = on_device([1.0, 2.0])
    for name in ("ctypes", "tofile_like", "__array_interface__", "__dlpack__", "setflags"):
        assert not hasattr(array, name), name
    with pytest.raises(TypeError):
        [10, 20, 30][on_device(np.array(1))]  # cupy.ndarray has no __index__
    assert "__index__" not in dir(installed_cupy().ndarray)


@pytest.mark.parametrize("name, dtype, scatter", [
    ("add", np.int8, "add"), ("add", np.int16, "add"), ("add", np.bool_, "add"),
    ("subtract", np.float32, "sub"), ("subtract", np.int64, "sub"), ("maximum", np.float16, "max"),
])
def test_ufunc_at_refuses_dtypes_cupy_has_no_kernel_for(name, dtype, scatter):
    xp = fake_gpu.cupy
    target = on_device(np.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match=f"cupy.{name}.at only supports"):
        getattr(xp, name).at(target, on_device([0, 0]), 1)
    np.testing.assert_array_equal(backend.asnumpy(target), np.zeros(3))
    assert fake_gpu.cupy_api()["module"][name]["scatter"] == scatter


@pytest.mark.parametrize("name, dtype", [("add", np.float32), ("add", np.int64), ("add", np.float16),
                                         ("subtract", np.int32), ("maximum", np.float64)])
def test_ufunc_at_accumulates_where_cupy_has_a_kernel(name, dtype):
    target = on_device(np.full(3, 5, dtype=dtype))
    getattr(fake_gpu.cupy, name).at(target, on_device([0, 0, 2]), on_device(np.array([1, 2, 9], dtype=dtype)))
    expected = np.full(3, 5, dtype=dtype)
    getattr(np, name).at(expected, [0, 0, 2], np.array([1, 2, 9], dtype=dtype))
    np.testing.assert_array_equal(backend.asnumpy(target), expected)


def test_the_scatter_dtypes_are_cupys_where_its_package_shows_them():
    cupy = installed_cupy()
    ops = {name: getattr(cupy, name)._scatter_op for name in fake_gpu.cupy_api()["module"]
           if fake_gpu.cupy_api()["module"][name]["kind"] == "ufunc"}
    assert {op for op in ops.values() if op is not None} == set(fake_gpu.SCATTER_DTYPES)
    assert ops["exp"] is None and ops["add"] == "add" and ops["subtract"] == "sub"


@pytest.mark.parametrize("operate", [lambda xp, a: xp.exp([1.0, 2.0]), lambda xp, a: a + [1.0, 2.0],
                                     lambda xp, a: xp.add(a, (1.0, 2.0)), lambda xp, a: xp.maximum(a, [0.0, 0.0])])
def test_list_operands_are_refused_as_cupys_kernels_refuse_them(operate):
    with pytest.raises(TypeError, match="Unsupported type <class '(list|tuple)'>"):
        operate(fake_gpu.cupy, on_device([1.0, 2.0]))


def test_a_dtype_no_cupy_loop_takes_is_refused():
    strings = FakeGpuArray(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="Wrong type .* of arguments for cupy_exp"):
        fake_gpu.cupy.exp(strings)
    assert "U->U" not in fake_gpu.cupy_api()["module"]["exp"]["types"]
    assert fake_gpu.cupy.exp(on_device(np.arange(3, dtype=np.int32))).dtype == np.float64  # int to float, as CuPy


# ---- transfers and synchronisations, as CuPy incurs them


def test_each_read_to_the_host_counts_once():
    array = on_device(np.array(2.5))
    for read in (lambda a: a.item(), float, bool, lambda a: a.get(), backend.asnumpy, lambda a: a.tolist(),
                 lambda a: minigrad.tensor(a).item(), repr, str, lambda a: f"{a:.3f}", pickle.dumps):
        before = transfers("download")
        read(array)
        assert transfers("download") == before + 1, read


@pytest.mark.parametrize("show", [repr, str, lambda a: f"{a}"])
def test_printing_reads_one_host_copy_and_shows_what_cupy_shows(show):
    values = np.arange(6.0).reshape(2, 3)
    array = on_device(values)
    before = transfers()
    assert show(array) == show(values)  # CuPy prints its host copy: array([...])
    assert transfers() == before + 1


@pytest.mark.parametrize("index", [[0, 3], (0, 3), np.array([0, 3])])
def test_a_host_index_is_uploaded_on_every_call(index):
    array = on_device(np.arange(5.0))
    before = transfers("upload")
    np.testing.assert_array_equal(backend.asnumpy(array[index if not isinstance(index, tuple) else list(index)]),
                                  [0.0, 3.0])
    array[index if not isinstance(index, tuple) else list(index)] = -1.0
    assert transfers("upload") == before + 2
    np.testing.assert_array_equal(backend.asnumpy(array), [-1.0, 1.0, 2.0, -1.0, 4.0])


def test_a_device_index_moves_nothing():
    array = on_device(np.arange(5.0))
    index = on_device([0, 3])
    before = transfers()
    array[index] = array[index] * 2.0
    array[1:3] = 7.0
    assert transfers() == before


@pytest.mark.parametrize("select", [lambda xp, a: a[a > 1.0], lambda xp, a: xp.nonzero(a), lambda xp, a: a.nonzero(),
                                    lambda xp, a: xp.where(a > 1.0), lambda xp, a: xp.argwhere(a),
                                    lambda xp, a: a.__setitem__(a > 1.0, 0.0)])
def test_a_result_sized_by_the_data_synchronises(select):
    array = on_device([0.0, 2.0, 3.0])
    before = transfers("sync")
    select(fake_gpu.cupy, array)
    assert transfers("sync") == before + 1


def test_a_host_value_assigned_through_an_index_array_is_uploaded_and_by_a_slice_refused():
    array, index = on_device(np.zeros(4)), on_device([0, 2])
    before = transfers("upload")
    array[index] = np.array([1.0, 2.0])
    assert transfers("upload") == before + 1
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array[0:2] = np.ones(2)
    np.testing.assert_array_equal(backend.asnumpy(array), [1.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize("name", ["asarray", "array", "ascontiguousarray"])
def test_host_data_given_to_the_device_counts_one_upload(name):
    upload = getattr(fake_gpu.cupy, name)
    before = transfers()
    host = np.arange(3.0)
    array = upload(host)
    assert type(array) is FakeGpuArray and transfers() == before + 1
    array += 1.0  # in the device's memory, not the host's
    np.testing.assert_array_equal(host, [0.0, 1.0, 2.0])
    upload(array)  # device to device
    assert type(upload([1.0, 2.0])) is FakeGpuArray and transfers() == before + 2


def test_arithmetic_on_the_device_moves_nothing():
    array = backend.to_device(np.arange(4.0), "gpu")
    before = transfers()
    result = (fake_gpu.cupy.exp(array) * 2.0 + 1.0).sum(axis=0)
    result += 1.0
    assert type(result) is FakeGpuArray and transfers() == before


def test_each_transfer_counts_its_bytes():
    before = dict(fake_gpu.transfer_count.bytes)
    array = fake_gpu.cupy.asarray(np.zeros((2, 5), np.uint8))
    array.set(np.ones((2, 5), np.uint8))
    array.get()
    moved = fake_gpu.transfer_count.bytes
    assert (moved["upload"] - before.get("upload", 0), moved["download"] - before.get("download", 0)) == (20, 10)


# ---- streams, events and pinned memory: CuPy's names, CUDA's timing at its strictest


def test_the_stand_ins_streams_events_and_pinned_memory_have_cupys_signatures():
    api = fake_gpu.cupy_api()
    for name in fake_gpu.PLAYED_CUDA_CLASSES:
        played = getattr(fake_gpu.cupy.cuda, name)
        assert fake_gpu._signature_text(played) == api["cuda_classes"][name]["signature"]
        assert fake_gpu._members(played).items() <= api["cuda_classes"][name]["members"].items(), name
    for name in fake_gpu.PLAYED_CUDA_FUNCTIONS:
        assert fake_gpu._signature_text(getattr(fake_gpu.cupy.cuda, name)) == api["cuda"][name]["signature"]


def test_a_cuda_name_cupy_lacks_raises_and_one_not_played_says_so():
    with pytest.raises(AttributeError, match="has no attribute 'Streams'"):
        fake_gpu.cupy.cuda.Streams
    with pytest.raises(AttributeError, match="does not play cupy.cuda.MemoryPool"):
        fake_gpu.cupy.cuda.MemoryPool


def pinned(values: np.ndarray) -> np.ndarray:
    """``values`` copied into pinned memory, as cupyx.empty_pinned makes it."""
    buffer = np.ndarray(values.shape, values.dtype, buffer=fake_gpu.cupy.cuda.alloc_pinned_memory(values.nbytes))
    buffer[...] = values
    return buffer


@pytest.mark.parametrize("wait", [lambda stream, event: fake_gpu.cupy.cuda.get_current_stream().wait_event(event),
                                  lambda stream, event: event.synchronize(),
                                  lambda stream, event: stream.synchronize()])
def test_a_copy_from_pinned_memory_on_a_side_stream_lands_when_waited_for(wait):
    cuda = fake_gpu.cupy.cuda
    stream, target = cuda.Stream(non_blocking=True), fake_gpu.cupy.zeros(3, dtype=np.int64)
    source = pinned(np.array([1, 2, 3]))
    target.set(source, stream=stream)
    event = stream.record()
    assert not event.done and not stream.done
    np.testing.assert_array_equal(target.get(), [0, 0, 0])  # read before waiting: the old values
    source[0] = 7  # refilled before the copy ran: the copy sends the new contents
    wait(stream, event)
    assert event.done
    np.testing.assert_array_equal(target.get(), [7, 2, 3])


def test_pageable_memory_is_read_at_once_and_a_blocking_stream_copies_at_once():
    cuda = fake_gpu.cupy.cuda
    side, blocking = cuda.Stream(non_blocking=True), cuda.Stream()
    target, source = fake_gpu.cupy.zeros(2), np.array([1.0, 2.0])
    target.set(source, stream=side)
    source[0] = 9.0  # too late: CUDA staged pageable memory before set returned
    side.record().synchronize()
    np.testing.assert_array_equal(target.get(), [1.0, 2.0])
    target.set(pinned(np.array([3.0, 4.0])), stream=blocking)
    np.testing.assert_array_equal(target.get(), [3.0, 4.0])


def test_with_a_stream_it_is_the_current_one_and_set_copies_on_it():
    cuda = fake_gpu.cupy.cuda
    stream, target = cuda.Stream(non_blocking=True), fake_gpu.cupy.zeros(2)
    assert cuda.get_current_stream() is cuda.Stream.null
    with stream:
        assert cuda.get_current_stream() is stream
        target.set(pinned(np.ones(2)))
    assert cuda.get_current_stream() is cuda.Stream.null
    np.testing.assert_array_equal(target.get(), [0.0, 0.0])
    stream.synchronize()
    np.testing.assert_array_equal(target.get(), [1.0, 1.0])


@pytest.mark.parametrize("source, error, message", [
    (np.zeros(3, np.float32), TypeError, "float32 array cannot be set to float64 array"),
    (np.zeros(4), ValueError, "Shape mismatch"), ([0.0, 0.0, 0.0], TypeError, "Only numpy.ndarray")])
def test_set_refuses_what_cupys_refuses(source, error, message):
    with pytest.raises(error, match=message):
        fake_gpu.cupy.zeros(3).set(source)
    with pytest.raises(RuntimeError, match="non-contiguous"):
        fake_gpu.cupy.zeros(6)[::2].set(np.zeros(3))


# ---- results: NumPy's values (but for the last bit where a GPU rounds otherwise), on the device


@pytest.mark.parametrize("compute", [
    lambda xp, a: a * 2.0 - a / 3.0 + a.max(axis=0),
    lambda xp, a: xp.transpose(a.reshape(3, 2, 2), (1, 0, 2))[:, ::-1],
    lambda xp, a: xp.concatenate([a, xp.sqrt(xp.abs(a))], axis=1),
    lambda xp, a: xp.where(a > 0.5, a, 0.0),
    lambda xp, a: xp.roll(a, 1, axis=0),
    lambda xp, a: -a * a // 0.3 % 0.7,
])
def test_results_correctly_rounded_on_both_are_numpys_bits_on_the_device(compute):
    values = np.random.default_rng(0).random((3, 4))
    result = compute(fake_gpu.cupy, on_device(values))
    assert type(result) is FakeGpuArray
    np.testing.assert_array_equal(backend.asnumpy(result), compute(np, values))


@pytest.mark.parametrize("compute", [
    lambda xp, a: xp.exp(a), lambda xp, a: xp.tanh(a), lambda xp, a: a ** 1.5, lambda xp, a: a @ a.T,
    lambda xp, a: a.sum(axis=1), lambda xp, a: xp.mean(a, axis=0), lambda xp, a: xp.add.reduce(a, axis=1),
    lambda xp, a: xp.cumsum(a, axis=1), lambda xp, a: xp.einsum("ij,kj->ik", a, a),
])
def test_results_a_gpu_rounds_otherwise_are_numpys_but_for_the_last_bit(compute):
    """As CuPy's are: a test that expects NumPy's very bits from the GPU fails on the stand-in too.
    The same values always get the same bits."""
    values = np.random.default_rng(0).random((40, 50))
    expected = compute(np, values)
    result = backend.asnumpy(compute(fake_gpu.cupy, on_device(values)))
    np.testing.assert_array_max_ulp(result, expected, maxulp=1)
    assert 0.3 < np.mean(result != expected) < 0.7
    np.testing.assert_array_equal(backend.asnumpy(compute(fake_gpu.cupy, on_device(values))), result)


@pytest.mark.parametrize("reduce", [lambda a: a.sum(), lambda a: a.max(), lambda a: np.mean(a),
                                    lambda a: a.std(), lambda a: a[1, 2], lambda a: (a > 2).any()])
def test_reductions_and_elements_are_0d_device_arrays(reduce):
    values = np.arange(6.0).reshape(2, 3)
    result = reduce(on_device(values))
    assert type(result) is FakeGpuArray and result.ndim == 0
    np.testing.assert_allclose(float(backend.asnumpy(result)), float(reduce(values)), rtol=1e-15)  # std: a GPU's sum


def test_exact_results_non_finite_ones_and_views_keep_numpys_bits():
    integers = on_device(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(backend.asnumpy(integers.sum(axis=0)), [12.0, 15.0, 18.0, 21.0])
    extremes = on_device(np.array([-np.inf, 0.0, np.inf, np.nan]))
    np.testing.assert_array_equal(backend.asnumpy(fake_gpu.cupy.exp(extremes)), [0.0, 1.0, np.inf, np.nan])
    values = np.random.default_rng(0).random((5, 6))
    array = on_device(values)
    fake_gpu.cupy.einsum("ij->ji", array)  # a view: it computes nothing, and its input stays as it was
    np.testing.assert_array_equal(backend.asnumpy(array), values)


def test_the_fused_kernels_get_a_gpus_last_bits_where_their_cuda_rounds_otherwise():
    rng = np.random.default_rng(0)
    x, bias = rng.standard_normal((64, 96)), rng.standard_normal(96)
    softmax = backend.asnumpy(kernels.softmax(on_device(x)))
    np.testing.assert_array_max_ulp(softmax, kernels.softmax_reference(x), maxulp=1)
    assert np.any(softmax != kernels.softmax_reference(x))
    h, y, cdf = (backend.asnumpy(a) for a in kernels.gelu_of_sum(on_device(x), on_device(bias)))
    np.testing.assert_array_equal(h, x + bias)  # one addition, correctly rounded on both
    np.testing.assert_array_max_ulp(y, kernels.gelu_reference(x + bias)[0], maxulp=1)
    assert np.any(y != kernels.gelu_reference(x + bias)[0])


def test_out_of_range_integer_indices_wrap_around_as_on_cupy():
    """CuPy takes integer array indices modulo the axis length where NumPy raises."""
    array = on_device(np.arange(10.0).reshape(2, 5))
    np.testing.assert_array_equal(backend.asnumpy(array[:, on_device([5, -6, 7])]), [[0, 4, 2], [5, 9, 7]])
    array[1, on_device([6])] = -1.0
    backend.scatter_add(array, (on_device([2, 2]), on_device([0, 5])), on_device([10.0, 10.0]))
    np.testing.assert_array_equal(backend.asnumpy(array), [[20, 1, 2, 3, 4], [5, -1, 7, 8, 9]])


def test_indices_it_cannot_place_on_an_axis_are_left_unwrapped():
    values = np.arange(20.0).reshape(2, 2, 5)
    array = on_device(values)
    np.testing.assert_array_equal(backend.asnumpy(array[..., on_device([3])]), values[..., [3]])
    mask = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(backend.asnumpy(array[on_device(mask), on_device([3])]), values[mask, [3]])


def test_copies_and_pickles_are_device_arrays_of_their_own():
    array = on_device([1.0, 2.0])
    for duplicate in (copy.copy(array), copy.deepcopy(array), pickle.loads(pickle.dumps(array))):
        assert type(duplicate) is FakeGpuArray
        duplicate[0] = 9.0
        np.testing.assert_array_equal(backend.asnumpy(array), [1.0, 2.0])


def test_iteration_and_len_as_on_cupy():
    array = on_device(np.arange(6.0).reshape(3, 2))
    assert len(array) == 3 and all(type(row) is FakeGpuArray for row in array)
    with pytest.raises(TypeError, match="unsized"):
        len(on_device(np.array(1.0)))


# ---- random numbers: a stream of the GPU's own


def test_the_gpu_draws_its_own_stream_not_the_cpus():
    for sample in (backend.random_uniform, backend.random_normal):
        minigrad.manual_seed(3)
        on_cpu = sample((1000,), np.float64, "cpu")
        on_gpu = sample((1000,), np.float64, "gpu")
        assert type(on_gpu) is FakeGpuArray
        assert not np.isclose(on_cpu, backend.asnumpy(on_gpu)).any()


def test_dropout_on_the_gpu_keeps_the_expected_share_with_masks_of_its_own():
    """The agreement of CPU and GPU dropout is statistical, not mask for mask."""
    from minigrad import functional as F

    ones = np.ones((200, 100), dtype=np.float32)
    on_cpu = F.dropout(minigrad.tensor(ones), 0.25, True).numpy()
    on_gpu = F.dropout(minigrad.tensor(ones, device="gpu"), 0.25, True).numpy()
    kept = (on_gpu != 0).mean()
    assert abs(kept - 0.75) < 5 * np.sqrt(0.75 * 0.25 / ones.size)  # five standard deviations
    np.testing.assert_allclose(on_gpu[on_gpu != 0], 1 / 0.75, rtol=1e-6)
    assert ((on_cpu != 0) != (on_gpu != 0)).mean() > 0.2  # the masks are not the same


def test_an_out_array_is_returned_itself_as_cupy_returns_it():
    a, out = on_device(np.ones((2, 3))), on_device(np.zeros((3, 3)))
    assert fake_gpu.cupy.matmul(a.T, a, out=out) is out
    total = on_device(np.zeros(3))
    assert a.sum(axis=0, out=total) is total and fake_gpu.cupy.exp(a[0], out=total) is total
    np.testing.assert_array_max_ulp(backend.asnumpy(total), np.exp(np.ones(3)), maxulp=1)  # a GPU's exp


def test_working_out_a_dtype_launches_nothing():
    a, b = on_device(np.ones(3, np.float32)), on_device(np.ones(3))
    before = fake_gpu.operation_count.count
    assert fake_gpu.cupy.result_type(a, b) == np.float64 and fake_gpu.cupy.common_type(a) is np.float32
    assert fake_gpu.operation_count.count == before
    fake_gpu.cupy.add(a, b)
    assert fake_gpu.operation_count.count == before + 1


def test_matmul_counts_the_copies_cupys_makes_around_cublas():
    """Above two dimensions CuPy copies every operand not in C order (its batched GEMM takes no
    transposed operand), and writes an ``out`` not in C order from a result of its own; in two,
    ``dot`` takes a transposed (Fortran-order) operand as it is."""
    stack, matrix = on_device(np.ones((4, 3, 5))), on_device(np.ones((3, 5)))

    def launches(*args, **kwargs) -> int:
        before = fake_gpu.operation_count.count
        fake_gpu.cupy.matmul(*args, **kwargs)
        return fake_gpu.operation_count.count - before

    assert launches(stack, stack.transpose(0, 2, 1)) == 2  # the GEMM and a copy of the transposed operand
    assert launches(stack.transpose(0, 2, 1), stack) == 2
    assert launches(matrix, matrix.T) == 1  # cuBLAS transposes a 2-d operand itself
    assert launches(matrix[:, ::2], matrix.T[::2]) == 3  # neither order: both copied
    c_order = on_device(np.zeros((4, 3, 3)))
    assert launches(stack, stack.transpose(0, 2, 1).copy(), out=c_order) == 1
    assert launches(stack, stack.transpose(0, 2, 1).copy(), out=c_order.transpose(0, 2, 1)) == 2  # and a copy out
