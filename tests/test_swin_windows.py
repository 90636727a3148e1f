"""swin.windows: partition/reverse, cyclic shift, relative position index and shifted-window mask,
each checked against an independent construction (explicit loops, np.roll, the official labelling),
on the CPU and on the GPU path."""
import numpy as np
import pytest

import minigrad
from minigrad import backend
from minigrad.tensor import Tensor
from swin import (cyclic_shift, relative_offset_one_hot, relative_position_index, shifted_window_mask, window_partition,
                  window_reverse)
from swin.windows import MASK_VALUE

SHAPES = [  # (B, H, W, C, M)
    (1, 4, 4, 1, 2),
    (2, 8, 12, 3, 4),
    (3, 14, 7, 5, 7),
    (2, 6, 6, 2, 6),  # one window covering the whole map
]


def random_map(b, h, w, c, seed=0):
    return np.random.default_rng(seed).standard_normal((b, h, w, c)).astype(np.float32)


def on(device, array, as_tensor):
    """The same values as a raw array or a Tensor on ``device``."""
    return Tensor(array, device=device) if as_tensor else backend.to_device(array, device)


def host(value):
    return value.numpy() if isinstance(value, Tensor) else backend.asnumpy(value)


def windows_by_loop(x, m):
    """The partition order spelt out: batch outermost, then window rows, then window columns."""
    b, h, w, _ = x.shape
    return np.stack([x[n, i * m:(i + 1) * m, j * m:(j + 1) * m]
                     for n in range(b) for i in range(h // m) for j in range(w // m)])


# ---- window_partition / window_reverse


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_partition_then_reverse_is_the_identity(device, shape, as_tensor):
    b, h, w, c, m = shape
    x = random_map(b, h, w, c)
    windows = window_partition(on(device, x, as_tensor), m)
    assert windows.shape == (b * (h // m) * (w // m), m, m, c)
    back = window_reverse(windows, m, h, w)
    assert isinstance(back, Tensor) == as_tensor
    assert backend.device_of(back.data if as_tensor else back) == device
    np.testing.assert_array_equal(host(back), x)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_partition_order_is_row_major_over_windows_batch_outermost(device, shape, as_tensor):
    b, h, w, c, m = shape
    x = random_map(b, h, w, c, seed=1)
    np.testing.assert_array_equal(host(window_partition(on(device, x, as_tensor), m)), windows_by_loop(x, m))


def test_reverse_inverts_partition_from_the_windows_side():
    m, h, w = 3, 6, 9
    windows = np.random.default_rng(2).standard_normal((2 * (h // m) * (w // m), m, m, 4))
    np.testing.assert_array_equal(window_partition(window_reverse(windows, m, h, w), m), windows)


@pytest.mark.parametrize("h, w", [(10, 8), (8, 10)], ids=["rows", "columns"])
def test_partition_refuses_a_map_that_does_not_split_into_windows(h, w):
    with pytest.raises(ValueError, match=f"{h}x{w} map does not split into 4x4"):
        window_partition(np.zeros((1, h, w, 2)), 4)


# ---- cyclic_shift


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
@pytest.mark.parametrize("shift", [1, 2, 3, -2])
def test_cyclic_shift_is_roll_by_minus_shift_and_undoes(device, shift, as_tensor):
    x = random_map(2, 6, 8, 3, seed=3)
    shifted = cyclic_shift(on(device, x, as_tensor), shift)
    np.testing.assert_array_equal(host(shifted), np.roll(x, (-shift, -shift), axis=(1, 2)))
    np.testing.assert_array_equal(host(cyclic_shift(shifted, -shift)), x)


def test_window_functions_pass_gradients_through():
    x = Tensor(np.random.default_rng(4).standard_normal((2, 4, 8, 3)), requires_grad=True)

    def shifted_windows_and_back(t):
        return cyclic_shift(window_reverse(window_partition(cyclic_shift(t, 1), 2) * 3.0, 2, 4, 8), -1)

    assert minigrad.gradcheck(shifted_windows_and_back, [x])


# ---- relative_position_index


def test_relative_position_index_for_a_2x2_window():
    # Published in the docstring and the official code's derivation for M = 2.
    expected = [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    np.testing.assert_array_equal(relative_position_index(2), expected)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7])
def test_relative_position_index_matches_the_formula_pair_by_pair(device, m):
    index = relative_position_index(m, device)
    assert backend.device_of(index) == device
    assert np.issubdtype(index.dtype, np.integer)
    expected = np.zeros((m * m, m * m), dtype=np.int64)
    for i in range(m * m):
        for j in range(m * m):
            dh, dw = i // m - j // m, i % m - j % m
            expected[i, j] = (dh + m - 1) * (2 * m - 1) + (dw + m - 1)
    index = backend.asnumpy(index)
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(index, backend.asnumpy(relative_position_index(m)))
    assert index.min() == 0 and index.max() == (2 * m - 1) ** 2 - 1  # every table row is reachable


def test_relative_offset_one_hot_for_a_2x2_window():
    expected = [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]  # offsets 1, 0, 2, 1 (the docstring's)
    np.testing.assert_array_equal(relative_offset_one_hot(2), expected)


@pytest.mark.parametrize("m", [1, 3, 7])
def test_relative_offset_one_hot_marks_each_pairs_offset_once(device, m):
    one_hot = relative_offset_one_hot(m, device)
    assert backend.device_of(one_hot) == device and one_hot.dtype == np.float32
    expected = np.zeros((m * m, 2 * m - 1), dtype=np.float32)
    for i in range(m):
        for j in range(m):
            expected[i * m + j, i - j + m - 1] = 1.0
    np.testing.assert_array_equal(backend.asnumpy(one_hot), expected)


# ---- shifted_window_mask


def official_region_labels(h, w, m, shift):
    """The labelling of the official code: 3 x 3 slices of an H x W map, numbered row-major."""
    labels = np.zeros((1, h, w, 1))
    count = 0
    for rows in (slice(0, -m), slice(-m, -shift), slice(-shift, None)):
        for cols in (slice(0, -m), slice(-m, -shift), slice(-shift, None)):
            labels[:, rows, cols, :] = count
            count += 1
    return labels


MASK_CASES = [  # (H, W, M, shift)
    (4, 4, 2, 1),
    (8, 8, 4, 2),
    (14, 14, 7, 3),
    (8, 12, 4, 2),
    (12, 6, 3, 1),
]


@pytest.mark.parametrize("h, w, m, shift", MASK_CASES)
def test_shifted_window_mask_is_minus_100_exactly_between_regions(device, h, w, m, shift):
    mask = shifted_window_mask(h, w, m, shift, device)
    assert backend.device_of(mask) == device
    assert mask.shape == ((h // m) * (w // m), m * m, m * m)
    assert mask.dtype == np.float32
    labels = windows_by_loop(official_region_labels(h, w, m, shift), m).reshape(-1, m * m)
    different = labels[:, :, None] != labels[:, None, :]
    mask = backend.asnumpy(mask)
    assert MASK_VALUE == -100.0
    assert np.all(mask[different] == -100.0)
    assert np.all(mask[~different] == 0.0)
    np.testing.assert_array_equal(mask, backend.asnumpy(shifted_window_mask(h, w, m, shift)))


@pytest.mark.parametrize("h, w, m, shift", MASK_CASES)
def test_windows_that_do_not_straddle_regions_are_unmasked(h, w, m, shift):
    mask = shifted_window_mask(h, w, m, shift)
    assert not mask[0].any()  # the top-left window lies inside one region
    assert mask[-1].min() == -100.0  # the bottom-right window holds four regions
    assert not shifted_window_mask(h, w, m, 0).any()  # no shift: every window is one region
