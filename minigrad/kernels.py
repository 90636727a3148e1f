"""Fused kernels: GELU (alone, or after a Linear's bias), softmax and LayerNorm, forward and
backward, dropout's multiplier, the window attention's softmax of its scores, bias and mask, the
sums of columns (a bias's gradient, LayerNorm's weight's), the optimizers' steps (Adam, RAdam,
SGD) and the normalisation of a batch of uint8 pixels, one GPU launch each.

On a GPU, what Swin's glue costs is the number of kernels launched (5-10 us of host time each),
not its arithmetic: NumPy's way of writing LayerNorm is ten passes over memory, each a launch.
Each op here is written twice:

- in NumPy (``*_reference``), the reference: the CPU runs it, and so does the stand-in GPU, which
  counts it as the one launch CuPy makes. On the CPU GELU runs in blocks of 256 k elements, and
  softmax and LayerNorm in blocks of whole rows as large (the attention's softmax, of whole
  windows), shared by the cores' threads (NumPy lets go of Python's lock in its loops): each pass
  over a block finds it in the cores' caches (so does a bias added on the way in: fc1's before its
  GELU, the attention's before its softmax), and no pass writes a large temporary, whose every
  fresh page costs a fault. GELU's float32
  normal CDF is a polynomial of our own fit, in float32 arithmetic (``normal_cdf``): SciPy's
  erf branches on each value, and a branch mispredicted on random inputs cost 15 ns an element;
- in CUDA (``SOURCE``), for CuPy: one kernel, templated on float and double, compiled by NVRTC at
  its first use. The row kernels (softmax, LayerNorm) give each row to one warp of 32 threads,
  which sum and take maxima with shuffles: Swin's rows are short (49 scores, 96 to 768 channels).

``tests/test_kernels.py`` compiles SOURCE with NVRTC, which needs no GPU, so a kernel that does not
compile fails CI; on a GPU (``-m gpu``) it compares each kernel with its reference.
"""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from minigrad import backend

_SQRT_HALF = math.sqrt(0.5)  # 0.7071067811865476 in SOURCE
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # 0.3989422804014327 in SOURCE

SOURCE = r"""
template <typename T> __device__ T warp_sum(T value) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

template <typename T> __device__ T warp_max(T value) {
    for (int offset = 16; offset > 0; offset >>= 1) value = max(value, __shfl_xor_sync(0xffffffffu, value, offset));
    return value;
}

// Phi(x) = erfc(-x / sqrt 2) / 2. (Not (1 + erf(x / sqrt 2)) / 2, which keeps no digit of Phi's
// tail in float32: Phi(-5) = 2.9e-7 is lost in the 1.)
template <typename T> __device__ T normal_cdf(T x) { return erfc(x * (T)-0.7071067811865476) * (T)0.5; }

// y = x Phi(x). (Phi(x) is not kept: gelu_backward computes it again, which costs the GPU less
// than an array the size of x kept from forward to backward, 1.5 GB of a Swin-T step at batch 64.)
template <typename T>
__global__ void gelu_forward(const T* x, T* y, long long size) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    y[i] = x[i] * normal_cdf(x[i]);
}

// h = x + bias, the bias along rows of width elements, written over x; then as gelu_forward on h.
template <typename T>
__global__ void gelu_bias_forward(T* x, const T* bias, T* y, long long size, long long width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    T h = x[i] + bias[i % width];
    x[i] = h;
    y[i] = h * normal_cdf(h);
}

// dx = grad (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
template <typename T>
__global__ void gelu_backward(const T* x, const T* grad, T* dx, long long size) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    T pdf = (T)0.3989422804014327 * exp((T)-0.5 * x[i] * x[i]);
    dx[i] = grad[i] * (normal_cdf(x[i]) + x[i] * pdf);
}

// Dropout's multiplier from uniform samples: scale = 1 / (1 - p) where u >= p, else 0.
template <typename T>
__global__ void dropout_keep(const T* uniform, T* keep, double p, double scale, long long size) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    keep[i] = uniform[i] >= (T)p ? (T)scale : (T)0;
}

// Arithmetic rounded at each operation as NumPy's passes round it: with plain operators NVRTC may
// fuse a * b + c into one fma, rounded once, and the result would differ in the last bit.
__device__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// Adam's and RAdam's start (optim/adam.py, in its order): p *= factor; g += added p (weight
// decay); m += (g - m)(1 - beta1); v = v beta2 + g (1 - beta2) g. Updates p, m[i] and v[i].
template <typename T>
__device__ void decay_and_moments(T& parameter, T g, T* m, T* v, long long i, double factor, double added,
                                  double beta1, double beta2) {
    if (factor != 1.0) parameter = mul_rn(parameter, (T)factor);
    if (added != 0.0) g = add_rn(g, mul_rn((T)added, parameter));
    m[i] = add_rn(m[i], mul_rn(sub_rn(g, m[i]), (T)(1.0 - beta1)));
    v[i] = add_rn(mul_rn(v[i], (T)beta2), mul_rn(mul_rn(g, (T)(1.0 - beta2)), g));
}

// One Adam step of a parameter array (adam_step_): with amsgrad the running maximum of v (in
// max_v); p -= m / (sqrt(v) / root_correction + eps) * step_size.
template <typename T>
__global__ void adam_update(T* p, const T* grad, T* m, T* v, T* max_v, int amsgrad, long long size, double factor,
                            double added, double beta1, double beta2, double eps, double step_size,
                            double root_correction) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    T parameter = p[i];
    decay_and_moments(parameter, grad[i], m, v, i, factor, added, beta1, beta2);
    T mean = m[i], square = v[i];
    if (amsgrad) {  // NumPy's maximum: NaN wins
        T larger = max_v[i];
        if (!(larger >= square) && !isnan(larger)) larger = square;
        max_v[i] = larger;
        square = larger;
    }
    T denominator = add_rn(div_rn(sqrt_rn(square), (T)root_correction), (T)eps);
    p[i] = sub_rn(parameter, mul_rn(div_rn(mean, denominator), (T)step_size));
}

// One RAdam step (optim/radam.py, radam_step_): step = m / correction1 * lr; once rectified,
// step *= root_correction / (sqrt(v) + eps), then * rect; p -= step.
template <typename T>
__global__ void radam_update(T* p, const T* grad, T* m, T* v, long long size, double factor, double added,
                             double beta1, double beta2, double correction1, double lr, int rectified, double eps,
                             double root_correction, double rect) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    T parameter = p[i];
    decay_and_moments(parameter, grad[i], m, v, i, factor, added, beta1, beta2);
    T step = mul_rn(div_rn(m[i], (T)correction1), (T)lr);
    if (rectified) {
        T adaptive = div_rn((T)root_correction, add_rn(sqrt_rn(v[i]), (T)eps));
        step = mul_rn(mul_rn(step, adaptive), (T)rect);
    }
    p[i] = sub_rn(parameter, step);
}

// One SGD step (optim/sgd.py, sgd_step_): g += weight_decay p; with momentum, the buffer b = g at
// the first step, else b momentum + dampening_complement g, and g = g + momentum b (Nesterov) or
// b; p -= lr g.
template <typename T>
__global__ void sgd_update(T* p, const T* grad, T* buffer, long long size, double weight_decay, double momentum,
                           double dampening_complement, int first, int nesterov, double lr) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    T parameter = p[i], g = grad[i];
    if (weight_decay != 0.0) g = add_rn(g, mul_rn((T)weight_decay, parameter));
    if (momentum != 0.0) {
        T b = first ? g : add_rn(mul_rn(buffer[i], (T)momentum), mul_rn((T)dampening_complement, g));
        buffer[i] = b;
        g = nesterov ? add_rn(g, mul_rn((T)momentum, b)) : b;
    }
    p[i] = sub_rn(parameter, mul_rn((T)lr, g));
}

// out = (pixel / 255 - mean[c]) / std[c], c the channel of element i of (..., channels, plane):
// the order of the host's ToArray then Normalize, each step rounded to T, so both agree bit for bit
// (NVRTC divides as IEEE does unless told -prec-div=false; nothing here can contract into an fma).
template <typename T>
__global__ void normalize_pixels(const unsigned char* pixels, const T* mean, const T* std, T* out, long long size,
                                 long long plane, int channels) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    int c = (int)((i / plane) % channels);
    out[i] = ((T)pixels[i] / (T)255 - mean[c]) / std[c];
}

// One warp a row of n: the row's index and this thread's lane, or false past the last row.
__device__ bool warp_row(long long rows, long long* row, int* lane) {
    *row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    *lane = threadIdx.x % 32;
    return *row < rows;
}

// s = exp(x - max) / sum exp(x - max) along each row.
template <typename T>
__global__ void softmax_forward(const T* x, T* s, long long rows, int n) {
    long long row; int lane;
    if (!warp_row(rows, &row, &lane)) return;
    const T* in = x + row * n;
    T* out = s + row * n;
    T top = in[0];
    for (int j = lane; j < n; j += 32) top = max(top, in[j]);
    top = warp_max(top);
    T total = 0;
    for (int j = lane; j < n; j += 32) { out[j] = exp(in[j] - top); total += out[j]; }
    total = warp_sum(total);
    for (int j = lane; j < n; j += 32) out[j] = out[j] / total;
}

// softmax_forward of the window attention's scores (windows, heads, n, n) plus the relative position
// bias (heads, n, n) and, where masks > 0, the shifted windows' mask (masks, n, n) of each row's
// window: two additions, rounded one after the other as the host's two in-place adds, each time
// a row is read; scores are left as they were.
template <typename T>
__global__ void softmax_bias_mask_forward(const T* scores, const T* bias, const T* mask, T* s, long long rows,
                                          int n, int heads, long long masks) {
    long long row; int lane;
    if (!warp_row(rows, &row, &lane)) return;
    long long window_head = row / n;
    const T* in = scores + row * n;
    const T* b = bias + ((window_head % heads) * n + row % n) * n;
    const T* m = mask + ((window_head / heads % (masks ? masks : 1)) * n + row % n) * n;
    auto score = [&](int j) { T biased = in[j] + b[j]; return masks ? biased + m[j] : biased; };
    T* out = s + row * n;
    T top = score(0);
    for (int j = lane; j < n; j += 32) top = max(top, score(j));
    top = warp_max(top);
    T total = 0;
    for (int j = lane; j < n; j += 32) { out[j] = exp(score(j) - top); total += out[j]; }
    total = warp_sum(total);
    for (int j = lane; j < n; j += 32) out[j] = out[j] / total;
}

// dx = s (grad - sum(grad s)) along each row.
template <typename T>
__global__ void softmax_backward(const T* s, const T* grad, T* dx, long long rows, int n) {
    long long row; int lane;
    if (!warp_row(rows, &row, &lane)) return;
    const T* sr = s + row * n;
    const T* gr = grad + row * n;
    T dot = 0;
    for (int j = lane; j < n; j += 32) dot += gr[j] * sr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < n; j += 32) dx[row * n + j] = sr[j] * (gr[j] - dot);
}

// normalized = (x - mean) rstd, rstd = 1 / sqrt(var + eps), y = normalized w + b, each row.
template <typename T>
__global__ void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* normalized,
                                   T* rstd, long long rows, int n, double eps) {
    long long row; int lane;
    if (!warp_row(rows, &row, &lane)) return;
    const T* in = x + row * n;
    T total = 0;
    for (int j = lane; j < n; j += 32) total += in[j];
    T mean = warp_sum(total) / (T)n;
    T squares = 0;
    for (int j = lane; j < n; j += 32) { T centered = in[j] - mean; squares += centered * centered; }
    T r = (T)1 / sqrt(warp_sum(squares) / (T)n + (T)eps);
    if (lane == 0) rstd[row] = r;
    for (int j = lane; j < n; j += 32) {
        T h = (in[j] - mean) * r;
        normalized[row * n + j] = h;
        y[row * n + j] = h * weight[j] + bias[j];
    }
}

// g = grad w; dx = rstd (g - mean(g) - normalized mean(g normalized)), each row.
template <typename T>
__global__ void layer_norm_backward(const T* grad, const T* normalized, const T* rstd, const T* weight,
                                    T* dx, long long rows, int n) {
    long long row; int lane;
    if (!warp_row(rows, &row, &lane)) return;
    const T* gr = grad + row * n;
    const T* hr = normalized + row * n;
    T g_sum = 0, gh_sum = 0;
    for (int j = lane; j < n; j += 32) { T g = gr[j] * weight[j]; g_sum += g; gh_sum += g * hr[j]; }
    T g_mean = warp_sum(g_sum) / (T)n, gh_mean = warp_sum(gh_sum) / (T)n;
    for (int j = lane; j < n; j += 32) dx[row * n + j] = rstd[row] * (gr[j] * weight[j] - g_mean - hr[j] * gh_mean);
}

// Sums of the columns of x (rows, n), and with with_products of x y, over the rows: a bias's
// gradient and LayerNorm's weight's. (CuPy's own sum over axis 0 gives each column to one block,
// whose threads read it n elements apart: 2 ms for Swin-T's stage-1 LayerNorm.) Block b takes the
// 32 columns of tile b % tiles (a warp's lanes read a row's 32 neighbours at once) in the rows of
// chunk b / tiles, its 8 warps every 8th row, summing in double, and writes its chunk's sums to
// the chunk's row of the partial sums. The last block of a tile to finish (tile_counters counts
// them; it sets its count back to 0) then sums the chunks' rows in the same way, in their order,
// all in one launch: the same bits on every run, which atomicAdd's order of additions would not give.
__device__ void add_warps(double (*shared)[8][32], double* sum, double* product, int lane, int warp) {
    shared[0][warp][lane] = *sum;
    shared[1][warp][lane] = *product;
    __syncthreads();
    if (warp == 0)
        for (int w = 1; w < 8; ++w) { *sum += shared[0][w][lane]; *product += shared[1][w][lane]; }
    __syncthreads();
}

template <typename T>
__global__ void column_sums(const T* x, const T* y, double* partial_sums, double* partial_products, T* sums,
                            T* products, unsigned int* tile_counters, int with_products, long long rows, int n,
                            long long chunk_rows) {
    __shared__ double shared[2][8][32];
    __shared__ bool last_block;
    int tiles = (n + 31) / 32, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int tile = blockIdx.x % tiles, column = tile * 32 + lane;
    long long chunk = blockIdx.x / tiles, chunks = gridDim.x / tiles;
    long long end = min((chunk + 1) * chunk_rows, rows);
    double sum = 0, product = 0;
    if (column < n) {
        #pragma unroll 4
        for (long long row = chunk * chunk_rows + warp; row < end; row += 8) {
            T value = x[row * n + column];
            sum += value;
            if (with_products) product += (double)value * y[row * n + column];
        }
    }
    add_warps(shared, &sum, &product, lane, warp);
    if (warp == 0 && column < n) {
        partial_sums[chunk * n + column] = sum;
        partial_products[chunk * n + column] = product;
        __threadfence();  // seen by the tile's last block before it counts this one
    }
    __syncthreads();
    if (threadIdx.x == 0) last_block = atomicAdd(&tile_counters[tile], 1u) == chunks - 1;
    __syncthreads();
    if (!last_block) return;
    sum = product = 0;
    if (column < n) {
        for (long long c = warp; c < chunks; c += 8) {  // __ldcg: from L2, where other blocks wrote
            sum += __ldcg(&partial_sums[c * n + column]);
            product += __ldcg(&partial_products[c * n + column]);
        }
    }
    add_warps(shared, &sum, &product, lane, warp);
    if (warp == 0 && column < n) {
        sums[column] = (T)sum;
        if (with_products) products[column] = (T)product;
    }
    if (threadIdx.x == 0) tile_counters[tile] = 0;
}
"""

KERNELS = ("gelu_forward", "gelu_bias_forward", "gelu_backward", "dropout_keep", "normalize_pixels",
           "softmax_forward", "softmax_bias_mask_forward", "softmax_backward", "layer_norm_forward",
           "layer_norm_backward", "column_sums", "adam_update", "radam_update", "sgd_update")
NAME_EXPRESSIONS = tuple(f"{kernel}<{t}>" for kernel in KERNELS for t in ("float", "double"))
_THREADS = 256  # a block: 8 warps, so 8 rows of a row kernel


@functools.cache
def _compiled():
    cupy = backend.array_module_for("gpu")
    return cupy.RawModule(code=SOURCE, options=("-std=c++14",), name_expressions=NAME_EXPRESSIONS)


# C's names of the dtypes the kernels take, by their type codes (float32's "f", float64's "d"): a
# dtype's code is an attribute, where str(dtype), asked some 5,000 times a Swin-T step, took
# a tenth of the host's time on a GPU.
_TYPE_NAMES = {"f": "float", "d": "double"}


@functools.cache
def _function(name: str):
    return _compiled().get_function(name)


def _launch(kernel: str, threads: int, *args: Any) -> None:
    """Run ``kernel`` for the dtype of the first floating-point array among ``args`` over ``threads`` threads."""
    t = next(_TYPE_NAMES[a.dtype.char] for a in args if a.dtype.char in _TYPE_NAMES)
    _function(f"{kernel}<{t}>")(((threads + _THREADS - 1) // _THREADS,), (_THREADS,), args)


# Elements: 1 MB of float32, a block's few arrays within a core's L2 and the L3 cache. Smaller
# blocks lose more to Python's lock, which each thread takes back after each NumPy pass (GELU,
# LayerNorm, softmax and Adam ran 1.1 to 1.5 times slower in blocks of 2^16; 2^19 was slower again).
BLOCK = 1 << 18
_BLOCK_THREADS = min(4, os.cpu_count() or 1)
_SMALL_PRODUCTS = 1 << 16  # elements of a stack of matrix products not worth a second thread


@functools.cache
def _workers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_BLOCK_THREADS, thread_name_prefix="minigrad-blocks")


def for_each_block(work: Callable[[slice], Any], size: int, start: int = 0, block: int = BLOCK) -> None:
    """``work(block)`` for each block of ``block`` items of ``range(start, size)``, as a slice,
    the blocks shared by a thread a core (NumPy lets go of Python's lock in its loops). A block's
    arrays stay in the cores' caches from one of NumPy's passes to the next, and no pass writes a
    large temporary, whose every fresh page costs a fault."""
    blocks = [slice(first, first + block) for first in range(start, size, block)]

    def run(thread: int) -> None:
        for block in blocks[thread::_BLOCK_THREADS]:
            work(block)

    list(_workers().map(run, range(_BLOCK_THREADS)))  # list: waits for them all, and raises what one raised


def _in_blocks(reference: Callable[..., Any], *arrays: Any) -> Any:
    """``reference``, an elementwise function of ``arrays`` (host arrays of one shape) that takes
    an ``out`` (an array, or a tuple of them, as it returns), evaluated block by block
    (``for_each_block``) into whole arrays, each block's results written there by its last pass.
    The same arithmetic, element for element, as ``reference(*arrays)``."""
    xp = backend.get_array_module(arrays[0])
    shape, flat = arrays[0].shape, [xp.ravel(a) for a in arrays]
    size = flat[0].size
    if size <= 2 * BLOCK:
        return reference(*arrays)
    first = reference(*(f[:BLOCK] for f in flat))  # tells the results' number and dtypes
    single = not isinstance(first, tuple)
    results = tuple(xp.empty(size, dtype=part.dtype) for part in ((first,) if single else first))
    for whole, part in zip(results, (first,) if single else first):
        whole[:BLOCK] = part

    def run(block: slice) -> None:
        out = tuple(whole[block] for whole in results)
        reference(*(f[block] for f in flat), out=out[0] if single else out)

    for_each_block(run, size, start=BLOCK)
    shaped = tuple(result.reshape(shape) for result in results)
    return shaped[0] if single else shaped


def _in_row_blocks(work: Callable[[slice], Any], rows: int, row_length: int) -> None:
    """``work(rows)`` for blocks of whole rows, some ``BLOCK`` elements each, shared by the
    threads as in ``for_each_block``: the row-wise twin of ``_in_blocks`` (softmax, LayerNorm)."""
    for_each_block(work, rows, block=max(1, BLOCK // row_length))


def _row_sums(x, axis: int = -1):
    """``x.sum(axis, keepdims=True)``; over the last axis by ``einsum``, which sums each row in one
    unrolled loop: NumPy's ``sum`` takes Swin's short rows (49 scores, 96 channels) one call of its
    pairwise summation at a time, 2.5x slower. (A product with a vector of ones, BLAS's, is faster
    still, but sums a matrix's last few rows in another order than the others.)"""
    xp = backend.get_array_module(x)
    if axis not in (-1, x.ndim - 1) or x.ndim == 0:
        return x.sum(axis=axis, keepdims=True)
    return xp.einsum("...i->...", x)[..., None]


def _scaled(x, factor):
    """``x * factor`` for a factor of one value a row (shape ``x.shape[:-1] + (1,)``) or a column
    (shape ``x.shape[-1:]``), by einsum: NumPy broadcasts it over a short row at a time, 1.3x
    slower. The same products, bit for bit."""
    xp = backend.get_array_module(x)
    if factor.shape == x.shape[-1:]:
        return xp.einsum("...i,i->...i", x, factor)
    if factor.shape == x.shape[:-1] + (1,):
        return xp.einsum("...i,...->...i", x, factor[..., 0])
    return x * factor


def add_to_rows(x, row):
    """``x += row``, ``row`` along x's last axis (a Linear's bias), in place; returns x. On the CPU
    a large x goes in blocks of rows shared by the threads: one thread's adds do not keep up with
    memory (a Swin-T stage-1 qkv output, 3.2 -> 2.0 ms)."""
    xp = backend.get_array_module(x)
    if backend.device_of(x) != "cpu" or x.size <= 2 * BLOCK or not x.flags.c_contiguous or row.shape != x.shape[-1:]:
        x += row
        return x
    rows = x.reshape(-1, x.shape[-1])
    _in_row_blocks(lambda block: xp.add(rows[block], row, out=rows[block]), *rows.shape)
    return x


def scaled_copy(x, factor: float):
    """``x * factor`` in a new array in C order (x may be a strided view, such as the queries in
    the qkv projection's layout); on the CPU in blocks along the first axis, shared by the threads."""
    xp = backend.get_array_module(x)
    out = xp.empty(x.shape, dtype=x.dtype)
    if backend.device_of(x) != "cpu" or x.ndim == 0 or x.size <= 2 * BLOCK:
        return xp.multiply(x, factor, out=out)
    for_each_block(lambda block: xp.multiply(x[block], factor, out=out[block]), len(x),
                   block=max(1, BLOCK * len(x) // x.size))
    return out


def matmul(a, b, out=None):
    """``a @ b`` for two stacks of small matrices, ``(..., n, k) @ (..., k, m)`` with the same
    leading axes, into ``out`` if given (a view with rows of unit stride, such as one part of a
    larger layout, is written in place by BLAS). On the CPU the stack is split over the cores'
    threads: OpenBLAS multiplies a matrix of 49 rows on one thread, and NumPy goes through the
    stack one matrix after the other. Each matrix's product is the one ``a @ b`` computes. (On a
    GPU cuBLAS spreads the stack itself.)"""
    xp = backend.get_array_module(a)
    if (backend.device_of(a) != "cpu" or a.ndim < 3 or a.shape[:-2] != b.shape[:-2] or len(a) < _BLOCK_THREADS
            or a.size + b.size < _SMALL_PRODUCTS):
        return xp.matmul(a, b, out=out)
    if out is None:
        out = xp.empty(a.shape[:-1] + b.shape[-1:], dtype=xp.result_type(a, b))
    bounds = [len(a) * i // _BLOCK_THREADS for i in range(_BLOCK_THREADS + 1)]
    parts = [_workers().submit(xp.matmul, a[start:stop], b[start:stop], out=out[start:stop])
             for start, stop in zip(bounds, bounds[1:])]
    for part in parts:
        part.result()  # waits, and raises what the thread raised
    return out


def _rows(x) -> tuple[int, int]:
    n = x.shape[-1] if x.ndim else 1
    return x.size // max(n, 1), n


def _fusable(*arrays: Any) -> bool:
    """The kernels take float32 or float64 arrays of one dtype, in C order."""
    return all(a.dtype == arrays[0].dtype and a.dtype.char in _TYPE_NAMES and a.flags.c_contiguous
               for a in arrays)


# ---- GELU


# Phi(-a) = (t / s) exp(P(u) - a^2 / 2) for a = |x|, t = 1 / (1 + 0.27 a) and u = (t - c) / s, the map
# of t's range [1 / (1 + 0.27 * 14.5), 1] onto [-1, 1]: the exact side of Phi's tail (exp(-a^2 / 2)
# over about a) taken out, what is left, log(Phi(-a) s / t) + a^2 / 2 (from SciPy's erfcx), varies slowly
# and is fitted by P, of degree 8, by least squares at Chebyshev's nodes in u, each coefficient
# rounded to float32 in turn, lowest first, and the rest refitted. The coefficients fall off by
# about five a degree, so P's float32 evaluation by Horner's rule loses almost nothing. Beyond
# a = 14.5 Phi(-a) underflows float32.
_CDF_SCALE = 0.27
_CDF_T_LOW = 1.0 / (1.0 + _CDF_SCALE * 14.5)
_CDF_T_MID, _CDF_T_HALF = (1.0 + _CDF_T_LOW) / 2, (1.0 - _CDF_T_LOW) / 2
_CDF_POLYNOMIAL = (-2.3535313606262207, 0.6707851886749268, 0.09288494288921356, -0.015083224512636662,
                   -0.010539361275732517, 0.0004636578378267586, 0.0013921695062890649,
                   9.009957466332708e-06, -0.00015182618517428637)


def normal_cdf(x, out=None):
    """Phi(x), the standard normal distribution function, in x's dtype.

    float64: from SciPy's erf (Cephes), for the gradient checks. float32: from float32 arithmetic
    on the polynomial above, 28 passes over a block, without a branch (a branch mispredicted on
    random inputs costs 15 ns). Its relative error, the tail included, is that of float32's
    rounding of the exponent P(u) - a^2 / 2: some 2^-24 a^2, on top of NumPy's exp's 3 units in
    the last place and the rounding of t. Within 12 units for |x| <= 3, and (a^2 + 12) units below
    (126 at x = -14), where Phi is 1e-44 or more; PyTorch's (1 + erf) / 2 keeps no digit there
    (Phi(-5) is 2.9e-7, and 1 + erf(-5 / sqrt 2) in float32 keeps one digit of it), and CUDA's
    erfc(-x / sqrt 2), on our GPU path, carries the same kind of error from rounding x / sqrt 2.
    Written into ``out`` if given."""
    xp = backend.get_array_module(x)
    if x.dtype != xp.float32:
        cdf = backend.erf(x * _SQRT_HALF)
        cdf = xp.add(cdf, 1.0, out=cdf if out is None else out)
        cdf *= 0.5
        return cdf
    a = xp.abs(x)
    t = a + 1.0 / _CDF_SCALE
    xp.divide(1.0 / (_CDF_SCALE * _CDF_T_HALF), t, out=t)  # t / s
    u = t - _CDF_T_MID / _CDF_T_HALF
    tail = u * _CDF_POLYNOMIAL[-1]  # P(u) by Horner's rule, in place: a pass over the block a step
    tail += _CDF_POLYNOMIAL[-2]
    for coefficient in reversed(_CDF_POLYNOMIAL[:-2]):
        tail *= u
        tail += coefficient
    a *= a
    a *= 0.5
    tail -= a
    xp.exp(tail, out=tail)
    tail *= t  # Phi(-|x|), 0 for an infinite x
    cdf = xp.subtract(x > 0, tail, out=tail if out is None else out)  # 1 - Phi(-x) for x > 0, else -Phi(x)
    return xp.abs(cdf, out=cdf)


def gelu_reference(x, out=(None, None)):
    cdf = normal_cdf(x, out=out[1])
    return backend.get_array_module(x).multiply(x, cdf, out=out[0]), cdf


def gelu(x) -> tuple[Any, Any]:
    """``(x Phi(x), Phi(x))``, Phi(x) kept for ``gelu_backward``; on a GPU ``(x Phi(x), None)``:
    the CUDA kernel of the backward computes Phi(x) again (see SOURCE's gelu_forward)."""
    return backend.fused("gelu_forward", lambda x: _in_blocks(gelu_reference, x), _gelu_kernel, x)


def gelu_value(x):
    """``x Phi(x)`` alone, for a forward that no backward follows: on the CPU each block's Phi is
    written where its result then goes, not kept in an array of its own."""
    return backend.fused("gelu_forward", lambda x: _in_blocks(_gelu_value_reference, x), lambda x: _gelu_kernel(x)[0], x)


def _gelu_value_reference(x, out=None):
    return gelu_reference(x, out=(out, out))[0]


def _gelu_kernel(x):
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x)
    if not _fusable(x):
        return gelu_reference(x)
    y = xp.empty_like(x)
    if x.size:
        _launch("gelu_forward", x.size, x, y, xp.int64(x.size))
    return y, None


def gelu_of_sum(x, bias) -> tuple[Any, Any, Any]:
    """``(h, h Phi(h), Phi(h))`` for h = x + bias (on a GPU ``(h, h Phi(h), None)``, as ``gelu``),
    the bias along x's last axis: a Linear's bias and the GELU that follows it (Swin's fc1) in one pass. ``x`` must be the caller's own: h is
    written over it. On the CPU each block of rows gets its bias where GELU's passes then find
    it, in the cores' caches, where a Linear's own bias would be one more pass over memory."""
    return backend.fused("gelu_bias_forward", lambda x, bias: _gelu_of_sum_in_row_blocks(x, bias, keep=True),
                         _gelu_bias_kernel, x, bias)


def gelu_of_sum_value(x, bias):
    """``h Phi(h)`` alone for h = x + bias, for a forward that no backward follows (as ``gelu_value``);
    ``x`` is written over."""
    return backend.fused("gelu_bias_forward", lambda x, bias: _gelu_of_sum_in_row_blocks(x, bias, keep=False),
                         lambda x, bias: _gelu_bias_kernel(x, bias)[1], x, bias)


def _gelu_of_sum_fusable(x, bias) -> bool:
    return _fusable(x, bias) and x.ndim > 0 and bias.shape == x.shape[-1:]


def _gelu_of_sum_in_row_blocks(x, bias, keep: bool):
    if not _gelu_of_sum_fusable(x, bias):
        h = x + bias
        return (h,) + gelu(h) if keep else gelu_value(h)
    xp = backend.get_array_module(x)
    rows = x.reshape(-1, x.shape[-1])  # a view: x is in C order
    y = xp.empty_like(rows)
    cdf = xp.empty_like(rows) if keep else y  # with keep False, each block's Phi where its result goes

    def run(block: slice) -> None:
        h = rows[block]
        h += bias
        gelu_reference(h, out=(y[block], cdf[block]))

    if x.size <= 2 * BLOCK:
        run(slice(None))
    else:
        _in_row_blocks(run, *rows.shape)
    return (x, y.reshape(x.shape), cdf.reshape(x.shape)) if keep else y.reshape(x.shape)


def _gelu_bias_kernel(x, bias):
    xp = backend.get_array_module(x)
    if not _gelu_of_sum_fusable(x, bias):
        return _gelu_of_sum_in_row_blocks(x, bias, keep=True)
    y = xp.empty_like(x)
    if x.size:
        _launch("gelu_bias_forward", x.size, x, bias, y, xp.int64(x.size), xp.int64(bias.size))
    return x, y, None


def gelu_backward_reference(x, cdf, grad, out=None):
    xp = backend.get_array_module(x)
    derivative = xp.multiply(x, -0.5)  # Phi(x) + x phi(x), in place
    derivative *= x
    xp.exp(derivative, out=derivative)
    derivative *= _INV_SQRT_2PI
    derivative *= x
    derivative += cdf
    return xp.multiply(grad, derivative, out=out)


def gelu_backward(x, cdf, grad):
    """``grad (Phi(x) + x phi(x))``, with Phi(x) as ``gelu`` gave it (None on a GPU)."""
    return backend.fused("gelu_backward", _gelu_backward_in_blocks, _gelu_backward_kernel, x, cdf, grad)


def _gelu_backward_in_blocks(x, cdf, grad):
    if grad.shape != x.shape:  # a broadcast gradient: all at once
        return gelu_backward_reference(x, cdf, grad)
    return _in_blocks(gelu_backward_reference, x, cdf, grad)


def _gelu_backward_kernel(x, cdf, grad):
    xp = backend.get_array_module(x)
    x, grad = xp.ascontiguousarray(x), xp.ascontiguousarray(grad)
    if not _fusable(x, grad) or grad.shape != x.shape:  # Phi(x), kept or not, to NumPy's passes
        return gelu_backward_reference(x, normal_cdf(x) if cdf is None else cdf, grad)
    dx = xp.empty_like(x)
    if x.size:
        _launch("gelu_backward", x.size, x, grad, dx, xp.int64(x.size))
    return dx


# ---- dropout


def dropout_keep_reference(uniform, p: float, scale: float):
    return (uniform >= p).astype(uniform.dtype) * scale


def dropout_keep(uniform, p: float, scale: float):
    """Dropout's multiplier: ``scale`` where ``uniform >= p``, else 0, in uniform's dtype."""
    return backend.fused("dropout_keep", lambda u: dropout_keep_reference(u, p, scale),
                         lambda u: _dropout_keep_kernel(u, p, scale), uniform)


def _dropout_keep_kernel(uniform, p: float, scale: float):
    xp = backend.get_array_module(uniform)
    uniform = xp.ascontiguousarray(uniform)
    if not _fusable(uniform):
        return dropout_keep_reference(uniform, p, scale)
    keep = xp.empty_like(uniform)
    if uniform.size:
        _launch("dropout_keep", uniform.size, uniform, keep, xp.float64(p), xp.float64(scale),
                xp.int64(uniform.size))
    return keep


# ---- uint8 pixels to normalised floats


def normalize_pixels_reference(pixels, mean, std):
    images = pixels.astype(mean.dtype)
    images /= 255.0  # in place, each step rounded to the dtype as ToArray's and Normalize's are
    images -= mean
    images /= std
    return images


def normalize_pixels(pixels, mean, std):
    """``(pixels / 255 - mean) / std`` in ``mean``'s dtype: ``pixels`` uint8 ``(..., C, H, W)``, ``mean``
    and ``std`` of shape ``(C, 1, 1)``."""
    return backend.fused("normalize_pixels", normalize_pixels_reference, _normalize_pixels_kernel, pixels, mean, std)


def _normalize_pixels_kernel(pixels, mean, std):
    xp = backend.get_array_module(pixels)
    pixels, mean, std = (xp.ascontiguousarray(a) for a in (pixels, mean, std))
    if (str(pixels.dtype) != "uint8" or not _fusable(mean, std) or pixels.ndim < 3
            or mean.shape != (pixels.shape[-3], 1, 1) or std.shape != mean.shape):
        return normalize_pixels_reference(pixels, mean, std)
    images = xp.empty(pixels.shape, dtype=mean.dtype)
    if pixels.size:
        _launch("normalize_pixels", pixels.size, pixels, mean, std, images, xp.int64(pixels.size),
                xp.int64(pixels.shape[-2] * pixels.shape[-1]), xp.int32(pixels.shape[-3]))
    return images


# ---- softmax over the last axis


def softmax_reference(x, axis: int = -1, out=None, maxima=None):
    """Softmax along ``axis``, written into ``out`` if given; ``maxima``, the rows' maxima, if known."""
    xp = backend.get_array_module(x)
    e = xp.subtract(x, x.max(axis=axis, keepdims=True) if maxima is None else maxima, out=out)
    xp.exp(e, out=e)
    e /= _row_sums(e, axis)
    return e


def softmax(x):
    """Softmax over the last axis."""
    return backend.fused("softmax_forward", _softmax_in_blocks, _softmax_kernel, x)


def _softmax_in_blocks(x):
    if x.ndim == 0 or x.size <= 2 * BLOCK or not _fusable(x):
        return softmax_reference(x)
    rows = x.reshape(-1, x.shape[-1])
    s = backend.get_array_module(x).empty_like(rows)
    _in_row_blocks(lambda block: softmax_reference(rows[block], out=s[block], maxima=_row_maxima(rows[block])),
                   *rows.shape)
    return s.reshape(x.shape)


def _row_maxima(rows):
    """``rows.max(axis=-1, keepdims=True)`` for a C-order ``(rows, n)`` host array, by ``reduceat``
    over the flat array: ``max`` takes short rows (Swin's 49 scores) one call of its loop at a
    time, 1.7x slower. The same maxima."""
    xp = backend.get_array_module(rows)
    return xp.maximum.reduceat(rows.ravel(), xp.arange(0, rows.size, rows.shape[-1]))[:, None]


def _softmax_kernel(x):
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x)
    if not _fusable(x) or x.ndim == 0:
        return softmax_reference(x)
    s = xp.empty_like(x)
    rows, n = _rows(x)
    if x.size:
        _launch("softmax_forward", 32 * rows, x, s, xp.int64(rows), xp.int32(n))
    return s


# ---- the window attention's softmax, with its bias and mask


def add_bias_mask_reference(scores, bias, mask):
    scores += bias  # (windows, heads, N, N) + (heads, N, N)
    if mask is not None:  # the same nW masks for every image of the batch
        by_image = scores.reshape((-1, mask.shape[0]) + scores.shape[1:])  # a view of scores
        by_image += mask[:, None]  # + (nW, 1, N, N)
    return scores


def softmax_of_sum(scores, bias, mask):
    """``softmax(scores + bias + mask)``: ``scores`` ``(windows, heads, N, N)``, ``bias`` ``(heads, N, N)``
    and, unless None, the mask ``(nW, N, N)`` of each window (window w's is ``mask[w % nW]``),
    added one after the other. ``scores``, the caller's own, may be written over. On the CPU each
    block of windows gets its bias and mask where softmax's passes then find them, in the caches;
    on a GPU, one launch."""
    return backend.fused("softmax_bias_mask_forward", _softmax_of_sum_in_blocks, _softmax_of_sum_kernel,
                         scores, bias, mask)


def _bias_mask_fusable(scores, bias, mask) -> bool:
    arrays = (scores, bias) if mask is None else (scores, bias, mask)
    return _fusable(*arrays) and scores.ndim == 4 and bias.shape == scores.shape[1:] and (
        mask is None or (mask.shape[1:] == scores.shape[2:] and len(scores) % len(mask) == 0))


def _softmax_of_sum_in_blocks(scores, bias, mask):
    xp = backend.get_array_module(scores)
    bias = xp.ascontiguousarray(bias)
    if scores.size <= 2 * BLOCK or not _bias_mask_fusable(scores, bias, mask):
        return _softmax_in_blocks(add_bias_mask_reference(scores, bias, mask))
    windows, heads, n, _ = scores.shape
    per_block = max(1, BLOCK // (heads * n * n))  # windows
    if mask is not None:  # a whole number of blocks to an image: a block's masks are consecutive
        per_block = max(d for d in range(1, min(per_block, len(mask)) + 1) if len(mask) % d == 0)
    s = xp.empty_like(scores)

    def run(block: slice) -> None:
        summed = scores[block]
        summed += bias
        if mask is not None:
            first = block.start % len(mask)
            summed += mask[first:first + len(summed), None]
        rows = summed.reshape(-1, n)
        softmax_reference(rows, out=s[block].reshape(-1, n), maxima=_row_maxima(rows))

    for_each_block(run, windows, block=per_block)
    return s


def _softmax_of_sum_kernel(scores, bias, mask):
    xp = backend.get_array_module(scores)
    scores, bias = xp.ascontiguousarray(scores), xp.ascontiguousarray(bias)
    mask = None if mask is None else xp.ascontiguousarray(mask)
    if not _bias_mask_fusable(scores, bias, mask):
        return softmax(add_bias_mask_reference(scores, bias, mask))
    s = xp.empty_like(scores)
    rows, n = _rows(scores)
    if scores.size:
        _launch("softmax_bias_mask_forward", 32 * rows, scores, bias, bias if mask is None else mask, s,
                xp.int64(rows), xp.int32(n), xp.int32(scores.shape[1]), xp.int64(0 if mask is None else len(mask)))
    return s


def softmax_backward_reference(s, grad, axis: int = -1, out=None):
    return backend.get_array_module(s).multiply(s, grad - _row_sums(grad * s, axis), out=out)


def softmax_backward(s, grad):
    """``s (grad - sum(grad s))`` over the last axis, s the softmax."""
    return backend.fused("softmax_backward", _softmax_backward_in_blocks, _softmax_backward_kernel, s, grad)


def _softmax_backward_in_blocks(s, grad):
    if s.ndim == 0 or s.size <= 2 * BLOCK or grad.shape != s.shape or not _fusable(s, grad):
        return softmax_backward_reference(s, grad)
    rows, grad_rows = s.reshape(-1, s.shape[-1]), grad.reshape(-1, s.shape[-1])
    dx = backend.get_array_module(s).empty_like(rows)
    _in_row_blocks(lambda block: softmax_backward_reference(rows[block], grad_rows[block], out=dx[block]), *rows.shape)
    return dx.reshape(s.shape)


def _softmax_backward_kernel(s, grad):
    xp = backend.get_array_module(s)
    s, grad = xp.ascontiguousarray(s), xp.ascontiguousarray(grad)
    if not _fusable(s, grad) or grad.shape != s.shape or s.ndim == 0:
        return softmax_backward_reference(s, grad)
    dx = xp.empty_like(s)
    rows, n = _rows(s)
    if s.size:
        _launch("softmax_backward", 32 * rows, s, grad, dx, xp.int64(rows), xp.int32(n))
    return dx


# ---- LayerNorm over the last axis


def layer_norm_reference(x, weight, bias, eps: float, out=(None, None, None)):
    """``layer_norm``'s NumPy passes, written into ``out``, ``(y, normalized, rstd)``, if given
    (with a weight)."""
    xp = backend.get_array_module(x)
    y, normalized, rstd = out
    n = x.shape[-1]
    normalized = xp.subtract(x, _row_sums(x) / n, out=normalized)  # centred, then normalized in place
    rstd = xp.divide(_row_sums(normalized * normalized), n, out=rstd)
    rstd += eps
    xp.sqrt(rstd, out=rstd)
    xp.reciprocal(rstd, out=rstd)
    normalized *= rstd
    if weight is None:
        return (normalized if bias is None else normalized + bias), normalized, rstd
    y = xp.multiply(normalized, weight, out=y)
    if bias is not None:
        y += bias
    return y, normalized, rstd


def layer_norm(x, weight, bias, eps: float):
    """``(y, normalized, rstd)``: y = normalized w + b, normalized = (x - mean) rstd, rstd of
    shape ``x.shape[:-1] + (1,)``; ``weight`` and ``bias`` may be None."""
    return backend.fused("layer_norm_forward", lambda *arrays: _layer_norm_in_blocks(*arrays, eps),
                         lambda *arrays: _layer_norm_kernel(*arrays, eps), x, weight, bias)


def _layer_norm_fusable(x, weight, bias) -> bool:
    """Whether the fused forwards (the CUDA kernel, the host's row blocks) take these arrays."""
    return (weight is not None and bias is not None and _fusable(x, weight, bias) and x.ndim > 0
            and weight.shape == x.shape[-1:] and bias.shape == weight.shape)


def layer_norm_value(x, weight, bias, eps: float):
    """``layer_norm``'s y alone, for a forward that no backward follows: on the CPU y is
    normalized in place, where ``layer_norm`` keeps the normalized x in an array of its own."""
    return backend.fused("layer_norm_forward", lambda *arrays: _layer_norm_in_blocks(*arrays, eps, keep=False)[0],
                         lambda *arrays: _layer_norm_kernel(*arrays, eps)[0], x, weight, bias)


def _layer_norm_in_blocks(x, weight, bias, eps: float, keep: bool = True):
    """``layer_norm_reference`` in row blocks; with ``keep`` False, y and the normalized x share
    one array."""
    xp = backend.get_array_module(x)
    if not _layer_norm_fusable(x, weight, bias):
        return layer_norm_reference(x, weight, bias, eps)
    if x.size <= 2 * BLOCK:  # at once, on one thread
        shared = None if keep else xp.empty_like(x)
        return layer_norm_reference(x, weight, bias, eps, out=(shared, shared, None))
    rows = x.reshape(-1, x.shape[-1])
    y, rstd = xp.empty_like(rows), xp.empty((len(rows), 1), dtype=x.dtype)
    normalized = xp.empty_like(rows) if keep else y
    _in_row_blocks(lambda block: layer_norm_reference(rows[block], weight, bias, eps,
                                                      out=(y[block], normalized[block], rstd[block])), *rows.shape)
    return y.reshape(x.shape), normalized.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,))


def _layer_norm_kernel(x, weight, bias, eps: float):
    xp = backend.get_array_module(x)
    if weight is None or bias is None:
        return layer_norm_reference(x, weight, bias, eps)
    x, weight, bias = (xp.ascontiguousarray(a) for a in (x, weight, bias))
    if not _layer_norm_fusable(x, weight, bias):
        return layer_norm_reference(x, weight, bias, eps)
    rows, n = _rows(x)
    y, normalized = xp.empty_like(x), xp.empty_like(x)
    rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    if x.size:
        _launch("layer_norm_forward", 32 * rows, x, weight, bias, y, normalized, rstd, xp.int64(rows),
                xp.int32(n), xp.float64(eps))
    return y, normalized, rstd


def layer_norm_backward_reference(grad, normalized, rstd, weight, out=None):
    n = grad.shape[-1]
    g = grad if weight is None else _scaled(grad, weight)
    inner = backend.get_array_module(grad).subtract(g, _row_sums(g) / n, out=out)
    inner -= _scaled(normalized, _row_sums(g * normalized) / n)
    inner *= rstd
    return inner


def layer_norm_backward(grad, normalized, rstd, weight):
    """dx of LayerNorm: ``rstd (g - mean(g) - normalized mean(g normalized))``, g = grad w
    (``weight`` may be None)."""
    return backend.fused("layer_norm_backward", _layer_norm_backward_in_blocks, _layer_norm_backward_kernel,
                         grad, normalized, rstd, weight)


def _layer_norm_backward_fusable(grad, normalized, rstd, weight) -> bool:
    """Whether the fused backwards (the CUDA kernel, the host's row blocks) take these arrays."""
    return (weight is not None and _fusable(grad, normalized, rstd, weight) and grad.ndim > 0
            and grad.shape == normalized.shape)


def _layer_norm_backward_in_blocks(grad, normalized, rstd, weight):
    if grad.size <= 2 * BLOCK or not _layer_norm_backward_fusable(grad, normalized, rstd, weight):
        return layer_norm_backward_reference(grad, normalized, rstd, weight)
    xp, n = backend.get_array_module(grad), grad.shape[-1]
    grad_rows, normalized_rows, rstd_rows = grad.reshape(-1, n), normalized.reshape(-1, n), rstd.reshape(-1, 1)
    dx = xp.empty_like(grad_rows)
    _in_row_blocks(lambda block: layer_norm_backward_reference(grad_rows[block], normalized_rows[block],
                                                               rstd_rows[block], weight, out=dx[block]),
                   *grad_rows.shape)
    return dx.reshape(grad.shape)


def _layer_norm_backward_kernel(grad, normalized, rstd, weight):
    xp = backend.get_array_module(grad)
    if weight is None:
        return layer_norm_backward_reference(grad, normalized, rstd, weight)
    grad, normalized, rstd, weight = (xp.ascontiguousarray(a) for a in (grad, normalized, rstd, weight))
    if not _layer_norm_backward_fusable(grad, normalized, rstd, weight):
        return layer_norm_backward_reference(grad, normalized, rstd, weight)
    rows, n = _rows(grad)
    dx = xp.empty_like(grad)
    if grad.size:
        _launch("layer_norm_backward", 32 * rows, grad, normalized, rstd, weight, dx, xp.int64(rows), xp.int32(n))
    return dx


# ---- Sums over rows: a bias's gradient, LayerNorm's weight's


def column_sums(x, out=None):
    """The sum of ``x`` over every axis but the last (a Linear's bias gradient), into ``out`` if
    given. On a GPU, one launch of the ``column_sums`` kernel."""
    return backend.fused("column_sums", _column_sums_reference, _column_sums_kernel, x, None, out, None)


def column_sums_with_products(x, y, out=(None, None)):
    """``(sums of x, sums of x y)`` over every axis but the last (LayerNorm's bias and weight
    gradients), into ``out`` if given. On a GPU, both in one launch, reading x once."""
    return backend.fused("column_sums", _column_sums_reference, _column_sums_kernel, x, y, *out)


def _column_sums_reference(x, y, sums, products):
    leading = tuple(range(x.ndim - 1))
    if y is None:
        return x.sum(axis=leading, out=sums)
    return x.sum(axis=leading, out=sums), (x * y).sum(axis=leading, out=products)


_SUM_BLOCKS = 1024  # blocks of a column sum: some eight for each of an H100's or H200's 132 SMs
_MAX_TILES = 1024  # of 32 columns: rows of up to 32768 columns


@functools.cache
def _tile_counters():
    """The column sums' counts of finished blocks, one a tile, each set back to 0 by its last block."""
    cupy = backend.array_module_for("gpu")
    return cupy.zeros(_MAX_TILES, dtype=cupy.uint32)


def _column_sums_kernel(x, y, sums, products):
    xp = backend.get_array_module(x)
    n = x.shape[-1] if x.ndim else 0
    arrays = [a for a in (x, y, sums, products) if a is not None]
    if (not x.size or not _fusable(*arrays) or (y is not None and y.shape != x.shape) or -(-n // 32) > _MAX_TILES
            or any(out is not None and out.shape != (n,) for out in (sums, products))):
        return NotImplemented
    rows, tiles = x.size // n, -(-n // 32)
    chunk_rows = -(-rows // max(1, min(_SUM_BLOCKS // tiles, rows // 64)))  # each block some 64 rows or more
    chunks = -(-rows // chunk_rows)
    sums = xp.empty(n, dtype=x.dtype) if sums is None else sums
    if y is not None and products is None:
        products = xp.empty(n, dtype=x.dtype)
    partial_sums, partial_products = xp.empty((chunks, n)), xp.empty((chunks, n))  # float64
    _launch("column_sums", 256 * tiles * chunks, x, x if y is None else y, partial_sums, partial_products, sums,
            sums if y is None else products, _tile_counters(), xp.int32(y is not None), xp.int64(rows),
            xp.int32(n), xp.int64(chunk_rows))
    return sums if y is None else (sums, products)


# ---- Adam's step


def adam_update(parameter, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, factor: float, added: float, beta1: float,
                beta2: float, eps: float, step_size: float, root_correction: float):
    """The CUDA kernel of Adam's whole step, in place (the reference, and the meaning of each
    argument: ``optim.adam.adam_step_``); NotImplemented for arrays it does not take, for which
    ``backend.fused`` runs the reference."""
    xp = backend.get_array_module(parameter)
    arrays = [a for a in (parameter, grad, exp_avg, exp_avg_sq, max_exp_avg_sq) if a is not None]
    if not _fusable(*arrays) or any(a.shape != parameter.shape for a in arrays):
        return NotImplemented
    if parameter.size:
        amsgrad = max_exp_avg_sq is not None
        _launch("adam_update", parameter.size, *arrays[:4], max_exp_avg_sq if amsgrad else exp_avg_sq,
                xp.int32(amsgrad), xp.int64(parameter.size),
                *(xp.float64(value) for value in (factor, added, beta1, beta2, eps, step_size, root_correction)))
    return None


def radam_update(parameter, grad, exp_avg, exp_avg_sq, factor: float, added: float, beta1: float, beta2: float,
                 correction1: float, lr: float, eps: float, root_correction: float, rect: float | None):
    """The CUDA kernel of RAdam's whole step, in place (the reference: ``optim.radam.radam_step_``);
    NotImplemented for arrays it does not take."""
    xp = backend.get_array_module(parameter)
    arrays = (parameter, grad, exp_avg, exp_avg_sq)
    if not _fusable(*arrays) or any(a.shape != parameter.shape for a in arrays):
        return NotImplemented
    if parameter.size:
        _launch("radam_update", parameter.size, *arrays, xp.int64(parameter.size),
                *(xp.float64(value) for value in (factor, added, beta1, beta2, correction1, lr)),
                xp.int32(rect is not None), *(xp.float64(value) for value in (eps, root_correction, rect or 0.0)))
    return None


def sgd_update(parameter, grad, buffer, weight_decay: float, momentum: float, dampening_complement: float,
               first: bool, nesterov: bool, lr: float):
    """The CUDA kernel of SGD's whole step, in place (the reference: ``optim.sgd.sgd_step_``);
    NotImplemented for arrays it does not take."""
    xp = backend.get_array_module(parameter)
    arrays = (parameter, grad) if buffer is None else (parameter, grad, buffer)
    if not _fusable(*arrays) or any(a.shape != parameter.shape for a in arrays):
        return NotImplemented
    if parameter.size:
        _launch("sgd_update", parameter.size, parameter, grad, grad if buffer is None else buffer,
                xp.int64(parameter.size), *(xp.float64(value) for value in (weight_decay, momentum,
                                                                            dampening_complement)),
                xp.int32(first), xp.int32(nesterov), xp.float64(lr))
    return None
