"""Winograd convolution F(m x m, r x r): the same stride-1 'valid' convolution with fewer multiplications.

A ``r x r`` convolution producing an ``m x m`` output tile reads an ``a x a`` input tile (a = m + r - 1).
Minimal filtering computes it as ``Y = A^T [(G g G^T) * (B^T d B)] A``: the input and weight tiles are
transformed, multiplied elementwise per tile position (for all channels at once, that is one matrix product
per position: ``a*a`` GEMMs), and transformed back. F(4x4, 3x3) needs 36 instead of 144 multiplications per
output tile (4x fewer), F(2x2, 5x5) 36 instead of 100 (2.8x fewer). The transform matrices are built exactly
(rational arithmetic) by Toom-Cook interpolation at the points 0, 1, -1, 1/2, -2, -1/2, 2 and infinity.
Rounding: on wide convolutions F(4, 3) has about twice the float32 error of a direct convolution and F(2, 5)
about the same; through the whole flow that is 1.5x the RMS error of direct convolutions (see
docs/benchmarks.md). Larger tiles (F(4, 5): 6x fewer) are faster but about 3x less accurate.

Only plain differentiable tensor ops are used (unfold, matmul, reshapes), so autograd and double backward
work. Intended for CPU float32/float64, where on some CPUs it beats oneDNN's direct convolution on the flow's
wide convolutions and on others it does not: ``model.convolutions.algorithm=auto`` times both on the running
machine (:mod:`multiflow_pl.speed.conv_choice`). On CUDA cuDNN picks its own algorithms.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F

# Interpolation points, in the order they are used; infinity is always added as the last point.
_POINTS = tuple(Fraction(p) for p in (0, 1, -1, Fraction(1, 2), -2, Fraction(-1, 2), 2))

# Output tile side m per kernel size r (transform tiles a = m + r - 1 <= 8 keep fp32 errors small).
TILE_SIZES: dict[int, int] = {3: 4, 5: 2}
# Largest transformed-weight or product block computed at once: below glibc's 32 MiB ceiling for reusing
# freed heap memory instead of mapping fresh pages.
CHUNK_BYTES = 24 * 2**20


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse of a square rational matrix (Gauss-Jordan)."""
    n = len(matrix)
    rows = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col], strict=True)]
    return [row[n:] for row in rows]


def _evaluation(points: tuple[Fraction, ...], n_coefficients: int) -> list[list[Fraction]]:
    """Rows evaluate a polynomial with ``n_coefficients`` coefficients at each point, then at infinity."""
    rows = [[p**i for i in range(n_coefficients)] for p in points]
    return [*rows, [Fraction(int(i == n_coefficients - 1)) for i in range(n_coefficients)]]


def winograd_matrices(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transforms ``(A^T [m, a], G [a, r], B^T [a, a])`` of F(m, r) as float64 tensors.

    The correlation ``y_i = sum_k g_k d_(i+k)`` (i < m) equals ``A^T ((G g) * (B^T d))``. This is the
    transpose of Toom-Cook linear convolution: A^T = Va^T, G = Vb, B^T = V^-T with V* evaluation matrices.
    Rows of B^T are scaled to integers and G compensates, so the data transform is exact in floating point.
    """
    a = m + r - 1
    if not 1 <= a - 1 <= len(_POINTS):
        raise ValueError(f"F({m}, {r}) needs {a - 1} finite points; at most {len(_POINTS)} are available.")
    points = _POINTS[: a - 1]
    out_eval, kernel_eval = _evaluation(points, m), _evaluation(points, r)
    inverse = _inverse(_evaluation(points, a))
    data = [[inverse[t][j] for t in range(a)] for j in range(a)]  # V^-T
    kernel = [row[:] for row in kernel_eval]
    for j in range(a):
        scale = math.lcm(*(v.denominator for v in data[j]))
        data[j] = [v * scale for v in data[j]]
        kernel[j] = [v / scale for v in kernel[j]]
    output = [[out_eval[j][i] for j in range(a)] for i in range(m)]

    def as_tensor(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    return as_tensor(output), as_tensor(kernel), as_tensor(data)


@functools.cache
def _kron_matrices(
    m: int, r: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-D transforms as Kronecker products: ``(A^T x A^T [m*m, a*a], G x G [a*a, r*r], B^T x B^T)``.

    Cached, so they are built as normal tensors even when first asked for under ``torch.inference_mode``.
    """
    with torch.inference_mode(False):
        output, kernel, data = winograd_matrices(m, r)
        return tuple(torch.kron(t, t).to(dtype=dtype, device=device) for t in (output, kernel, data))


def supports(weight: torch.Tensor) -> bool:
    """Whether :func:`winograd_conv2d` has a tile size for this (square) kernel."""
    return weight.shape[-1] == weight.shape[-2] and weight.shape[-1] in TILE_SIZES


def _position_chunks(positions: int, kernel_numel: int, product_numel: int, element_size: int) -> list[slice]:
    """Split the tile positions so that a chunk's transformed weights and products stay under
    :data:`CHUNK_BYTES` each.

    Larger blocks are allocated by the C library as fresh memory maps, and faulting their pages in again on
    every call costs about as much as the multiplications (far more with several threads).
    """
    largest = max(kernel_numel, product_numel) * element_size
    per_chunk = max(1, min(positions, CHUNK_BYTES // max(1, largest)))
    n_chunks = -(-positions // per_chunk)
    bounds = [round(i * positions / n_chunks) for i in range(n_chunks + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _taps_major(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Reorder a conv weight ``[G*Cout, Cin, r, r]`` to ``[r*r, G, Cin, Cout]``.

    Goes through a 2-D transpose, which PyTorch copies block-wise (several times faster on CPU than a
    general permutation, and so is its backward).
    """
    g_out, c_in, r, _ = weight.shape
    if groups == 1:
        columns = weight.reshape(g_out, c_in * r * r).t()
    else:
        columns = weight.reshape(groups, g_out // groups, c_in * r * r).transpose(1, 2)
    columns = columns.contiguous().view(groups, c_in, r * r, g_out // groups)
    return columns.permute(2, 0, 1, 3).contiguous()


def winograd_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, groups: int = 1
) -> torch.Tensor:
    """Same as ``F.conv2d(x, weight, bias, groups=groups)`` (stride 1, no padding), by Winograd's algorithm.

    Works in channels-last order throughout, so every reshuffle moves runs of whole channel vectors: pass
    ``x`` in ``torch.channels_last`` memory format to avoid a conversion; the result is channels-last.

    Args:
        x: ``[N, groups*Cin, H + r - 1, W + r - 1]`` (already padded).
        weight: ``[groups*Cout, Cin, r, r]`` with ``r`` a key of :data:`TILE_SIZES`.
        bias: ``[groups*Cout]`` or None.
        groups: independent channel groups, as in ``F.conv2d``.

    Returns:
        ``[N, groups*Cout, H, W]`` (channels-last memory).
    """
    r = weight.shape[-1]
    m = TILE_SIZES[r]
    a = m + r - 1
    batch, in_total, height_in, width_in = x.shape
    c_in, c_out = in_total // groups, weight.shape[0] // groups
    height, width = height_in - r + 1, width_in - r + 1
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    extra_h, extra_w = tiles_h * m - height, tiles_w * m - width
    pixels = x.permute(0, 2, 3, 1)  # [N, Hp, Wp, C]
    if extra_h or extra_w:  # cover the map with whole tiles; the extra outputs are cropped below
        pixels = F.pad(pixels, (0, 0, 0, extra_w, 0, extra_h))
    output_t, kernel_t, data_t = _kron_matrices(m, r, x.dtype, x.device)
    positions, n_tiles = a * a, batch * tiles_h * tiles_w

    # Data: overlapping a x a tiles [N, tH, tW, G, Cin, a, a] -> [a*a, G, N*tH*tW, Cin], transformed by B^T.B.
    tiles = pixels.unfold(1, a, m).unfold(2, a, m).reshape(batch, tiles_h, tiles_w, groups, c_in, a, a)
    tiles = tiles.permute(5, 6, 3, 0, 1, 2, 4).reshape(positions, -1)
    data = (data_t @ tiles).view(positions, groups, n_tiles, c_in)
    # Weights G.g.G^T -> [a*a, G, Cin, Cout]; one GEMM per tile position and group -> [a*a, G, tiles, Cout];
    # back to m x m output tiles. Done for a few positions at a time (see _position_chunks).
    taps = _taps_major(weight, groups).view(r * r, -1)
    out = None
    for chunk in _position_chunks(
        positions, groups * c_in * c_out, groups * n_tiles * c_out, x.element_size()
    ):
        kernels = (kernel_t[chunk] @ taps).view(-1, groups, c_in, c_out)
        products = (data[chunk] @ kernels).view(kernels.shape[0], -1)
        out = output_t[:, chunk] @ products if out is None else out.addmm_(output_t[:, chunk], products)
    out = out.view(m, m, groups, batch, tiles_h, tiles_w, c_out)
    out = out.permute(3, 4, 0, 5, 1, 2, 6).reshape(batch, tiles_h * m, tiles_w * m, groups * c_out)
    if extra_h or extra_w:
        out = out[:, :height, :width]
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)
