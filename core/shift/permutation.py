"""Permutation p-values and the corrections that combine several of them.

P-values are honest by construction, so that batches without shift are flagged at the nominal rate: each
test relabels the pooled batch at random (`label_chunks`), and ties between the observed and a permuted
statistic are split at random (seeded, `permutation_p`), which keeps the p-value within ``1 / (B + 1)`` of
exact even for discrete data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import ParameterError


def generator(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """`random_state` itself when it is a generator, else a generator seeded with it."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def permutation_p(
    observed: float, permuted: np.ndarray, rng: np.random.Generator
) -> float:
    """Permutation p-value ``(#{T_b > T} + 1 + U * #{T_b == T}) / (B + 1)``.

    Ties with the observed statistic (common for discrete data) are counted with a uniform random weight,
    which keeps the p-value within ``1 / (B + 1)`` of exactly uniform under no shift instead of conservative.
    """
    counted = _beyond(observed, permuted)
    if counted is None:
        return 1.0
    greater, equal, size = counted
    return float(min(1.0, (greater + 1 + rng.uniform() * equal) / (size + 1)))


def permutation_p_range(observed: float, permuted: np.ndarray) -> tuple[float, float]:
    """The interval `permutation_p` draws its p-value from: no tie counted, every tie counted.

    Its width is the null's mass at the observed statistic: wide for a discrete statistic (a chi-square of two
    levels), so two honest p-values of the same test can be that far apart.
    """
    counted = _beyond(observed, permuted)
    if counted is None:
        return 1.0, 1.0
    greater, equal, size = counted
    return (greater + 1) / (size + 1), float(min(1.0, (greater + 1 + equal) / (size + 1)))


def _beyond(observed: float, permuted: np.ndarray) -> tuple[int, int, int] | None:
    """Permuted statistics above and tied with the observed one, and how many are finite; None: nothing to count."""
    permuted = np.asarray(permuted, dtype=np.float64)
    permuted = permuted[np.isfinite(permuted)]
    if not np.isfinite(observed) or permuted.size == 0:
        return None
    tol = 1e-9 * max(1.0, abs(observed))
    return int(np.sum(permuted > observed + tol)), int(np.sum(np.abs(permuted - observed) <= tol)), permuted.size


def label_chunks(
    n_reference: int, n_current: int, n_permutations: int, rng: np.random.Generator, chunk: int
) -> list[np.ndarray]:
    """Boolean ``(b, N)`` matrices, ``True`` = current, each row a random relabelling of the pooled batch."""
    base = np.zeros(n_reference + n_current, dtype=bool)
    base[n_reference:] = True
    out = []
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        out.append(rng.permuted(np.broadcast_to(base, (size, base.size)).copy(), axis=1))
    return out


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values: ``holm`` (family-wise error) or ``bh`` (false discovery rate)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method in ("bh", "fdr_bh", "benjamini-hochberg"):
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    elif method == "none":
        adj = ranked
    else:
        raise ParameterError(f"correction must be 'holm', 'bh' or 'none', got {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def combine_p_values(p_values: Sequence[float]) -> float:
    """Bonferroni: ``min(1, m * min p)``; keeps the false-alarm rate of the combined verdict at most alpha."""
    if not p_values:
        return 1.0
    return float(min(1.0, len(p_values) * min(p_values)))
