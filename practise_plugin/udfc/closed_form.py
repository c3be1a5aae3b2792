"""UDFC's closed forms (Bai et al., ICCV 2023), plus the Neuron Merging baseline, as batched tensor maths.

Why it exists: the algebra is the part of UDFC that must be exactly right, so it lives apart from any
module surgery and is tested against ``torch.linalg.lstsq`` and a brute-force minimiser. All functions
take flattened filters and per-channel affine terms and return plain tensors; nothing here touches a model.

Notation (METHODS.md section 3): a conv filter ``W_n`` followed by BN gives the pre-activation
``y_n = a_n * (W_n * x) + K_n`` with ``a_n = gamma_n / sigma_n`` and ``K_n = beta_n - gamma_n * mu_n / sigma_n``
(a plain conv bias adds ``a_n * b_n`` to ``K_n``; without BN, ``a_n = 1``). ``R_n = a_n * W_n`` is the
BN-scaled filter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .config import A1, A2

RTOL = 1e-10  # Gram pivots/eigenvalues below RTOL * the largest count as zero (then: pseudo-inverse)


def prune_coefficients(
    R_kept: torch.Tensor, K_kept: torch.Tensor, R_pruned: torch.Tensor, K_pruned: torch.Tensor,
    a_pruned: torch.Tensor, a1: float = A1,
) -> tuple[torch.Tensor, str]:
    """Coefficients ``S`` (n_pruned, n_kept): pruned channel j is approximated by ``sum_i S[j, i] * channel i``.

    Row j minimises the paper's objective
    ``||W_j - sum_i s_i (a_i / a_j) W_i||^2 + a1 (K_j - sum_i s_i K_i)^2``.
    Multiplying it by ``a_j^2`` (same minimiser, no division by ``gamma_j``) gives
    ``||R_j - sum_i s_i R_i||^2 + w_j (K_j - sum_i s_i K_i)^2`` with ``w_j = a1 a_j^2``, whose normal equations
    are ``M_j s = r_j``, ``M_j = G + w_j p p^T``, ``r_j = R_kept R_j + w_j K_j p``, ``G = R_kept R_kept^T``,
    ``p = K_kept``: the paper's ``(Q^T Q + a1 P^T P)^-1 (Q^T V + a1 P^T K_j)`` up to that positive factor.
    Where ``M_j`` is singular we return ``pinv(M_j) r_j``, the minimum-norm minimiser.

    Every ``M_j`` is the shared ``G`` plus a rank-one term, so one factorisation per layer serves all
    pruned channels (float64). When ``G`` has a Cholesky factor with every pivot above ``RTOL`` times its
    largest diagonal entry, each ``M_j^-1`` follows by Sherman-Morrison (solver ``"cholesky"``). Otherwise
    (more kept filters than filter entries, duplicate filters) ``H = G + p p^T`` is eigendecomposed; on
    ``H``'s range, which is also ``M_j``'s, ``M_j`` is diagonal plus rank one and the same identity gives the
    pseudo-inverse (solver ``"pinv"``). A pruned channel with ``gamma_j = 0`` is constant: no coefficients.
    """
    out_dtype = R_kept.dtype
    Rk, Kk, Rp, Kp, ap = (t.detach().to(torch.float64) for t in (R_kept, K_kept, R_pruned, K_pruned, a_pruned))
    if Rp.shape[0] == 0:
        return torch.zeros((0, Rk.shape[0]), dtype=out_dtype), "none"
    G = Rk @ Rk.T
    Gr = Rk @ Rp.T  # (n_kept, n_pruned): column j is R_kept R_j
    w = a1 * ap.square()
    L, info = torch.linalg.cholesky_ex(G)
    pivots = torch.diagonal(L).square()
    if info == 0 and pivots.min() > RTOL * torch.diagonal(G).max().clamp_min(torch.finfo(torch.float64).tiny):
        Z = torch.cholesky_solve(Gr, L)  # G^-1 R_kept R_j
        u = torch.cholesky_solve(Kk.unsqueeze(1), L).squeeze(1)  # G^-1 p
        coef = w * (Kp - Kk @ Z) / (1.0 + w * (Kk @ u))
        S, solver = (Z + u.unsqueeze(1) * coef.unsqueeze(0)).T, "cholesky"
    else:
        B, lam = _range_basis(torch.cat([Rk.T, Kk.unsqueeze(0)], 0))
        q = B.T @ Kk
        Y = B.T @ Gr + q.unsqueeze(1) * (w * Kp).unsqueeze(0)  # B^T r_j
        qL = q / lam
        c = w - 1.0  # M_j = H + (w_j - 1) p p^T
        corr = c * (qL @ Y) / (1.0 + c * (q @ qL))
        S, solver = (B @ (Y / lam.unsqueeze(1) - qL.unsqueeze(1) * corr.unsqueeze(0))).T, "pinv"
    S = torch.where((w > 0).unsqueeze(1), S, torch.zeros_like(S))
    return S.to(out_dtype).contiguous(), solver


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run LAPACK's eigensolver on one thread. On a loaded machine its OpenMP barriers make a 900x900
    ``eigh`` take 25 s on two threads instead of 0.1 s on one (measured here); these problems are small."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _range_basis(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis ``B`` (n, q) of the range of ``H = A^T A`` and H's non-zero eigenvalues (q,).

    Eigendecomposes whichever Gram is smaller, ``A^T A`` or ``A A^T`` (they share non-zero eigenvalues);
    a rank-deficient layer has few filter entries and many filters, so that is usually ``A A^T``."""
    small = A.shape[0] < A.shape[1]
    with _single_threaded():
        lam, U = torch.linalg.eigh(A @ A.T if small else A.T @ A)
    keep = lam > RTOL * lam[-1].clamp_min(torch.finfo(torch.float64).tiny)
    lam, U = lam[keep], U[:, keep]
    return ((A.T @ U) / lam.sqrt() if small else U), lam


def merge_coefficients(
    R_kept: torch.Tensor, R_pruned: torch.Tensor, threshold: float = 0.0
) -> torch.Tensor:
    """Neuron Merging (Kim et al., NeurIPS 2020): one kept partner per pruned filter.

    Our reading of the published description, applied to BN-scaled filters ``R`` so that BN is
    respected: each pruned filter j is merged into the kept filter i with the largest cosine similarity
    ``cos(R_i, R_j)``, with scale ``||R_j|| / ||R_i||``, provided that similarity exceeds ``threshold``
    (the paper's t; below it the filter is simply pruned). The BN shift mismatch is ignored, as in the
    data-free decomposition of the paper. Returns ``S`` (n_pruned, n_kept) with at most one non-zero per row.
    """
    Rk, Rp = R_kept.detach().double(), R_pruned.detach().double()
    nk, np_ = Rk.norm(dim=1), Rp.norm(dim=1)
    cos = (Rp @ Rk.T) / (np_.unsqueeze(1) * nk.unsqueeze(0)).clamp_min(1e-300)
    best, idx = cos.max(dim=1)
    scale = np_ / nk[idx].clamp_min(1e-300)
    S = torch.zeros_like(cos)
    rows = torch.arange(len(idx))
    S[rows, idx] = torch.where(best > threshold, scale, torch.zeros_like(scale))
    return S.to(R_kept.dtype)


def quantize_symmetric(W: torch.Tensor, bits: int) -> torch.Tensor:
    """The paper's symmetric uniform quantizer, per tensor: ``2^bits`` levels evenly spaced on [-m, m].

    ``Wq = m * (2/(2^k-1) * round((2^k-1) * (W/(2m) + 1/2)) - 1)`` with ``m = max|W|``. Zero is not a
    level (an even number of levels symmetric about 0); a zero tensor stays zero.
    """
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    m = W.detach().abs().max()
    if m == 0:
        return torch.zeros_like(W)
    L = 2**bits - 1
    return m * (2.0 / L * torch.round(L * (W / (2 * m) + 0.5)) - 1.0)


def quant_scales(
    R: torch.Tensor, R_quant: torch.Tensor, K: torch.Tensor, a2: float = A2
) -> torch.Tensor:
    """Per-channel compensation scale ``s~_m`` for quantized filters (METHODS.md, corrected eq. 21).

    Minimises ``||R_m - s R~_m||^2 + a2 (K_m - s K_m)^2`` (K is not quantized): the minimiser is
    ``s~ = (R~.R + a2 K^2) / (R~.R~ + a2 K^2)``. A channel with ``R~ = 0`` and ``K = 0`` keeps scale 1.
    ``R`` and ``R_quant`` are (N, D) BN-scaled filters; returns (N,).
    """
    Rd, Rq, Kd = R.detach().double(), R_quant.detach().double(), K.detach().double()
    num = (Rq * Rd).sum(1) + a2 * Kd.square()
    den = Rq.square().sum(1) + a2 * Kd.square()
    s = torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(den))
    return s.to(R.dtype)
