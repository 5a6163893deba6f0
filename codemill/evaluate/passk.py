"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models
Trained on Code", eq. 1): with n samples of a problem of which c pass,

    pass@k = 1 - C(n - c, k) / C(n, k)

the chance that k samples drawn without replacement from the n include a passing one.
The ratio of binomials is the product over i = n-c+1 … n of (1 - k / i), which never
forms the huge binomials themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Estimated pass@k of one problem from n samples of which c passed."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(n: int, passed: Sequence[int], k: int) -> float:
    """pass@k over problems: the mean of each problem's estimate (n samples each)."""
    if not passed:
        raise ValueError("pass@k over no problems")
    return sum(pass_at_k(n, c, k) for c in passed) / len(passed)


def reported_ks(n: int, ks: Sequence[int] = KS) -> list[int]:
    """The k values n samples can estimate."""
    return [k for k in ks if k <= n]
