"""The statistics of an experiment report: intervals and tests, exact formulas, no SciPy.

* :func:`wilson` — the Wilson score interval of a proportion ``k/n`` (95 % by default): it
  stays inside [0, 1] and behaves for small ``n`` and for ``k`` near 0 or ``n``, where
  the normal ("Wald") interval does not.
* :func:`two_proportions` — the two-sided two-proportion z-test with the pooled
  proportion: is variant B's rate different from A's?
* :func:`mann_whitney` — the two-sided Mann–Whitney U test (normal approximation, with
  the tie correction): are B's first-token times shifted against A's? Latencies are
  skewed, so a rank test, not a t-test on means.
* :func:`percentile` — linear interpolation between closest ranks (NumPy's default).

A p-value below ``ALPHA`` (0.05) is reported as significant. With several variants,
each is compared with the control alone (no correction for multiple comparisons:
the report says how many comparisons it made).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
Z_95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True, slots=True)
class Test:
    """One comparison: the statistic, its two-sided p-value, and whether p < ALPHA."""

    statistic: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of ``k`` successes in ``n`` trials; None when ``n`` is 0."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"successes {k} not within 0..{n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(k1: int, n1: int, k2: int, n2: int) -> Test | None:
    """Two-sided two-proportion z-test (pooled); None when it is undefined (an empty
    group, or both proportions 0 or both 1)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (k2 / n2 - k1 / n1) / se
    return Test(z, normal_two_sided_p(z))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> Test | None:
    """Two-sided Mann–Whitney U test of ``b`` against ``a`` (normal approximation, tie
    correction, no continuity correction); the statistic is z (> 0: ``b`` tends larger).
    None when a group is empty or every value is the same."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return None
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_b = 0.0
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # the average of ranks i+1 .. j+1
        count = j - i + 1
        ties += count**3 - count
        ranks_b += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 1)
        i = j + 1
    u_b = ranks_b - n2 * (n2 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return None
    z = (u_b - n1 * n2 / 2) / math.sqrt(variance)
    return Test(z, normal_two_sided_p(z))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
