"""The fused kernels (minigrad/kernels.py): their CUDA compiles, and on every device each equals its
NumPy reference (on the CPU and the stand-in they are the reference; on a GPU, the CUDA kernel)."""
import math
import re

import numpy as np
import pytest

from minigrad import backend, kernels


def test_every_kernel_compiles_with_nvrtc():
    """NVRTC compiles without a GPU: a kernel that does not compile fails here, not on a GPU.
    (CI installs cupy and NVRTC: pip install cupy-cuda12x "cuda-toolkit[nvrtc]==12.*".)"""
    pytest.importorskip("cupy", reason="cupy is not installed: the kernels' CUDA is compiled where it is")
    from cupy_backends.cuda.libs import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as error:  # the library is loaded at the first call
        pytest.fail(f"NVRTC does not load ({error}): pip install \"cuda-toolkit[nvrtc]==12.*\"")
    program = nvrtc.createProgram(kernels.SOURCE, "kernels.cu", [], [])
    for expression in kernels.NAME_EXPRESSIONS:
        nvrtc.addNameExpression(program, expression)
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_75", "-std=c++14"])
    except nvrtc.NVRTCError:
        pytest.fail("the kernels do not compile:\n" + nvrtc.getProgramLog(program))
    assert nvrtc.getPTX(program)
    for expression in kernels.NAME_EXPRESSIONS:  # each kernel was instantiated
        assert nvrtc.getLoweredName(program, expression)


def test_every_kernel_is_named_for_both_float_types():
    for kernel in kernels.KERNELS:
        assert f"__global__ void {kernel}(" in kernels.SOURCE.replace("\n", " ").replace("  ", " ")
        assert {f"{kernel}<float>", f"{kernel}<double>"} <= set(kernels.NAME_EXPRESSIONS)


# Shapes: rows shorter and longer than a warp, a number of rows not a multiple of a block's 8.
SHAPES = [(3, 5), (2, 7, 49), (13, 96), (5, 768), (1, 1), (4, 33)]


def values(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def on(device, *arrays):
    return [backend.to_device(a, device) for a in arrays]


def on_a_real_gpu(device) -> bool:
    return device == "gpu" and not backend.fake_gpu_enabled()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_and_its_backward_equal_the_reference(device, shape, dtype):
    x, grad = values(shape, dtype), values(shape, dtype, 1)
    y, cdf = kernels.gelu(*on(device, x))
    y = backend.asnumpy(y)
    expected_cdf = np.array([(1 + math.erf(v / math.sqrt(2))) / 2 for v in x.ravel()]).reshape(shape)
    assert (cdf is None) == on_a_real_gpu(device)  # there the backward's kernel computes Phi again
    if cdf is not None:
        np.testing.assert_allclose(backend.asnumpy(cdf), expected_cdf, **tolerance(dtype))
        assert cdf.dtype == dtype
    np.testing.assert_allclose(y, x * expected_cdf, **tolerance(dtype))
    assert y.dtype == dtype
    np.testing.assert_array_equal(backend.asnumpy(kernels.gelu_value(*on(device, x))), y)  # Phi not kept
    dx = backend.asnumpy(kernels.gelu_backward(*on(device, x), cdf, *on(device, grad)))
    pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(dx, grad * (expected_cdf + x * pdf), **tolerance(dtype))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_its_backward_equal_the_reference(device, shape, dtype):
    x, grad = 10 * values(shape, dtype), values(shape, dtype, 1)
    s = backend.asnumpy(kernels.softmax(*on(device, x)))
    exact = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    exact /= exact.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(s, exact, **tolerance(dtype))
    dx = backend.asnumpy(kernels.softmax_backward(*on(device, s, grad)))
    np.testing.assert_allclose(dx, s * (grad - (grad * s).sum(axis=-1, keepdims=True)), **tolerance(dtype))


@pytest.mark.parametrize("shape", SHAPES + [(900, 1000)])  # the last in several blocks of rows on the CPU
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_of_a_sum_is_gelu_of_the_sum_added_first(device, shape, dtype):
    x, bias = values(shape, dtype), values(shape[-1:], dtype, 1)
    h = x + bias
    y, cdf = kernels.gelu(*on(device, h))
    got = list(kernels.gelu_of_sum(*on(device, x.copy(), bias)))  # x written over
    got.append(kernels.gelu_of_sum_value(*on(device, x.copy(), bias)))
    assert (got[2] is None) == (cdf is None) == on_a_real_gpu(device)
    for array, expected in zip(got, (h, y, cdf, y)):
        if expected is not None:  # the sum rounded once, as NumPy's add
            np.testing.assert_array_equal(backend.asnumpy(array), backend.asnumpy(expected))
    assert got[0].dtype == dtype


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_and_its_backward_equal_the_reference(device, shape, dtype):
    x, grad = 3 + values(shape, dtype), values(shape, dtype, 1)
    weight, bias = values(shape[-1:], dtype, 2), values(shape[-1:], dtype, 3)
    y, normalized, rstd = (backend.asnumpy(a) for a in kernels.layer_norm(*on(device, x, weight, bias), 1e-5))
    wide = x.astype(np.float64)
    exact_rstd = 1 / np.sqrt(wide.var(axis=-1, keepdims=True) + 1e-5)
    exact = (wide - wide.mean(axis=-1, keepdims=True)) * exact_rstd
    assert rstd.shape == shape[:-1] + (1,)
    np.testing.assert_allclose(rstd, exact_rstd, **tolerance(dtype))
    np.testing.assert_allclose(normalized, exact, **tolerance(dtype))
    np.testing.assert_allclose(y, exact * weight + bias, **tolerance(dtype))
    value = kernels.layer_norm_value(*on(device, x, weight, bias), 1e-5)
    np.testing.assert_array_equal(backend.asnumpy(value), y)  # the normalized x not kept
    dx = backend.asnumpy(kernels.layer_norm_backward(*on(device, grad, normalized, rstd, weight)))
    g = grad * weight
    expected = rstd * (g - g.mean(axis=-1, keepdims=True) - normalized * (g * normalized).mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(dx, expected, **tolerance(dtype))


@pytest.mark.parametrize("shape", SHAPES + [(3000, 100), (64, 70, 96)])  # the last two: many chunks of rows
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_are_the_sums_over_every_axis_but_the_last(device, shape, dtype):
    x, y = values(shape, dtype), values(shape, dtype, 1)
    leading = tuple(range(len(shape) - 1))
    exact_sums = x.astype(np.float64).sum(axis=leading)
    exact_products = (x.astype(np.float64) * y).sum(axis=leading)
    scale = np.abs(x).sum(axis=leading) * np.finfo(dtype).eps  # a bound of the rounding in the order summed
    sums = backend.asnumpy(kernels.column_sums(*on(device, x)))
    assert sums.shape == shape[-1:] and sums.dtype == dtype
    np.testing.assert_allclose(sums, exact_sums, rtol=0, atol=scale.max())
    packed = on(device, np.full((2,) + shape[-1:], np.nan, dtype))[0]
    out = (packed[0], packed[1])
    got_sums, got_products = kernels.column_sums_with_products(*on(device, x, y), out=out)
    assert got_sums is out[0] and got_products is out[1]  # written where asked
    np.testing.assert_allclose(backend.asnumpy(got_sums), exact_sums, rtol=0, atol=scale.max())
    bound = (np.abs(x) * np.abs(y)).sum(axis=leading).max() * np.finfo(dtype).eps
    np.testing.assert_allclose(backend.asnumpy(got_products), exact_products, rtol=0, atol=bound)
    again = backend.asnumpy(kernels.column_sums(*on(device, x)))
    np.testing.assert_array_equal(again, sums)  # the same order of additions each time


def test_a_transposed_input_is_taken_as_its_values(device):
    """The CUDA kernels read C-ordered rows: a transposed view must be copied, not misread."""
    x = values((6, 4), np.float64).T
    s = backend.asnumpy(kernels.softmax(backend.to_device(x, device)))
    np.testing.assert_allclose(s, kernels.softmax_reference(x), rtol=1e-12)


def cuda_parameters() -> dict[str, list[tuple[str, str]]]:
    """Each kernel's parameters in SOURCE, as (type, name): ("T*", "x"), ("long long", "size"), ..."""
    source = " ".join(kernels.SOURCE.split())
    return {kernel: [tuple(part.strip().replace("const ", "").rsplit(" ", 1)) for part in parameters.split(",")]
            for kernel, parameters in re.findall(r"__global__ void (\w+)\(([^)]*)\)", source)}


# What a CUDA parameter of each type must be given: CuPy passes a NumPy scalar by its dtype's bytes,
# so an int64 where the kernel reads an int, or a float32 where it reads a double, is silently misread.
ARGUMENT_DTYPES = {"unsigned char*": "uint8", "unsigned int*": "uint32", "double*": "float64", "long long": "int64",
                   "int": "int32", "double": "float64"}


def launched_threads(kernel: str, given: dict) -> int:
    """The threads a kernel is launched over: a warp a row, a block of 256 for each 32 columns of a
    chunk of rows, or one an element."""
    if kernel == "column_sums":
        chunks = -(-int(given["rows"]) // int(given["chunk_rows"]))
        return 256 * -(-int(given["n"]) // 32) * chunks
    return 32 * given["rows"] if "rows" in given else given["size"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_launch_passes_what_its_kernels_parameters_take(monkeypatch, dtype):
    """The kernels' Python side runs only on a real GPU: here each wrapper runs on stand-in arrays
    with the launch recorded instead of made, and each argument is checked against the CUDA
    signature: its number, arrays for pointers (of the kernel's type T, in C order), scalars of the
    exact dtype, and the threads (one an element, or a warp a row)."""
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    launches = []
    monkeypatch.setattr(kernels, "_launch", lambda kernel, threads, *args: launches.append((kernel, threads, args)))
    x, grad, bias = on("gpu", values((6, 49), dtype), values((6, 49), dtype, 1), values((49,), dtype, 2))
    rstd = on("gpu", values((6, 1), dtype, 3))[0]
    scores, table, mask = on("gpu", values((8, 3, 7, 7), dtype), values((3, 7, 7), dtype, 1),
                             values((4, 7, 7), dtype, 2))
    pixels, mean = on("gpu", np.zeros((2, 3, 4, 5), np.uint8), np.ones((3, 1, 1), dtype))
    kernels._gelu_kernel(x)
    kernels._gelu_bias_kernel(on("gpu", values((6, 49), dtype))[0], bias)
    kernels._gelu_backward_kernel(x, x, grad)
    kernels._dropout_keep_kernel(x, 0.1, 1 / 0.9)
    kernels._normalize_pixels_kernel(pixels, mean, mean)
    kernels._softmax_kernel(x)
    for masks in (mask, None):
        kernels._softmax_of_sum_kernel(scores, table, masks)
    kernels._softmax_backward_kernel(x, grad)
    kernels._layer_norm_kernel(x, bias, bias, 1e-5)
    kernels._layer_norm_backward_kernel(grad, x, rstd, bias)
    kernels._column_sums_kernel(x, None, None, None)
    kernels._column_sums_kernel(x, grad, bias, on("gpu", values((49,), dtype))[0])
    for maximum in (None, on("gpu", values((6, 49), dtype))[0]):
        kernels.adam_update(*on("gpu", *[values((6, 49), dtype, seed) for seed in range(4)]), maximum,
                            1.0, 0.0, 0.9, 0.999, 1e-8, 1e-3, 1.0)
    for rect in (None, 0.5):
        kernels.radam_update(*on("gpu", *[values((6, 49), dtype, seed) for seed in range(4)]),
                             1.0, 0.0, 0.9, 0.999, 0.1, 1e-3, 1e-8, 1.0, rect)
    for buffer in (None, x):
        kernels.sgd_update(*on("gpu", values((6, 49), dtype), values((6, 49), dtype, 1)), buffer,
                           0.0, 0.9, 1.0, True, False, 0.1)

    signatures = cuda_parameters()
    assert {kernel for kernel, _, _ in launches} == set(kernels.KERNELS) == set(signatures)
    for kernel, threads, args in launches:
        parameters = signatures[kernel]
        assert len(args) == len(parameters), kernel
        for (kind, name), arg in zip(parameters, args):
            pointer = kind.endswith("*")
            assert isinstance(arg, np.generic) != pointer, (kernel, name, type(arg))  # a scalar, or an array
            assert arg.dtype == (np.dtype(dtype) if kind == "T*" else ARGUMENT_DTYPES[kind]), (kernel, name, arg.dtype)
            assert not pointer or arg.flags.c_contiguous, (kernel, name)
        given = {name: arg for (_, name), arg in zip(parameters, args)}
        assert threads == launched_threads(kernel, given), kernel


@pytest.mark.gpu
def test_each_fused_op_is_one_launch_on_the_stand_in(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    from minigrad.testing import fake_gpu

    x, weight, bias = on("gpu", values((4, 8), np.float32), values((8,), np.float32), values((8,), np.float32))
    pixels, mean = on("gpu", np.zeros((2, 8, 4, 4), np.uint8), np.ones((8, 1, 1), np.float32))
    sums = on("gpu", values((4, 8), np.float32), values((4, 8), np.float32))  # each written over once
    for name, run in [("gelu_forward", lambda: kernels.gelu(x)), ("gelu_forward", lambda: kernels.gelu_value(x)),
                      ("gelu_bias_forward", lambda: kernels.gelu_of_sum(sums[0], bias)),
                      ("gelu_bias_forward", lambda: kernels.gelu_of_sum_value(sums[1], bias)),
                      ("softmax_forward", lambda: kernels.softmax(x)),
                      ("layer_norm_forward", lambda: kernels.layer_norm(x, weight, bias, 1e-5)),
                      ("layer_norm_forward", lambda: kernels.layer_norm_value(x, weight, bias, 1e-5)),
                      ("normalize_pixels", lambda: kernels.normalize_pixels(pixels, mean, mean)),
                      ("column_sums", lambda: kernels.column_sums(x)),
                      ("column_sums", lambda: kernels.column_sums_with_products(x, x)),
                      ("softmax_bias_mask_forward", lambda: kernels.softmax_of_sum(
                          x.reshape(1, 2, 4, 4), x.reshape(2, 4, 4), x.reshape(2, 4, 4)[:1]))]:
        before = fake_gpu.operation_count.count
        run()
        assert fake_gpu.operation_count.count == before + 1 and fake_gpu.operation_count.kinds[name] >= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_dropout_keep_is_the_scale_where_the_sample_reaches_p(device, dtype, p):
    uniform = np.random.default_rng(7).random(1000).astype(dtype)
    uniform[:3] = np.array([p, np.nextafter(dtype(p), dtype(0)), 0.0], dtype=dtype)  # at and just below p
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    keep = backend.asnumpy(kernels.dropout_keep(backend.to_device(uniform, device), p, scale))
    assert keep.dtype == dtype
    np.testing.assert_array_equal(keep, np.where(uniform >= dtype(p), dtype(scale), dtype(0)))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 16, 16), (1, 1, 1, 1), (0, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_pixels_is_bit_for_bit_its_reference(device, shape, dtype):
    """Each step rounded as on the host, and IEEE division on the GPU: not close, equal."""
    pixels = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    mean = np.random.default_rng(6).random((shape[-3], 1, 1)).astype(dtype)
    std = (0.1 + np.random.default_rng(7).random((shape[-3], 1, 1))).astype(dtype)
    images = backend.asnumpy(kernels.normalize_pixels(*on(device, pixels, mean, std)))
    assert images.dtype == dtype and images.shape == shape
    np.testing.assert_array_equal(images, kernels.normalize_pixels_reference(pixels, mean, std))
    np.testing.assert_array_equal(images, (pixels.astype(dtype) / dtype(255) - mean) / std)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_of_large_arrays_in_blocks_is_bit_for_bit_the_one_pass_reference(dtype):
    x = values((1100, 1000), dtype)  # many blocks, and a last one shorter than the others
    grad = values((1100, 1000), dtype, 1)
    assert x.size > 3 * kernels.BLOCK and x.size % kernels.BLOCK
    y, cdf = kernels.gelu(x)
    expected_y, expected_cdf = kernels.gelu_reference(x)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(cdf, expected_cdf)
    np.testing.assert_array_equal(kernels.gelu_value(x), y)  # each block's Phi where its result goes
    np.testing.assert_array_equal(kernels.gelu_backward(x, cdf, grad), kernels.gelu_backward_reference(x, cdf, grad))
    assert y.shape == cdf.shape == x.shape and y.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_layer_norm_of_large_arrays_in_row_blocks_are_bit_for_bit_the_one_pass_references(dtype):
    scores, grad = values((3000, 7, 49), dtype), values((3000, 7, 49), dtype, 1)  # rows of 49 scores
    assert scores.size > 3 * kernels.BLOCK and (scores.size // 49) % (kernels.BLOCK // 49)  # a short last block
    s = kernels.softmax(scores)
    np.testing.assert_array_equal(s, kernels.softmax_reference(scores))
    np.testing.assert_array_equal(kernels.softmax_backward(s, grad),
                                  kernels.softmax_backward_reference(s, grad))
    x, grad = 3 * values((2900, 384), dtype, 2) + 1, values((2900, 384), dtype, 3)
    weight, bias = values(384, dtype, 4), values(384, dtype, 5)
    assert x.size > 3 * kernels.BLOCK and len(x) % (kernels.BLOCK // 384)
    y, normalized, rstd = kernels.layer_norm(x, weight, bias, 1e-5)
    for got, expected in zip((y, normalized, rstd), kernels.layer_norm_reference(x, weight, bias, 1e-5)):
        np.testing.assert_array_equal(got, expected)
    assert y.shape == normalized.shape == x.shape and rstd.shape == (2900, 1) and y.dtype == dtype
    np.testing.assert_array_equal(kernels.layer_norm_value(x, weight, bias, 1e-5), y)  # normalized where y goes
    np.testing.assert_array_equal(kernels.layer_norm_backward(grad, normalized, rstd, weight),
                                  kernels.layer_norm_backward_reference(grad, normalized, rstd, weight))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_are_sums_of_each_row_whatever_its_place(dtype):
    """The sums softmax and LayerNorm take over the last axis (einsum's): NumPy's sums to rounding,
    and each row's sum the same bits wherever that row sits."""
    x = values((301, 7, 49), dtype)
    sums = kernels._row_sums(x)
    assert sums.shape == (301, 7, 1) and sums.dtype == dtype
    np.testing.assert_allclose(sums, x.sum(axis=-1, keepdims=True), rtol=0, atol=64 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(kernels._row_sums(x[5:9, 3:]), sums[5:9, 3:])
    np.testing.assert_array_equal(kernels._row_sums(x, axis=1), x.sum(axis=1, keepdims=True))  # another axis: NumPy's


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_and_columns_scaled_by_einsum_are_numpys_products(dtype):
    x = values((31, 7, 96), dtype)
    per_row, per_column = values((31, 7, 1), dtype, 1), values((96,), dtype, 2)
    for factor in (per_row, per_column, values((7, 96), dtype, 3)):  # the last: NumPy's broadcasting, as it is
        scaled = kernels._scaled(x, factor)
        np.testing.assert_array_equal(scaled, x * factor)
        assert scaled.shape == x.shape and scaled.dtype == dtype


def test_the_float32_normal_cdf_is_as_accurate_as_its_docstring_says_tail_included():
    """Within 12 units in the last place for |x| <= 3, and x^2 + 12 below (the rounding of the
    exponent), down to where Phi underflows; PyTorch's (1 + erf) / 2 is off by thousands of units
    below -3, and by all of Phi below -5.5."""
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-14.5, 9, 1_000_001), rng.standard_normal(200_000) * 3,
                        [0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0]]).astype(np.float32)
    exact = (0.5 * special.erfc(-x.astype(np.float64) / math.sqrt(2))).astype(np.float32)  # to 1e-16
    cdf = kernels.normal_cdf(x)
    assert cdf.dtype == np.float32
    units = np.abs(cdf.view(np.int32).astype(np.int64) - exact.view(np.int32).astype(np.int64))
    central = np.abs(x) <= 3
    assert units[central].max() <= 12
    assert np.all(units[~central] <= 12 + x[~central].astype(np.float64) ** 2)
    assert (units[central] <= 2).mean() > 0.85  # and mostly within a unit or two of the float32 nearest Phi
    assert ((x < -5) & (exact > 0)).sum() > 300_000  # the points reach far into the tail
    edges = kernels.normal_cdf(np.array([-np.inf, np.inf, np.nan], dtype=np.float32))
    assert edges[0] == 0.0 and edges[1] == 1.0 and np.isnan(edges[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_of_stacks_split_over_threads_is_bit_for_bit_numpys(dtype):
    qkv = values((301, 49, 3, 3, 32), dtype).transpose(2, 0, 3, 1, 4)  # q, k, v as the attention takes them
    q, k = qkv[0], qkv[1]
    for a, b in [(q, k.transpose(0, 1, 3, 2)), (q @ k.transpose(0, 1, 3, 2), k), (q.transpose(0, 1, 3, 2), q)]:
        assert a.size + b.size >= kernels._SMALL_PRODUCTS  # split
        product = kernels.matmul(a, b)
        np.testing.assert_array_equal(product, a @ b)
        assert product.shape == (a @ b).shape and product.dtype == dtype
    broadcast = values((49, 32), dtype)  # leading axes that differ: NumPy's broadcasting, as it is
    np.testing.assert_array_equal(kernels.matmul(q, broadcast.T), q @ broadcast.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [7, 1100])  # on the CPU, the latter in blocks of rows shared by the threads
def test_add_to_rows_adds_in_place_as_numpy_does(device, dtype, rows):
    x, row = values((rows, 1000), dtype), values(1000, dtype, 1)
    on_device = on(device, x.copy())[0]
    result = kernels.add_to_rows(on_device, *on(device, row))
    assert result is on_device
    np.testing.assert_array_equal(backend.asnumpy(result), x + row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("windows", [3, 301])  # on the CPU, the latter in blocks shared by the threads
def test_scaled_copy_is_a_c_order_copy_of_the_products(device, dtype, windows):
    qkv = values((windows, 49, 3, 3, 32), dtype).transpose(2, 0, 3, 1, 4)  # the queries, a strided view
    scaled = kernels.scaled_copy(on(device, qkv)[0][0], 0.17)
    assert scaled.flags.c_contiguous and scaled.dtype == dtype
    np.testing.assert_array_equal(backend.asnumpy(scaled), qkv[0] * 0.17)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masks", [None, 4])
@pytest.mark.parametrize("windows", [8, 400])  # two images of four windows; on the CPU, many blocks of them
def test_the_softmax_of_scores_bias_and_mask_is_that_of_their_sum(device, dtype, masks, windows):
    heads, n = 3, 49
    scores, bias = values((windows, heads, n, n), dtype), values((heads, n, n), dtype, 1)
    mask = None if masks is None else np.where(values((masks, n, n), dtype, 2) > 0, 0, -100).astype(dtype)
    summed = scores.copy()
    for w in range(windows):  # by the definition: window w of every image takes mask[w % nW]
        summed[w] += bias
        if mask is not None:
            summed[w] += mask[w % masks]
    arrays = on(device, scores.copy(), bias.transpose(1, 2, 0).copy().transpose(2, 0, 1))  # bias not in C order
    got = backend.asnumpy(kernels.softmax_of_sum(*arrays, None if mask is None else on(device, mask)[0]))
    # The sums rounded as NumPy's adds, then the softmax of the device's own (a GPU's exp and sums
    # are not NumPy's: bit for bit with its softmax kernel, close to NumPy's).
    np.testing.assert_array_equal(got, backend.asnumpy(kernels.softmax(*on(device, summed))))
    np.testing.assert_allclose(got, kernels.softmax_reference(summed), **tolerance(dtype))
    assert got.dtype == dtype
