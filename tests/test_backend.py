"""The array backend: device names, array modules, transfers, seeding, and the GPU probe.

The stand-in GPU itself is tested in test_fake_gpu.py."""
import importlib.util
import math
import re
import sys
import types

import numpy as np
import pytest

import minigrad
from minigrad import backend


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


def cupy_like(device_count, compute_error=None, random_error=None) -> types.ModuleType:
    """A module that answers the questions the backend asks CuPy, computing with NumPy."""
    module = types.ModuleType("cupy_like")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: device_count)
    module.cuda = types.SimpleNamespace(runtime=runtime)
    module.float32 = np.float32

    def arange(*args, **kwargs):
        if compute_error is not None:
            raise compute_error
        return np.arange(*args, **kwargs)

    class RandomState:
        """cupy.random.RandomState, which loads cuRAND at its first draw."""

        def __init__(self, seed):
            self._generator = np.random.default_rng(seed)

        def random_sample(self, size, dtype):
            if random_error is not None:
                raise random_error
            return self._generator.random(size, dtype=dtype)

    module.arange = arange
    module.random = types.SimpleNamespace(RandomState=RandomState)
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
    (cupy_like(1, random_error=ImportError("libcurand.so.10: cannot open shared object file")),
     "CuPy found a GPU but cannot draw random numbers on it (ImportError: libcurand.so.10: cannot open shared "
     "object file); its cuRAND library is probably missing."),
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


def test_gpu_without_curand_is_refused_at_once_not_at_the_first_drop_path(monkeypatch):
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    monkeypatch.setattr(backend, "cupy", cupy_like(1, random_error=ImportError("libcurand.so.10: cannot open")))
    with pytest.raises(RuntimeError) as error:
        minigrad.tensor([1.0], device="gpu")
    assert "cannot draw random numbers" in str(error.value) and "libcurand.so.10" in str(error.value)
    assert 'pip install -e ".[gpu]"' in str(error.value)


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
    # SciPy's (Cephes) is within 2 ulps here; CUDA documents 2 ulps for its erf, plus math.erf's own
    # ulp (and the stand-in GPU changes SciPy's last bit, as CUDA's differ).
    x = np.concatenate([np.linspace(-7.0, 7.0, 2001), [0.0, -0.0, 1e-300, 0.99999, 1.0, 1.00001, 7.99, 8.0,
                                                      8.01, -9.5, 27.0, 40.0, -np.inf, np.inf]])
    result = backend.asnumpy(backend.erf(backend.to_device(x, device)))
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_array_max_ulp(result, expected, maxulp=3 if device == "gpu" else 2)
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


def test_kept_host_memory_is_reused_without_page_faults():
    """After keep_freed_host_memory, an array as large as a Swin-T activation takes the pages the
    last one freed: no page is faulted in afresh, where by default each is (glibc maps it anew)."""
    resource = pytest.importorskip("resource")

    def faults_of_a_fresh_array() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        array = np.ones(16_000_000, dtype=np.float32)  # 64 MB
        del array
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    if not backend.keep_freed_host_memory():
        pytest.skip("not glibc's malloc: nothing to keep")
    faults_of_a_fresh_array()
    assert faults_of_a_fresh_array() < 50  # by default, some 300 here: 64 MB mapped afresh, in huge pages
