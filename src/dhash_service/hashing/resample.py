"""Pillow 13's 8-bit LANCZOS resize to the dhash grid, bit for bit, as two matrix products.

Why not ``image.resize``: for the few output pixels a hash needs, Pillow spends most of its time
in a scalar loop over every source pixel (0.8 ms of a 2.9 ms hash at 640x480). The same sums as
a float64 BLAS matrix product take a quarter of that. Every product of an 8-bit pixel and a
22-bit fixed-point coefficient, and every sum of them, is an integer below 2**53, so float64
arithmetic is exact in any summation order, and rounding and clipping exactly as Pillow does
(``src/libImaging/Resample.c``) gives Pillow's pixels. Only a Pillow version whose output was
verified against this (``tests/unit/test_hash_resample.py``) takes this path; any other falls
back to ``image.resize``, so an upgrade can cost speed, never a hash.

What it costs is bounded by the output, not by the long side: each output pixel's weights cover
a window of about 6 x long side / grid input positions, made and used in blocks of ``_TAPS``
(the running sum that normalises them carries across blocks in Pillow's order). Up to
``_DENSE_MAX_SIDE`` the blocks fill a dense matrix for BLAS; past it they are used as they are
made, so a 12,000,000 x 1 strip resizes in ~16 MB where the dense weights took 4.6 GB. The time
stays linear in the long side (two sines per weight). A caller's ``check`` (the request's time
budget) is called between blocks, about every millisecond of work, so a resize past its budget
stops there rather than when it is done; the check raises, this module never reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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


# Work between two calls of the caller's check, in multiply-adds: about a millisecond here. A
# weight made costs about _TAP_WORK of them (two sines, ~17 ns), one made with ``math.sin``
# _LIBM_TAP_WORK, so a block of _TAPS weights is one check. An ordinary 1920x1080 hash (~19M
# multiply-adds) makes ~20 checks: nothing next to its ~3 ms (bench/RESULTS.md, session 6).
_CHECK_WORK = 1 << 20
_TAP_WORK = 16
_LIBM_TAP_WORK = 256


class _Pacer:
    """Calls the caller's ``check`` before the first block of work and then before each block
    that follows at least ``_CHECK_WORK`` of work done, so it runs often enough to stop a long
    resize within about a block, and rarely enough to cost nothing on an ordinary one."""

    __slots__ = ("_check", "_owed")

    def __init__(self, check: Callable[[], None] | None) -> None:
        self._check = check
        self._owed = _CHECK_WORK  # the first block is checked: an expired budget does no work

    def before(self, work: int) -> None:
        """Account for a block of ``work`` about to run; may raise whatever ``check`` raises."""
        if self._check is None:
            return
        if self._owed >= _CHECK_WORK:
            self._owed = 0
            self._check()
        self._owed += work


def resize_lanczos(
    image: Image.Image, width: int, height: int, check: Callable[[], None] | None = None
) -> np.ndarray:
    """``np.asarray(image.resize((width, height), LANCZOS))`` for a mode ``L`` image.

    ``check`` is called between blocks of work and stops the resize by raising (the caller's
    time budget); it does not change the result.
    """
    pace = _Pacer(check)
    if not ACTIVE or image.mode != "L":
        pace.before(0)  # Pillow's own loop cannot be stopped midway: checked before it only
        return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    pace.before(image.width * image.height)  # the copy below: ~0.1 s at 64 MP, not stoppable
    pixels = np.asarray(image)
    in_height, in_width = pixels.shape
    if height < in_height and in_height - height > 2 * (in_width - width):
        # Pillow 13 runs the vertical pass first when the height shrinks much more than the width
        # (python-pillow/Pillow#9549); the rounding between the passes makes the order visible.
        return np.ascontiguousarray(_pass(_pass(pixels.T, height, pace).T, width, pace))
    return np.ascontiguousarray(_pass(_pass(pixels, width, pace).T, height, pace).T)


def _pass(rows: np.ndarray, out_size: int, pace: _Pacer | None = None) -> np.ndarray:
    """Resample each row of ``rows`` (2-D, uint8) to ``out_size`` values, rounding as Pillow."""
    pace = pace or _Pacer(None)
    in_size = rows.shape[1]
    if in_size == out_size:
        return rows  # Pillow skips a pass that does not change the size
    if in_size > _DENSE_MAX_SIDE:
        out = _streamed_products(rows, out_size, pace)
    else:
        weights = (
            _cached_coefficients(in_size, out_size)
            if in_size <= _CACHED_MAX_SIDE
            else _coefficients(in_size, out_size, pace)
        )
        out = _products(rows, weights, pace)
    out += _HALF
    _wrap_like_int32(out)
    out *= _INVERSE_ONE  # exact: a power of two
    np.floor(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _products(rows: np.ndarray, weights: np.ndarray, pace: _Pacer) -> np.ndarray:
    """``rows @ weights`` in float64, in blocks of at most ``_BLAS_SINGLE_THREAD_MNK``
    multiply-adds, so OpenBLAS stays on one thread whatever the shape.

    A long input side is cut along the input positions as well as the rows: a 65,535-pixel side
    to 9 is 590,000 multiply-adds for a single row, which cut only by rows ran threaded (4.8 s of
    CPU for a 65,535 x 976 image, 0.42 s blocked). The partial sums are integers below 2**53,
    exact in float64, so the blocks add up to exactly the unblocked sums.
    """
    if not rows.flags.c_contiguous and rows.T.flags.c_contiguous:
        return _products_of_transposed(rows.T, weights, pace)
    n_rows, in_size = rows.shape
    out_size = weights.shape[1]
    k_step = max(1, min(in_size, _BLAS_SINGLE_THREAD_MNK // out_size))
    row_step = max(1, _BLAS_SINGLE_THREAD_MNK // (k_step * out_size))
    out: np.ndarray
    if n_rows <= row_step and in_size <= k_step:
        pace.before(n_rows * in_size * out_size)
        out = np.matmul(rows.astype(np.float64), weights)
        return out
    out = np.zeros((n_rows, out_size), dtype=np.float64)
    for start in range(0, n_rows, row_step):
        block = rows[start : start + row_step]
        target = out[start : start + row_step]
        if in_size <= k_step:
            pace.before(len(block) * in_size * out_size)
            np.matmul(block.astype(np.float64), weights, out=target)
            continue
        for k in range(0, in_size, k_step):
            pace.before(len(block) * k_step * out_size)
            part = block[:, k : k + k_step].astype(np.float64)
            target += np.matmul(part, weights[k : k + k_step])
    return out


def _streamed_products(rows: np.ndarray, out_size: int, pace: _Pacer) -> np.ndarray:
    """``rows @ weights`` without the weight matrix: each output's window is made and used in
    blocks of ``_TAPS`` weights, each block's product in pieces of at most
    ``_BLAS_SINGLE_THREAD_MNK`` values. Memory stays a few blocks whatever the long side; the
    work is the window's taps (about 6 x the long side) and the pixels they touch."""
    transposed = not rows.flags.c_contiguous and rows.T.flags.c_contiguous
    image = rows.T if transposed else rows  # read as stored: rows of the image either way
    n_rows = rows.shape[0]
    piece = max(1, _BLAS_SINGLE_THREAD_MNK // n_rows)
    out = np.zeros((n_rows, out_size), dtype=np.float64)
    for column, window in enumerate(_windows(rows.shape[1], out_size)):
        try:
            out[:, column] = _window_product(
                image, window, piece, transposed, exact=False, pace=pace
            )
        except _NearTie:
            out[:, column] = _window_product(
                image, window, piece, transposed, exact=True, pace=pace
            )
    return out


def _window_product(
    image: np.ndarray, window: _Window, piece: int, transposed: bool, *, exact: bool, pace: _Pacer
) -> np.ndarray:
    n_rows = image.shape[1] if transposed else image.shape[0]
    total = np.zeros(n_rows, dtype=np.float64)
    for position, fixed in window.iter_fixed(exact, pace):
        for k in range(0, len(fixed), piece):
            weights = fixed[k : k + piece]
            pace.before(len(weights) * n_rows)
            span = slice(position + k, position + k + len(weights))
            # einsum, not BLAS: OpenBLAS threads a matrix-vector product from ~10,000 values
            # (measured 5-130 ns per value on a busy machine, against 0.7 here).
            if transposed:
                total += np.einsum("k,kr->r", weights, image[span].astype(np.float64))
            else:
                total += np.einsum("rk,k->r", image[:, span].astype(np.float64), weights)
    return total


def _wrap_like_int32(sums: np.ndarray) -> None:
    """Pillow adds the products in a C ``int``, which wraps past 2**31, and float64 does not. No
    shape is known to get there: the positive weights sum to ~1.1 x 2**22, times 255 is ~1.2e9.
    But rounding millions of tiny weights has no tight bound, so the exact sums wrap the same."""
    if sums.size and (sums.max() >= 2.0**31 or sums.min() < -(2.0**31)):
        np.subtract(np.mod(sums + 2.0**31, 2.0**32), 2.0**31, out=sums)


def _products_of_transposed(image: np.ndarray, weights: np.ndarray, pace: _Pacer) -> np.ndarray:
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
            pace.before(min(k_step, in_size - k) * target.shape[1] * out_size)
            block = image[k : k + k_step, start : start + column_step].astype(np.float64)
            target += np.matmul(weights[k : k + k_step].T, block)
    return out.T


# Weight matrices are in_size x out_size float64: 0.3 MB for a 4000-pixel side. Sides up to this
# are cached (at most 32 matrices, 26 MB for dhash256 in the worst case); beyond it, computing
# them (5 ms for an 8000-pixel side) is small next to decoding such an image.
_CACHED_MAX_SIDE = 6000

# Up to this side a pass multiplies by a dense in_size x out_size matrix (8.9 MB at 65,536 x 17);
# past it the matrix would grow with the long side (864 MB at 12,000,000 x 9), so each output's
# weights are made and used in blocks of _TAPS and never held whole (``_streamed_products``).
_DENSE_MAX_SIDE = 65_536
_TAPS = 1 << 16  # weights per block: ~0.5 MB per float64 temporary
# A window up to this many taps keeps its raw values between the total and the weights (32 MB at
# most) instead of computing every sine twice; the 9 windows of a 12,000,000-pixel side are 8M.
_KEPT_TAPS = 1 << 22

# A weight within this much of a fixed-point rounding tie is recomputed with the C library's sine,
# in windows short enough that doing so is cheap (10^-6: far wider than any sine's error).
_TIE_BAND = 1e-6
_WIDE_TIE_BAND_MAX_TAPS = 1 << 16
_EPS = 2.0**-53


class _NearTie(Exception):
    """A weight lies within the error bound of a rounding tie: recompute the window exactly."""


@lru_cache(maxsize=32)
def _cached_coefficients(in_size: int, out_size: int) -> np.ndarray:
    # Not paced: a side this short makes its weights in a few milliseconds at most.
    return _coefficients(in_size, out_size, _Pacer(None))


def _coefficients(in_size: int, out_size: int, pace: _Pacer) -> np.ndarray:
    """Pillow's fixed-point LANCZOS weights as an ``in_size x out_size`` matrix, zero outside
    each output's window (``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in Resample.c)."""
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    for column, window in enumerate(_windows(in_size, out_size)):
        for offset, fixed in window.fixed_blocks(pace):
            matrix[offset : offset + len(fixed), column] = fixed
    matrix.flags.writeable = False
    return matrix


class _Window:
    """One output's span of input positions and how its weights are made, block by block.

    Pillow's weights are ``lanczos(x) / total`` with ``total`` summed left to right over the
    window, then rounded to 22 fractional bits. Made in blocks, the running sum carries across
    them in the same order, so each block's weights are the ones Pillow holds whole.
    """

    __slots__ = ("center", "count", "inverse_scale", "start")

    def __init__(self, start: int, count: int, center: float, inverse_scale: float) -> None:
        self.start, self.count, self.center, self.inverse_scale = (
            start,
            count,
            center,
            inverse_scale,
        )

    def fixed_blocks(self, pace: _Pacer | None = None) -> list[tuple[int, np.ndarray]]:
        """Every block of this window's fixed-point weights as ``(input position, weights)``."""
        pace = pace or _Pacer(None)
        try:
            return list(self.iter_fixed(False, pace))
        except _NearTie:
            return list(self.iter_fixed(True, pace))

    def iter_fixed(
        self, exact: bool = False, pace: _Pacer | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Blocks of fixed-point weights; raises ``_NearTie`` (unless ``exact``) when one lies
        closer to a rounding tie than the difference a sine from ``np.sin`` could make."""
        pace = pace or _Pacer(None)
        kept: list[np.ndarray] = []
        total, relative_error = self._total(exact, kept if self.count <= _KEPT_TAPS else None, pace)
        for index, offset in enumerate(range(0, self.count, _TAPS)):
            n = min(_TAPS, self.count - offset)
            if not kept:
                pace.before(n * _TAP_WORK)
            raw = kept[index] if kept else self._raw(offset, n, libm=False)
            fixed, scaled = _fixed_point(raw, total)
            if exact and not kept and _near_tie(scaled, 64 * _EPS, 0.0):
                # The total is Pillow's; a weight from np.sin is off by a few ulp at most:
                # where that could cross a tie, the block's sines are the C library's too.
                pace.before(n * _LIBM_TAP_WORK)
                fixed, _ = _fixed_point(self._raw(offset, n, libm=True), total)
            elif not exact and _near_tie(scaled, relative_error, self._floor_band()):
                raise _NearTie
            yield self.start + offset, fixed

    def _floor_band(self) -> float:
        return _TIE_BAND if self.count <= _WIDE_TIE_BAND_MAX_TAPS else 0.0

    def _total(
        self, exact: bool, kept: list[np.ndarray] | None, pace: _Pacer
    ) -> tuple[float, float]:
        """The window's total as Pillow sums it, and a bound on the relative error of a weight
        divided by it when the sines come from ``np.sin`` (a few ulp from the C library's).
        Keeps each block's raw values in ``kept`` when given, for the weights to reuse."""
        total = 0.0
        largest_partial = 0.0
        absolute = 0.0
        for offset in range(0, self.count, _TAPS):
            n = min(_TAPS, self.count - offset)
            pace.before(n * (_LIBM_TAP_WORK if exact else _TAP_WORK))
            raw = self._raw(offset, n, libm=exact)
            if kept is not None:
                kept.append(raw.copy())
            absolute += float(np.sum(np.abs(raw)))
            raw[0] += total  # the running sum carries on in Pillow's order
            partial = np.add.accumulate(raw, out=raw)
            total = float(partial[-1])
            largest_partial = max(largest_partial, float(partial.max()), -float(partial.min()))
        if total == 0.0:
            return total, 1.0
        # Each raw value may differ by a few ulp, and each of the n additions may round apart
        # by one ulp of its partial sum; the quotient and scaling add a few ulp more.
        bound = _EPS * (2 * self.count * largest_partial + 16 * absolute) / abs(total)
        return total, bound + 32 * _EPS

    def _raw(self, offset: int, n: int, libm: bool) -> np.ndarray:
        """``lanczos((x + xmin - center + 0.5) / filterscale)`` for n taps, as Pillow's C."""
        x = np.arange(self.start + offset, self.start + offset + n, dtype=np.float64)
        x -= self.center
        x += 0.5
        x *= self.inverse_scale
        return _lanczos_libm(x) if libm else _lanczos(x)


def _windows(in_size: int, out_size: int) -> list[_Window]:
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate
    count = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    inverse = 1.0 / filterscale
    return [
        _Window(int(xmin[j]), int(count[j]), float(center[j]), inverse) for j in range(out_size)
    ]


def _fixed_point(raw: np.ndarray, total: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised weights as Pillow's ints (``(int)(w * 2**22 +- 0.5)``), and the scaled values."""
    scaled = raw / total if total != 0.0 else raw.copy()
    scaled *= _ONE  # exact: a power of two
    fixed = np.copysign(0.5, scaled)
    fixed += scaled
    np.trunc(fixed, out=fixed)
    return fixed, scaled


def _near_tie(scaled: np.ndarray, relative: float, floor: float) -> bool:
    """Whether a scaled weight lies within its error bound of a half-integer (where the
    rounding to an int turns), with the bound taken at the block's largest weight."""
    magnitude = np.abs(scaled)
    band = max(float(magnitude.max()) * relative, floor)
    magnitude += 0.5  # a tie is now an integer; the addition's rounding is inside the band
    distance = magnitude - np.rint(magnitude)
    np.abs(distance, out=distance)
    return bool(distance.min() < band)


def _lanczos(x: np.ndarray, sine: Callable[[np.ndarray], np.ndarray] = np.sin) -> np.ndarray:
    """Pillow's ``lanczos_filter`` over increasing ``x``: ``sinc(x) * sinc(x / 3)`` inside
    [-3, 3), the same operations in the same order as the C."""
    with np.errstate(invalid="ignore", divide="ignore"):
        a = x * math.pi
        first = sine(a)
        first /= a
        np.divide(x, 3, out=a)
        a *= math.pi
        second = sine(a)
        second /= a
    first *= second
    low, zero, high = np.searchsorted(x, (-_SUPPORT, 0.0, _SUPPORT))
    first[:low] = 0.0
    first[high:] = 0.0
    if zero < len(x) and x[zero] == 0.0:
        first[zero] = 1.0
    return first


def _lanczos_libm(x: np.ndarray) -> np.ndarray:
    """The slow, certain path: the same with ``math.sin`` (the C library's, as Pillow); only the
    sines differ from ``_lanczos``, the other operations are IEEE-exact either way."""
    return _lanczos(x, _libm_sine)


def _libm_sine(a: np.ndarray) -> np.ndarray:
    return np.fromiter(map(math.sin, a.tolist()), dtype=np.float64, count=len(a))
