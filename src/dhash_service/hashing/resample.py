"""Pillow 13's 8-bit LANCZOS resize to the dhash grid, bit for bit, as two matrix products.

Why not ``image.resize``: for the few output pixels a hash needs, Pillow spends most of its time
in a scalar loop over every source pixel (0.8 ms of a 2.9 ms hash at 640x480). The same sums as
a float64 BLAS matrix product take a quarter of that. Every product of an 8-bit pixel and a
22-bit fixed-point coefficient, and every sum of them, is an integer below 2**53, so float64
arithmetic is exact in any summation order, and rounding and clipping exactly as Pillow does
(``src/libImaging/Resample.c``) gives Pillow's pixels. Only a Pillow version whose output was
verified against this (``tests/unit/test_hash_resample.py``) takes this path; any other falls
back to ``image.resize``, so an upgrade can cost speed, never a hash.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import PIL
from PIL import Image

# Pillow releases whose resize this reproduces (verified by the tests named above).
VERIFIED_PILLOW_MAJOR = "13"
ACTIVE = PIL.__version__.split(".")[0] == VERIFIED_PILLOW_MAJOR

_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling: 32 - 8 - 2
_ONE = float(1 << _PRECISION_BITS)
_INVERSE_ONE = 1.0 / _ONE
_HALF = float(1 << (_PRECISION_BITS - 1))
_SUPPORT = 3.0  # LANCZOS (a = 3)

# OpenBLAS runs a matrix product on every core once m*n*k exceeds 65536 * 4. Hashing must stay on
# one core (the service runs items in parallel already, and on a busy machine the threads' hand-
# offs cost more than they save: measured twice as slow at 12 MP), so every product is cut into
# blocks below that, over rows and, for a long side, over the input positions too.
_BLAS_SINGLE_THREAD_MNK = 65536 * 4


def resize_lanczos(image: Image.Image, width: int, height: int) -> np.ndarray:
    """``np.asarray(image.resize((width, height), LANCZOS))`` for a mode ``L`` image."""
    if not ACTIVE or image.mode != "L":
        return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    pixels = np.asarray(image)
    in_height, in_width = pixels.shape
    if height < in_height and in_height - height > 2 * (in_width - width):
        # Pillow 13 runs the vertical pass first when the height shrinks much more than the width
        # (python-pillow/Pillow#9549); the rounding between the passes makes the order visible.
        return np.ascontiguousarray(_pass(_pass(pixels.T, height).T, width))
    return np.ascontiguousarray(_pass(_pass(pixels, width).T, height).T)


def _pass(rows: np.ndarray, out_size: int) -> np.ndarray:
    """Resample each row of ``rows`` (2-D, uint8) to ``out_size`` values, rounding as Pillow."""
    in_size = rows.shape[1]
    if in_size == out_size:
        return rows  # Pillow skips a pass that does not change the size
    weights = (
        _cached_coefficients(in_size, out_size)
        if in_size <= _CACHED_MAX_SIDE
        else _coefficients(in_size, out_size)
    )
    out = _products(rows, weights)
    out += _HALF
    out *= _INVERSE_ONE  # exact: a power of two
    np.floor(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _products(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``rows @ weights`` in float64, in blocks of at most ``_BLAS_SINGLE_THREAD_MNK``
    multiply-adds, so OpenBLAS stays on one thread whatever the shape.

    A long input side is cut along the input positions as well as the rows: a 65,535-pixel side
    to 9 is 590,000 multiply-adds for a single row, which cut only by rows ran threaded (4.8 s of
    CPU for a 65,535 x 976 image, 0.42 s blocked). The partial sums are integers below 2**53,
    exact in float64, so the blocks add up to exactly the unblocked sums.
    """
    if not rows.flags.c_contiguous and rows.T.flags.c_contiguous:
        return _products_of_transposed(rows.T, weights)
    n_rows, in_size = rows.shape
    out_size = weights.shape[1]
    k_step = max(1, min(in_size, _BLAS_SINGLE_THREAD_MNK // out_size))
    row_step = max(1, _BLAS_SINGLE_THREAD_MNK // (k_step * out_size))
    out: np.ndarray
    if n_rows <= row_step and in_size <= k_step:
        out = np.matmul(rows.astype(np.float64), weights)
        return out
    out = np.zeros((n_rows, out_size), dtype=np.float64)
    for start in range(0, n_rows, row_step):
        block = rows[start : start + row_step]
        target = out[start : start + row_step]
        if in_size <= k_step:
            np.matmul(block.astype(np.float64), weights, out=target)
            continue
        for k in range(0, in_size, k_step):
            part = block[:, k : k + k_step].astype(np.float64)
            target += np.matmul(part, weights[k : k + k_step])
    return out


def _products_of_transposed(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``image.T @ weights`` for a row-major ``image`` (the vertical pass run first), as
    ``(weights.T @ image).T`` in blocks of whole image rows: read as stored, not gathered column
    by column (a 976 x 65,535 strip: 2.7 s gathered, see bench/RESULTS.md for this way)."""
    in_size, n_columns = image.shape
    out_size = weights.shape[1]
    column_step = max(1, min(n_columns, _BLAS_SINGLE_THREAD_MNK // out_size))
    k_step = max(1, _BLAS_SINGLE_THREAD_MNK // (column_step * out_size))
    out = np.zeros((out_size, n_columns), dtype=np.float64)
    for start in range(0, n_columns, column_step):
        target = out[:, start : start + column_step]
        for k in range(0, in_size, k_step):
            block = image[k : k + k_step, start : start + column_step].astype(np.float64)
            target += np.matmul(weights[k : k + k_step].T, block)
    return out.T


# Weight matrices are in_size x out_size float64: 0.3 MB for a 4000-pixel side. Sides up to this
# are cached (at most 32 matrices, 26 MB for dhash256 in the worst case); beyond it, computing
# them (5 ms for an 8000-pixel side) is small next to decoding such an image.
_CACHED_MAX_SIDE = 6000


@lru_cache(maxsize=32)
def _cached_coefficients(in_size: int, out_size: int) -> np.ndarray:
    return _coefficients(in_size, out_size)


def _coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point LANCZOS weights as an ``in_size x out_size`` matrix, zero outside
    each output's window (``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in Resample.c)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate
    count = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    valid = taps[None, :] < count[:, None]
    arguments = ((xmin[:, None] + taps[None, :]).astype(np.float64) - center[:, None] + 0.5) * (
        1.0 / filterscale
    )
    weights = _normalized(arguments, valid)
    if _near_rounding_tie(weights):
        weights = _normalized_with_libm(arguments, valid)
    scaled = weights * _ONE
    fixed = np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5))  # C: (int)(±0.5 + w)
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    for column in range(out_size):
        n, start = int(count[column]), int(xmin[column])
        matrix[start : start + n, column] = fixed[column, :n]
    matrix.flags.writeable = False
    return matrix


def _normalized(arguments: np.ndarray, valid: np.ndarray) -> np.ndarray:
    raw = np.where(valid, _lanczos(arguments), 0.0)
    # Pillow sums the weights left to right; a cumulative sum adds in the same order.
    total = np.add.accumulate(raw, axis=1)[:, -1:]
    return np.where(total != 0.0, raw / np.where(total != 0.0, total, 1.0), raw)


def _lanczos(x: np.ndarray) -> np.ndarray:
    inside = (x >= -_SUPPORT) & (x < _SUPPORT)
    return np.where(inside, _sinc(x) * _sinc(x / 3), 0.0)


def _sinc(x: np.ndarray) -> np.ndarray:
    scaled = x * math.pi
    safe = np.where(x == 0.0, 1.0, scaled)
    return np.where(x == 0.0, 1.0, np.sin(safe) / safe)


def _near_rounding_tie(weights: np.ndarray) -> bool:
    """Whether a weight lies so close to a fixed-point rounding boundary that a sine one unit in
    the last place off libm's (a vectorised ``np.sin``) could round it the other way."""
    fraction = np.abs(weights * _ONE) % 1.0
    return bool(np.any(np.abs(fraction - 0.5) < 1e-6))


def _normalized_with_libm(arguments: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The slow, certain path: every weight from ``math.sin`` (the C library's, as Pillow)."""
    out = np.zeros_like(arguments)
    for row in range(arguments.shape[0]):
        values = [_lanczos_scalar(float(a)) for a in arguments[row][valid[row]]]
        total = 0.0
        for value in values:
            total += value
        out[row, : len(values)] = [v / total if total != 0.0 else v for v in values]
    return out


def _lanczos_scalar(x: float) -> float:
    if not -_SUPPORT <= x < _SUPPORT:
        return 0.0
    return _sinc_scalar(x) * _sinc_scalar(x / 3)


def _sinc_scalar(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x
