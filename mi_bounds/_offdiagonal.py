"""Sums over the off-diagonal entries of one large CPU score matrix, read in cache-sized chunks.

The score-matrix JS and SMILE estimates (:func:`mi_bounds.bounds.js_bound_from_scores`,
:func:`mi_bounds.bounds.smile_bound_from_scores`, docs/THEORY.md §1) need, over the ``K(K-1)``
off-diagonal entries of ``S``,

* JS: ``Σ_{i≠j} softplus(S_ij)``, ``softplus(x) = log(1 + e^x) = -log σ(-x)``;
* SMILE: ``Σ_{i≠j} e^{clip(S_ij, -τ, τ)}`` (= ``Σ clip(e^{S_ij}, e^{-τ}, e^{τ})``).

Both read the flattened matrix once, a chunk of ``buf.numel()`` entries at a time. The chunk is
copied into ``buf`` (a buffer that stays in cache) as ``x + 0·x``, which is ``x`` where ``x`` is
finite and NaN where it is ``±inf``, so that a non-finite score shows in the result without a
pass of its own; it is then transformed and reduced in place while it is in cache, with its
diagonal entries set to zero after the exponential. No gradients: the callers take these paths
on the CPU for large K without autograd, and a plain tensor formula otherwise.

JS takes one ``exp`` per entry and one ``log`` per ``_GROUP = 32`` entries, from
``Σ_g softplus(x_g) = log Π_g (1 + e^{x_g})`` over groups of 32 entries. A chunk of ``32·m``
entries is viewed as 32 rows of ``m`` and multiplied down its columns (group ``j`` holds chunk
positions ``j, j + m, ..., j + 31m``): a reduction across contiguous rows, which vectorises,
where a product over 32 consecutive entries is a short inner reduction (0.00–0.11× of an exp
pass faster at K = 8192 in the same rounds, docs/RESULTS.md §1). Each factor
is taken as ``(1 + e^x)/8`` (an exact scaling by a power of two), so a product is at least
``2⁻⁹⁶`` (inside float32's normal range) and overflows only where the 32 softplus values sum to
more than ``log(largest float) + 32 log 8`` (155 in float32, an average above 4.85, or where one
score exceeds 88.7); such a group is summed again exactly from its scores, so the result does not
depend on the data, only the time does. The log is taken of ``product · 2⁹⁶``, the exact
unscaled product (in float64 where it exceeds float32's range), so that a log near 0 keeps its
relative precision. A product of 32 rounded factors is within 32 ulps of the exact one, an
error of at most ``32·eps`` in its log; a factor ``1 + e^x`` with ``e^x`` below ``eps`` rounds
to 1, an absolute error below ``eps`` per entry, as in any float ``log1p(e^x)``.
"""

from __future__ import annotations

import math

import torch

from mi_bounds._kernels import _js_neg
from mi_bounds._validation import all_finite, raise_not_finite

#: Entries per product in :func:`offdiagonal_softplus_sum`; each factor ``1 + e^x`` is scaled by
#: ``_SCALE`` and each product by ``_UNSCALE = _SCALE^-_GROUP`` (exact) before its log.
_GROUP = 32
_SCALE = 0.125
_UNSCALE = 2.0**96
#: Products up to ``_BIG`` are logged in float32 (``_BIG · _UNSCALE = 2¹²⁷``), larger in float64.
_BIG = 2.0**31
#: Chunks whose products are logged and summed together (a buffer that stays in cache).
_BATCH = 16


def _sum(values: torch.Tensor) -> torch.Tensor:
    """Float64 sum of a 1-d tensor: sums of 64 values in its dtype (vectorised across columns),
    then a float64 sum of those (a float64 reduction of all the values is several times slower;
    a sum in float32 would round the total to float32)."""
    m = values.numel() - values.numel() % 64
    head = values[:m].view(64, -1).sum(0).sum(dtype=torch.float64)
    return head + values[m:].sum(dtype=torch.float64)


def _chunks(flat: torch.Tensor, stop: int,
            buf: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, source, scratch)`` for the chunks of ``buf.numel()`` entries of ``flat[:stop]``
    (the last one shorter), the views made once."""
    chunk = buf.numel()
    sources = flat[:stop].split(chunk)
    last = buf[: sources[-1].numel()] if sources else buf
    return [(i * chunk, src, buf if src.numel() == chunk else last)
            for i, src in enumerate(sources)]


def _copy_checked(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = src + 0·src``: ``src`` where finite, NaN where ``±inf`` (or NaN)."""
    return torch.add(src, src, alpha=0.0, out=out)


def _zero_diagonal(tmp: torch.Tensor, start: int, k: int) -> None:
    """Zero the entries of the chunk ``tmp`` (flat positions ``start, start + 1, ...``) that lie
    on the diagonal of the ``[K, K]`` matrix, flat positions ``i (K + 1)``."""
    first = -(-start // (k + 1)) * (k + 1)
    if first < start + tmp.numel():
        tmp[first - start :: k + 1].zero_()


def _check_diagonal(mat: torch.Tensor) -> None:
    """The chunk kernels zero the diagonal before they reduce: its K entries are checked here."""
    if not all_finite(mat.diagonal()):
        raise_not_finite(mat, "scores")


def _exact_softplus_sum(flat: torch.Tensor, start: int, k: int) -> torch.Tensor:
    """``Σ softplus`` (float64, as ``-log σ(-x)``) of the off-diagonal entries among the flat
    positions ``start, start + 1, ...`` to the end of the flattened ``[K, K]`` matrix."""
    values = -_js_neg(flat[start:].to(torch.float64))
    _zero_diagonal(values, start, k)
    return values.sum()


def _overflowed_groups_sum(flat: torch.Tensor, first: torch.Tensor, stride: torch.Tensor,
                           k: int) -> torch.Tensor:
    """``Σ softplus`` (float64) of the off-diagonal entries of the groups whose flat positions
    are ``first + t·stride``, ``t = 0 ... _GROUP - 1`` (one group per entry of ``first`` and
    ``stride``), each as ``-log σ(-x)``."""
    pos = first[:, None] + stride[:, None] * torch.arange(_GROUP)
    values = torch.where(pos % (k + 1) == 0, 0.0, -_js_neg(flat[pos]))
    return values.sum(dtype=torch.float64)


def _group_logs(products: torch.Tensor) -> torch.Tensor:
    """``Σ softplus`` of each group from its scaled product ``P = Π (1 + e^x)/8``: the log of the
    exact unscaled product ``P·2⁹⁶``, so that a log near 0 keeps its precision; in place where
    every ``P ≤ 2³¹`` (then ``P·2⁹⁶ ≤ 2¹²⁷`` is finite in float32), else in float64. ``inf``
    where the product overflowed, NaN where it is NaN."""
    if bool(products.max() <= _BIG):
        return products.mul_(_UNSCALE).log_()
    return products.double().mul_(_UNSCALE).log_()


def _groups_sum(products: torch.Tensor, flat: torch.Tensor,
                layout: list[tuple[int, int, int]], k: int) -> torch.Tensor:
    """``Σ softplus`` (float64) over groups from their scaled products (overwritten).
    ``layout``: per chunk, ``(index of its first product, flat position of its first entry,
    m)``; its ``m`` products are the columns of its ``[_GROUP, m]`` view. Overflowed groups are
    summed exactly from their scores, and a NaN (from a non-finite score) raises."""
    logs = _group_logs(products)
    total = _sum(logs)
    if bool(torch.isnan(total)):
        raise_not_finite(flat, "scores")
    if bool(torch.isinf(total)):
        over = torch.nonzero(logs == math.inf).flatten()  # (== inf: isinf is slower here)
        logs[over] = 0.0
        starts = torch.tensor([at for at, _, _ in layout])
        chunk = torch.searchsorted(starts, over, right=True) - 1
        c0 = torch.tensor([c for _, c, _ in layout])[chunk]
        m = torch.tensor([w for _, _, w in layout])[chunk]
        total = _sum(logs) + _overflowed_groups_sum(flat, c0 + over - starts[chunk], m, k)
    return total


def offdiagonal_softplus_sum(mat: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``Σ_{i≠j} softplus(S_ij)`` of one contiguous ``[K, K]`` CPU matrix, a float64 0-d tensor.

    ``buf``: a 1-d scratch tensor of ``mat``'s dtype whose size (the chunk) is a multiple of
    ``_GROUP``. Products are taken down the columns of each chunk's ``[_GROUP, m]`` view (module
    docstring), and logged and summed ``_BATCH`` chunks at a time (:func:`_groups_sum`). Raises the
    ``ValueError`` of :func:`~mi_bounds._validation.raise_not_finite` for NaN or infinite scores.
    """
    k = mat.shape[-1]
    flat = mat.view(-1)
    n = flat.numel()
    main = n - n % _GROUP  # the last n % _GROUP entries are summed exactly
    chunks = _chunks(flat, main, buf)
    scale = torch.tensor(_SCALE, dtype=mat.dtype)
    products = torch.empty(min(main, _BATCH * buf.numel()) // _GROUP, dtype=mat.dtype)
    total = torch.zeros((), dtype=torch.float64)
    for b in range(0, len(chunks), _BATCH):
        at = 0  # next free product of this batch
        layout = []
        for c0, src, tmp in chunks[b : b + _BATCH]:
            _copy_checked(src, tmp).exp_()
            _zero_diagonal(tmp, c0, k)
            torch.add(scale, tmp, alpha=_SCALE, out=tmp)  # (1 + e^x)/8
            m = tmp.numel() // _GROUP
            torch.prod(tmp.view(_GROUP, m), 0, out=products[at : at + m])
            layout.append((at, c0, m))
            at += m
        total += _groups_sum(products[:at], flat, layout, k)
    _check_diagonal(mat)
    if main < n:
        if not all_finite(flat[main:]):
            raise_not_finite(mat, "scores")
        total += _exact_softplus_sum(flat, main, k)
    return total


def offdiagonal_clipped_exp_sum(mat: torch.Tensor, tau: float,
                                buf: torch.Tensor) -> torch.Tensor:
    """``Σ_{i≠j} e^{clip(S_ij, -τ, τ)}`` of one contiguous ``[K, K]`` CPU matrix, float64 0-d.

    Each chunk is summed in ``mat``'s dtype (torch's pairwise reduction), the chunks in float64.
    The caller makes sure that ``K² e^{τ}`` is finite in the dtype. Raises for NaN or infinite
    scores, as :func:`offdiagonal_softplus_sum`.
    """
    k = mat.shape[-1]
    flat = mat.view(-1)
    chunks = _chunks(flat, flat.numel(), buf)
    sums = torch.empty(len(chunks), dtype=mat.dtype)
    for c, (c0, src, tmp) in enumerate(chunks):
        _copy_checked(src, tmp).clamp_(-tau, tau).exp_()
        _zero_diagonal(tmp, c0, k)
        torch.sum(tmp, 0, out=sums[c])
    total = sums.sum(dtype=torch.float64)
    if not bool(torch.isfinite(total)):
        raise_not_finite(mat, "scores")
    _check_diagonal(mat)
    return total
