"""The array backend: device names, array modules, transfers, seeding, and the stand-in GPU."""
import importlib.util
import math
import re
import sys
import types

import numpy as np
import pytest

import minigrad
from minigrad import backend
from minigrad.backend import FakeGpuArray


@pytest.fixture
def fake_gpu(monkeypatch):
    """Serve device "gpu" with the strict stand-in, whatever this machine has."""
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine with neither CuPy nor the stand-in."""
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    monkeypatch.setattr(backend, "cupy", None)


# ---- device names


@pytest.mark.parametrize("name", ["tpu", "cuda:0", "", "mps"])
def test_unknown_device_raises_naming_it(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        backend.normalize_device(name)
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        minigrad.tensor([1.0], device=name)


@pytest.mark.parametrize("name", ["cuda:1", "GPU:0"])
def test_a_numbered_gpu_is_refused_with_the_way_to_choose_one(name):
    number = name.partition(":")[2]
    with pytest.raises(ValueError, match=f"set CUDA_VISIBLE_DEVICES={number} and ask for 'gpu'"):
        backend.normalize_device(name)


def test_gpu_without_cupy_says_what_to_install(no_gpu):
    assert not backend.is_gpu_available()
    for name in ("gpu", "cuda"):
        with pytest.raises(RuntimeError) as error:
            minigrad.tensor([1.0], device=name)
        assert 'pip install -e ".[gpu]"' in str(error.value)
        assert "CuPy is not installed" in str(error.value)


@pytest.mark.gpu
def test_cuda_is_an_alias_of_gpu(fake_gpu):
    assert backend.is_gpu_available()
    assert backend.normalize_device("cuda") == backend.normalize_device("CUDA") == "gpu"
    assert minigrad.tensor([1.0], device="cuda").device == "gpu"


def cupy_like(device_count, compute_error=None) -> types.ModuleType:
    """A module that answers the questions the backend asks CuPy, computing with NumPy."""
    module = types.ModuleType("cupy_like")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: device_count)
    module.cuda = types.SimpleNamespace(runtime=runtime)
    module.float32 = np.float32

    def arange(*args, **kwargs):
        if compute_error is not None:
            raise compute_error
        return np.arange(*args, **kwargs)

    module.arange = arange
    return module


def cuda_error(message):
    raise RuntimeError(message)


class _WithoutCublas(np.ndarray):
    """An array whose kernels run but whose matmul fails, as where NVRTC loads but cuBLAS does not."""

    def __matmul__(self, other):
        raise RuntimeError("libcublas.so.12: cannot open shared object file")


def cupy_without_cublas() -> types.ModuleType:
    module = cupy_like(1)
    module.arange = lambda *args, **kwargs: np.arange(*args, **kwargs).view(_WithoutCublas)
    return module


@pytest.mark.parametrize("module, expected", [
    (cupy_like(1), None),
    (cupy_like(0), "CuPy found no GPU on this machine."),
    (cupy_like(2, RuntimeError("CuPy failed to load libnvrtc.so.12")),
     "CuPy found a GPU but cannot compute on it (RuntimeError: CuPy failed to load libnvrtc.so.12); "
     "its CUDA libraries (NVRTC, cuBLAS) are probably missing."),
    (cupy_without_cublas(),
     "CuPy found a GPU but cannot compute on it (RuntimeError: libcublas.so.12: cannot open shared object "
     "file); its CUDA libraries (NVRTC, cuBLAS) are probably missing."),
])
def test_gpu_problem_tries_a_computation_not_just_the_device_count(module, expected):
    assert backend._gpu_problem(module) == expected


def test_gpu_problem_asks_cupy_once_per_module():
    module = cupy_like(1)
    asked = []
    module.cuda.runtime.getDeviceCount = lambda: asked.append(1) or 1
    assert backend._gpu_problem(module) is None and backend._gpu_problem(module) is None
    assert len(asked) == 1  # every op checks its device: a computation on the GPU each time would be slow


def test_a_gpu_cupy_can_use_is_served_by_cupy_not_the_stand_in(monkeypatch):
    working = cupy_like(1)
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    monkeypatch.setattr(backend, "cupy", working)
    assert backend.is_gpu_available()
    assert backend.array_module_for("gpu") is working


def test_gpu_problem_reports_a_cuda_error_from_the_device_count():
    module = cupy_like(1)
    module.cuda.runtime.getDeviceCount = lambda: cuda_error("cudaErrorInsufficientDriver: driver too old")
    assert backend._gpu_problem(module) == "CuPy cannot reach a GPU (cudaErrorInsufficientDriver: driver too old)."


def test_gpu_with_cupy_that_cannot_compute_says_why(monkeypatch):
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    monkeypatch.setattr(backend, "cupy", cupy_like(1, RuntimeError("libcublas.so.12: cannot open")))
    assert not backend.is_gpu_available()
    with pytest.raises(RuntimeError) as error:
        minigrad.tensor([1.0], device="gpu")
    assert "libcublas.so.12: cannot open" in str(error.value)
    assert 'pip install -e ".[gpu]"' in str(error.value)


class _BrokenCupyFinder:
    """An import hook for which ``import cupy`` fails the way a wheel without its CUDA libraries does."""

    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise ImportError("libcudart.so.12: cannot open shared object file", name="cupy_backends.cuda")
        return None


def load_backend_afresh(monkeypatch, cupy_finder=None) -> types.ModuleType:
    """Execute backend.py as a new module, with ``import cupy`` answered by ``cupy_finder``."""
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    if cupy_finder is None:
        monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    else:
        monkeypatch.setattr(sys, "meta_path", [cupy_finder] + sys.meta_path)
    spec = importlib.util.spec_from_file_location("backend_afresh", backend.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cupy_that_is_installed_but_does_not_load_is_not_called_missing(monkeypatch):
    fresh = load_backend_afresh(monkeypatch, _BrokenCupyFinder())
    assert fresh.cupy is None
    assert fresh.gpu_problem() == (
        "CuPy is installed but does not load (libcudart.so.12: cannot open shared object file).")
    with pytest.raises(RuntimeError, match="does not load"):
        fresh.normalize_device("gpu")


def test_cupy_that_is_not_installed_is_called_missing(monkeypatch):
    assert load_backend_afresh(monkeypatch).gpu_problem() == "CuPy is not installed."


def test_cpu_needs_nothing(no_gpu):
    assert backend.normalize_device("cpu") == backend.normalize_device("CPU") == "cpu"
    assert backend.normalize_device(None) == backend.get_default_device() == "cpu"


@pytest.mark.gpu
def test_set_default_device_takes_any_spelling_and_is_the_default_everywhere(fake_gpu, monkeypatch):
    monkeypatch.setattr(backend, "_default_device", "cpu")  # restored after the test
    backend.set_default_device("CUDA")
    assert backend.get_default_device() == "gpu"
    assert backend.normalize_device(None) == "gpu"
    assert backend.check_same_device([]) == "gpu"  # no array to ask: the default
    with pytest.raises(ValueError, match="'tpu'"):
        backend.set_default_device("tpu")
    assert backend.get_default_device() == "gpu"
    backend.set_default_device("CPU")
    assert backend.get_default_device() == "cpu" and backend.check_same_device([]) == "cpu"


# ---- array modules and transfers


def test_array_module_and_device_of(device):
    array = backend.to_device(np.arange(3.0), device)
    xp = backend.get_array_module(array)
    assert xp is backend.array_module_for(device)
    assert (xp is np) == (device == "cpu")
    assert backend.device_of(array) == device
    assert backend.get_array_module(np.arange(3.0)) is np and backend.device_of(np.arange(3.0)) == "cpu"


def test_asnumpy_gives_a_host_array(device):
    values = np.arange(6.0).reshape(2, 3)
    host = backend.asnumpy(backend.to_device(values, device))
    assert type(host) is np.ndarray
    np.testing.assert_array_equal(host, values)


@pytest.mark.parametrize("make", [lambda: np.arange(6.0), lambda: np.arange(6.0).reshape(2, 3).T,
                                  lambda: np.arange(6.0)[::2]])
def test_host_copy_never_shares_memory(make, device):
    array = backend.to_device(make(), device)
    copy = backend.host_copy(array)
    assert type(copy) is np.ndarray
    np.testing.assert_array_equal(copy, backend.asnumpy(array))
    if device == "cpu":
        assert not np.shares_memory(copy, array)
    copy[...] = -1.0
    assert (backend.asnumpy(array) != -1.0).all()


def test_host_copy_of_an_ndarray_subclass_never_shares_memory(tmp_path):
    """np.asarray of a subclass (a memory-mapped file here) is a new object that still shares the
    file's memory: it is no copy."""
    mapped = np.memmap(tmp_path / "values.dat", dtype=np.float64, mode="w+", shape=(3,))
    mapped[:] = [1.0, 2.0, 3.0]
    copy = backend.host_copy(mapped)
    assert type(copy) is np.ndarray and not np.shares_memory(copy, mapped)
    copy[...] = -1.0
    np.testing.assert_array_equal(mapped, [1.0, 2.0, 3.0])


def test_to_device_round_trip(device):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    there = backend.to_device(values, device)
    assert backend.device_of(there) == device and there.dtype == np.float32
    back = backend.to_device(there, "cpu")
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, values)
    same = backend.to_device(there, device)  # already there: no copy
    same[0, 0] = 42.0
    assert backend.asnumpy(there)[0, 0] == 42.0


def test_device_aliases_are_understood_by_every_function_that_takes_a_device(device):
    alias = {"cpu": "CPU", "gpu": "cuda"}[device]
    assert backend.array_module_for(alias) is backend.array_module_for(device)
    array = backend.to_device(np.arange(3.0), alias)
    assert backend.device_of(array) == device
    back = backend.to_device(array, "CPU")
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, np.arange(3.0))


def test_to_device_takes_python_lists(device):
    array = backend.to_device([[1.0, 2.0]], device)
    assert backend.device_of(array) == device and array.shape == (1, 2)


@pytest.mark.gpu
def test_check_same_device_names_both(fake_gpu):
    assert backend.check_same_device([np.zeros(1), np.ones(2)]) == "cpu"
    with pytest.raises(RuntimeError, match="'cpu' and 'gpu'"):
        backend.check_same_device([np.zeros(1), backend.to_device(np.zeros(1), "gpu")])


# ---- seeding


@pytest.mark.parametrize("sample", [backend.random_uniform, backend.random_normal])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manual_seed_makes_samples_reproducible(sample, dtype, device):
    def draw(seed):
        minigrad.manual_seed(seed)
        first = backend.asnumpy(sample((4, 5), dtype, device))
        return first, backend.asnumpy(sample((4, 5), dtype, device))

    first, second = draw(3)
    again_first, again_second = draw(3)
    other_first, _ = draw(4)
    assert first.dtype == dtype and first.shape == (4, 5)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert not np.array_equal(first, second)  # the stream moves on
    assert not np.array_equal(first, other_first)


def test_one_generator_per_device_whatever_its_name(device):
    alias = {"cpu": "CPU", "gpu": "cuda"}[device]
    minigrad.manual_seed(7)
    first = backend.asnumpy(backend.random_uniform((3,), np.float64, device))
    second = backend.asnumpy(backend.random_uniform((3,), np.float64, alias))
    minigrad.manual_seed(7)
    expected = backend.asnumpy(backend.random_uniform((6,), np.float64, device))
    np.testing.assert_array_equal(np.concatenate([first, second]), expected)  # one stream, not two


def test_manual_seed_leaves_the_gpu_alone_until_it_draws(monkeypatch):
    made = []
    new_generator = backend._new_generator
    monkeypatch.setattr(backend, "_new_generator", lambda device, seed: made.append((device, seed))
                        or new_generator(device, seed))
    monkeypatch.setattr(backend, "is_gpu_available", lambda: pytest.fail("manual_seed asked about the GPU"))
    monkeypatch.setattr(backend, "gpu_problem", lambda: pytest.fail("manual_seed asked about the GPU"))
    minigrad.manual_seed(5)
    assert made == []
    backend.random_uniform((2,), np.float32, "cpu")
    backend.random_uniform((2,), np.float32, "cpu")
    assert made == [("cpu", 5)]


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_a_seed_cupy_would_refuse_is_refused_on_every_device(seed):
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        minigrad.manual_seed(seed)


@pytest.mark.parametrize("seed", [2**32, 2**63, 2**64 - 1])
def test_seeds_up_to_2_64_minus_1_are_taken_on_every_device(seed, device):
    """cupy.random.RandomState.seed takes any integer in [0, 2**64), as NumPy's generators do."""
    minigrad.manual_seed(seed)
    first = backend.asnumpy(backend.random_uniform((3,), np.float64, device))
    minigrad.manual_seed(seed)
    np.testing.assert_array_equal(backend.asnumpy(backend.random_uniform((3,), np.float64, device)), first)


def test_uniform_samples_lie_in_the_unit_interval(device):
    samples = backend.asnumpy(backend.random_uniform((10_000,), np.float32, device))
    assert samples.min() >= 0.0 and samples.max() < 1.0
    assert abs(samples.mean() - 0.5) < 5 * math.sqrt(1 / 12 / samples.size)


# ---- where NumPy and CuPy differ


def test_erf_matches_math_erf(device):
    # SciPy's (Cephes) is within 2 ulps here; CUDA documents 2 ulps for its erf, plus math.erf's own ulp.
    real_cupy = device == "gpu" and not backend.fake_gpu_enabled()
    x = np.concatenate([np.linspace(-7.0, 7.0, 2001), [0.0, -0.0, 1e-300, 0.99999, 1.0, 1.00001, 7.99, 8.0,
                                                      8.01, -9.5, 27.0, 40.0, -np.inf, np.inf]])
    result = backend.asnumpy(backend.erf(backend.to_device(x, device)))
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_array_max_ulp(result, expected, maxulp=3 if real_cupy else 2)
    assert backend.erf(backend.to_device(np.float32([0.5]), device)).dtype == np.float32


def test_erf_of_a_0d_array_is_a_0d_array_on_its_device(device):
    result = backend.erf(backend.to_device(np.array(0.5), device))
    assert not isinstance(result, np.generic) and result.shape == ()
    assert backend.device_of(result) == device
    assert abs(backend.asnumpy(result) - math.erf(0.5)) <= 2 * np.spacing(math.erf(0.5))


def test_scatter_add_accumulates_repeated_indices(device):
    target = backend.to_device(np.zeros(4), device)
    index = backend.to_device(np.array([0, 2, 2, 2]), device)
    backend.scatter_add(target, index, backend.to_device(np.array([1.0, 2.0, 3.0, 4.0]), device))
    np.testing.assert_array_equal(backend.asnumpy(target), [1.0, 0.0, 9.0, 0.0])


@pytest.mark.gpu
def test_is_gpu_available_follows_the_stand_in(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    assert backend.is_gpu_available()
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "0")
    assert not backend.is_gpu_available()


# ---- the stand-in GPU: CuPy's strictness on the CPU (marked gpu, so both test passes run these)


def on_fake_gpu(values) -> FakeGpuArray:
    array = backend.to_device(np.asarray(values), "gpu")
    assert type(array) is FakeGpuArray
    return array


UNSUPPORTED = re.escape("Unsupported type <class 'numpy.ndarray'>")


@pytest.mark.gpu
@pytest.mark.parametrize("op", [lambda g, h: g + h, lambda g, h: h + g, lambda g, h: g * h,
                                lambda g, h: h @ g, lambda g, h: np.add(g, h), lambda g, h: np.maximum(h, g)])
def test_stand_in_refuses_to_mix_with_host_arrays(op, fake_gpu):
    with pytest.raises(TypeError, match=UNSUPPORTED):
        op(on_fake_gpu(np.ones((2, 2))), np.ones((2, 2)))


@pytest.mark.gpu
@pytest.mark.parametrize("func", [lambda g, h: np.concatenate([g, h]), lambda g, h: np.stack([h, g]),
                                  lambda g, h: np.concatenate((g, h)),
                                  lambda g, h: np.where(g > 0, g, h), lambda g, h: np.matmul(g, h)])
def test_stand_in_refuses_host_arrays_in_numpy_functions(func, fake_gpu):
    with pytest.raises(TypeError, match=UNSUPPORTED):
        func(on_fake_gpu(np.ones((2, 2))), np.ones((2, 2)))


@pytest.mark.gpu
def test_stand_in_refuses_a_0d_host_array_but_takes_numpy_scalars(fake_gpu):
    """CuPy takes Python and NumPy scalars in its kernels, but a NumPy array of any shape, a 0-d one
    (what a host reduction of an array returns with keepdims or np.asarray) included, is refused."""
    array = on_fake_gpu(np.ones(2))
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array + np.array(2.0)
    with pytest.raises(TypeError, match=UNSUPPORTED):
        np.where(array > 0, array, np.array(0.0))
    np.testing.assert_array_equal(backend.asnumpy(array * np.float64(2.0) + np.float32(1.0)), [3.0, 3.0])


@pytest.mark.gpu
@pytest.mark.parametrize("write", [lambda g, h: np.add(g, g, out=h), lambda g, h: np.exp(g, out=h),
                                   lambda g, h: np.concatenate([g[:1], g[1:]], out=h)])
def test_stand_in_refuses_a_host_array_as_out(write, fake_gpu):
    host = np.zeros(2)
    with pytest.raises(TypeError):
        write(on_fake_gpu(np.ones(2)), host)
    np.testing.assert_array_equal(host, [0.0, 0.0])


@pytest.mark.gpu
@pytest.mark.parametrize("reduce", [lambda g, h: g.max(initial=h), lambda g, h: np.maximum.reduce(g, initial=h),
                                    lambda g, h: backend.get_array_module(g).maximum.reduce(g, initial=h)])
def test_stand_in_refuses_a_host_array_as_a_keyword(reduce, fake_gpu):
    """A 0-d host array as a reduction's initial= mixes host and device as an operand would."""
    with pytest.raises(TypeError, match=UNSUPPORTED):
        reduce(on_fake_gpu(np.arange(3.0)), np.array(10.0))


@pytest.mark.gpu
@pytest.mark.parametrize("call", [lambda xp, g, m: np.add(g, g, where=m), lambda xp, g, m: xp.add(g, g, where=m),
                                  lambda xp, g, m: g.sum(where=m), lambda xp, g, m: xp.add.reduce(g, where=m)])
@pytest.mark.parametrize("on_device", [False, True])
def test_stand_in_refuses_a_where_mask_as_cupy_does(call, on_device, fake_gpu):
    """CuPy's ufunc call takes out=, dtype= and casting= only ('Wrong arguments' otherwise) and its
    reductions take no where=: code masking that way passes on NumPy and fails on the GPU."""
    array = on_fake_gpu(np.arange(3.0))
    mask = np.array([True, False, True])
    with pytest.raises(TypeError):
        call(backend.get_array_module(array), array, on_fake_gpu(mask) if on_device else mask)
    assert backend.asnumpy(array.sum()) == 3.0  # NumPy's own where=True, passed on by sum(), is fine


@pytest.mark.gpu
def test_stand_in_refuses_host_index_arrays(fake_gpu):
    array = on_fake_gpu(np.arange(5.0))
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array[np.array([0, 3])]
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array[np.array([0, 3])] = 1.0
    with pytest.raises(TypeError, match=UNSUPPORTED):
        array[0:2] = np.ones(2)
    np.testing.assert_array_equal(backend.asnumpy(array[on_fake_gpu([0, 3])]), [0.0, 3.0])
    np.testing.assert_array_equal(backend.asnumpy(array[[0, 3]]), [0.0, 3.0])  # lists are fine, as in CuPy


@pytest.mark.gpu
def test_stand_in_wraps_an_integer_array_index_out_of_range_as_cupy_does(fake_gpu):
    """CuPy takes integer array indices modulo the axis length (NumPy raises): code that counts on
    an IndexError would pass tests on NumPy and go silently wrong on a GPU."""
    array = on_fake_gpu(np.arange(10.0).reshape(2, 5))
    np.testing.assert_array_equal(backend.asnumpy(array[:, on_fake_gpu([5, -6, 7])]), [[0, 4, 2], [5, 9, 7]])
    np.testing.assert_array_equal(backend.asnumpy(array[on_fake_gpu([0, 1]), [6, 5]]), [1, 5])
    array[1, on_fake_gpu([6])] = -1.0
    backend.scatter_add(array, (on_fake_gpu([2, 2]), on_fake_gpu([0, 5])), on_fake_gpu([10.0, 10.0]))
    np.testing.assert_array_equal(backend.asnumpy(array), [[20, 1, 2, 3, 4], [5, -1, 7, 8, 9]])
    unsigned = on_fake_gpu(np.array([7, 4], dtype=np.uint8))  # CuPy's take kernel wraps any integer type
    np.testing.assert_array_equal(backend.asnumpy(array[0, unsigned]), [2, 4])


@pytest.mark.gpu
def test_stand_in_leaves_indices_it_cannot_place_on_an_axis_unwrapped(fake_gpu):
    """With None, Ellipsis or a mask spanning two axes, the part's position is not its axis: taking
    it modulo the wrong axis's length would pick the wrong entries of an index that is in range."""
    values = np.arange(20.0).reshape(2, 2, 5)
    array = on_fake_gpu(values)
    np.testing.assert_array_equal(backend.asnumpy(array[..., on_fake_gpu([3])]), values[..., [3]])
    np.testing.assert_array_equal(backend.asnumpy(array[None, on_fake_gpu([1]), :, on_fake_gpu([3])]),
                                  values[None, [1], :, [3]])
    mask = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(backend.asnumpy(array[on_fake_gpu(mask), on_fake_gpu([3])]), values[mask, [3]])
    rows = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(backend.asnumpy(on_fake_gpu(rows)[None, on_fake_gpu([3])]), rows[None, [3]])


@pytest.mark.gpu
@pytest.mark.parametrize("reduce", [lambda a: a.sum(), lambda a: a.max(), lambda a: np.mean(a),
                                    lambda a: a.std(), lambda a: a[1, 2], lambda a: (a > 2).any()])
def test_stand_in_reductions_return_0d_device_arrays(reduce, fake_gpu):
    values = np.arange(6.0).reshape(2, 3)
    result = reduce(on_fake_gpu(values))
    assert type(result) is FakeGpuArray and result.ndim == 0
    assert backend.asnumpy(result) == reduce(values)


@pytest.mark.gpu
@pytest.mark.parametrize("read", [lambda a: a.item(), float, bool, int, lambda a: a.get(), backend.asnumpy,
                                  lambda a: a.tolist(), lambda a: minigrad.tensor(a).item(),
                                  lambda a: minigrad.tensor(a).numpy(), repr, str, lambda a: f"{a:.3f}",
                                  lambda a: repr(minigrad.tensor(a))])
def test_stand_in_counts_each_read_to_the_host(read, fake_gpu):
    array = on_fake_gpu(np.array(2.5))
    before = backend.transfer_count.count
    read(array)
    assert backend.transfer_count.count == before + 1


@pytest.mark.gpu
@pytest.mark.parametrize("show", [repr, str, lambda a: f"{a}"])
def test_stand_in_counts_printing_an_array_as_one_transfer(show, fake_gpu):
    """CuPy prints an array from one host copy (its __repr__, __str__ and __format__ copy first),
    not one read per element shown."""
    values = np.arange(6.0).reshape(2, 3)
    array = on_fake_gpu(values)
    before = backend.transfer_count.count
    shown = show(array)
    assert backend.transfer_count.count == before + 1
    assert shown == show(values).replace("array(", "FakeGpuArray(")


@pytest.mark.gpu
def test_stand_in_counts_a_read_as_an_index(fake_gpu):
    position = on_fake_gpu(np.array(2))
    before = backend.transfer_count.count
    assert [10, 20, 30][position] == 30  # __index__, as CuPy's, copies the value to the host
    assert backend.transfer_count.count == before + 1


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["asarray", "array", "ascontiguousarray"])
def test_stand_in_counts_each_upload_of_host_data(name, fake_gpu):
    upload = getattr(backend.array_module_for("gpu"), name)
    before = backend.transfer_count.count
    array = upload(np.arange(3.0))
    assert type(array) is FakeGpuArray and backend.transfer_count.count == before + 1
    np.testing.assert_array_equal(backend.asnumpy(upload(array)), [0.0, 1.0, 2.0])  # device to device
    assert backend.transfer_count.count == before + 2  # the asnumpy only
    assert type(upload([1.0, 2.0])) is FakeGpuArray and backend.transfer_count.count == before + 3


@pytest.mark.gpu
def test_stand_in_module_functions_refuse_host_arrays(fake_gpu):
    """cupy.concatenate of NumPy arrays raises, it does not copy them over unannounced."""
    xp = backend.array_module_for("gpu")
    with pytest.raises(TypeError, match=UNSUPPORTED):
        xp.concatenate([np.ones(2), np.ones(2)])
    with pytest.raises(TypeError, match=UNSUPPORTED):
        xp.stack([on_fake_gpu(np.ones(2)), np.ones(2)])
    with pytest.raises(TypeError, match=UNSUPPORTED):  # given by keyword
        xp.stack(arrays=[on_fake_gpu(np.ones(2)), np.ones(2)])
    assert type(xp.concatenate([on_fake_gpu(np.ones(2)), xp.zeros(2)])) is FakeGpuArray


@pytest.mark.gpu
def test_stand_in_module_ufuncs_refuse_host_arrays(fake_gpu):
    """cupy.exp(numpy_array) raises, with no device array in the call to hand it to the stand-in."""
    xp = backend.array_module_for("gpu")
    host, device = np.ones(3), on_fake_gpu(np.ones(3))
    for call in (lambda: xp.exp(host), lambda: xp.add(host, 1.0), lambda: xp.add.at(host, [0, 0], 1.0),
                 lambda: xp.add.reduce(host), lambda: xp.exp(device, out=host)):
        with pytest.raises(TypeError, match=UNSUPPORTED):
            call()
    assert type(xp.exp(2.0)) is FakeGpuArray and xp.exp(2.0).ndim == 0  # numbers in, a device array out
    xp.add.at(device, on_fake_gpu(np.array([0, 0])), 1.0)
    np.testing.assert_array_equal(backend.asnumpy(device), [3.0, 1.0, 1.0])
    assert type(xp.maximum.reduce(device)) is FakeGpuArray and xp.exp.nin == 1


@pytest.mark.gpu
def test_stand_in_counts_uploads_once(fake_gpu):
    before = backend.transfer_count.count
    array = backend.to_device(np.arange(4.0), "gpu")
    assert backend.transfer_count.count == before + 1
    backend.to_device(array, "gpu")
    result = (array * 2.0 + 1.0).sum(axis=0)
    assert backend.transfer_count.count == before + 1
    backend.to_device(result, "cpu")
    assert backend.transfer_count.count == before + 2


@pytest.mark.gpu
def test_stand_in_is_told_apart_from_numpy(fake_gpu):
    array = on_fake_gpu(np.ones(2))
    assert backend.get_array_module(array) is not np
    assert backend.get_array_module(array) is backend.array_module_for("gpu")
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.device_of(array) == "gpu"
    assert type(backend.array_module_for("gpu").zeros(3)) is FakeGpuArray


@pytest.mark.gpu
@pytest.mark.parametrize("compute", [
    lambda xp, a: xp.exp(a) * 2.0 - a,
    lambda xp, a: a @ a.T,
    lambda xp, a: a.sum(axis=0, keepdims=True) / a.max(),
    lambda xp, a: xp.transpose(a.reshape(3, 2, 2), (1, 0, 2))[:, ::-1],
    lambda xp, a: xp.concatenate([a, xp.sqrt(xp.abs(a))], axis=1),
    lambda xp, a: xp.where(a > 0.5, a, 0.0),
    lambda xp, a: xp.roll(a, 1, axis=0),
])
def test_stand_in_results_equal_numpys(compute, fake_gpu):
    values = np.random.default_rng(0).random((3, 4))
    array = on_fake_gpu(values)
    result = compute(backend.get_array_module(array), array)
    assert type(result) is FakeGpuArray
    np.testing.assert_array_equal(backend.asnumpy(result), compute(np, values))


@pytest.mark.gpu
@pytest.mark.gpu
def test_stand_in_results_made_of_several_arrays_live_on_the_device(fake_gpu):
    values = np.array([[0.0, 2.5], [-1.5, 0.0]])
    array = on_fake_gpu(values)
    xp = backend.get_array_module(array)
    for result, expected in [(xp.nonzero(array), np.nonzero(values)), (np.divmod(array, 2.0), np.divmod(values, 2.0)),
                             (np.modf(array), np.modf(values))]:
        assert type(result) is tuple and len(result) == len(expected)
        for part, part_expected in zip(result, expected):
            assert type(part) is FakeGpuArray
            np.testing.assert_array_equal(backend.asnumpy(part), part_expected)


@pytest.mark.gpu
def test_stand_in_says_what_it_is_in_its_repr(fake_gpu):
    assert repr(on_fake_gpu(np.array([1.0, 2.0]))) == "FakeGpuArray([1., 2.])"


@pytest.mark.gpu
def test_stand_in_random_numbers_live_on_the_device(fake_gpu):
    minigrad.manual_seed(0)
    assert type(backend.random_uniform((3,), np.float32, "gpu")) is FakeGpuArray
    assert type(backend.random_normal((3,), np.float64, "cuda")) is FakeGpuArray
