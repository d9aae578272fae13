"""What a few seeds can carry: confidence intervals, paired deltas, corrections for testing many steps at once,
a pooled-variance interval, rank agreement with its uncertainty, and one run's own sampling error. The report
(ablate/report/statistics.py) calls these; they need pandas and scipy, not torch."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05            # two-sided; every interval here is 95%
RESAMPLES = 10_000      # bootstrap and permutation draws (seeded: the same report twice gives the same numbers)

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# Student's t, two-sided 95%, for 1..30 degrees of freedom


def t_975(df: int) -> float:
    """Beyond 30 degrees of freedom, 1.96 + 2.4/df is within 0.002 of the exact quantile."""
    return T_975[df - 1] if df <= len(T_975) else 1.960 + 2.4 / df


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with fewer than two values)."""
    v = pd.Series(values, dtype=float).dropna()
    if len(v) < 2:
        return (v.mean() if len(v) else float("nan")), float("nan")
    return v.mean(), t_975(len(v) - 1) * v.std(ddof=1) / len(v) ** 0.5


def paired_delta(runs: pd.DataFrame, reference_runs: pd.DataFrame, metric: str = "top1") -> dict:
    """One experiment's runs minus its reference's over the seeds both have (seed s of both shares data order and
    augmentation draws, so the per-seed differences are paired): mean, 95% CI half-width, the two-sided paired
    t-test's p, seeds used, and the differences and their variance (for the pooled interval and its test)."""
    a, b = runs.set_index("seed")[metric], reference_runs.set_index("seed")[metric]
    common = a.index.intersection(b.index)
    diffs = (a[common] - b[common]).astype(float).dropna()
    mean, half = mean_ci(diffs)
    n = len(diffs)
    var = diffs.var(ddof=1) if n > 1 else float("nan")
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if n > 1 and var > 0 else float("nan")
    return {"delta": mean, "ci": half, "p": p, "paired_seeds": n, "var": var, "diffs": diffs.tolist()}


def resolved(delta: float, ci: float) -> bool:
    """Whether a 95% CI excludes zero (never, without a CI)."""
    return bool(abs(delta) > ci) if pd.notna(ci) and pd.notna(delta) else False


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down verdicts at ALPHA over a family of tests (nan p: not tested, False): controls the chance
    of any false claim among them."""
    p = p_values.dropna().sort_values()
    verdict = pd.Series(False, index=p_values.index)
    for rank, (key, value) in enumerate(p.items()):
        if value > ALPHA / (len(p) - rank):
            break
        verdict[key] = True
    return verdict


def benjamini_hochberg(p_values: pd.Series) -> pd.Series:
    """Benjamini-Hochberg verdicts at ALPHA (nan p: False): controls the expected share of false claims."""
    p = p_values.dropna().sort_values()
    passing = [rank for rank, value in enumerate(p.values, 1) if value <= ALPHA * rank / len(p)]
    verdict = pd.Series(False, index=p_values.index)
    if passing:
        verdict[p.index[:max(passing)]] = True
    return verdict


def pooled_ci(variances: pd.Series, seeds: pd.Series) -> tuple[pd.Series, float, int]:
    """95% half-widths of each delta under one variance shared by all the paired differences of a sweep:
    s² pooled over steps (weights n - 1), t on the summed degrees of freedom. Returns the half-widths, the pooled
    standard deviation and the degrees of freedom. Valid only if the steps' variances may be equal:
    equal_variance_p tests that."""
    ok = variances.notna() & (seeds > 1)
    df = int((seeds[ok] - 1).sum())
    if df == 0:
        return pd.Series(float("nan"), index=variances.index), float("nan"), 0
    sd = math.sqrt(((seeds[ok] - 1) * variances[ok]).sum() / df)
    half = pd.Series(float("nan"), index=variances.index)
    half[ok] = t_975(df) * sd / np.sqrt(seeds[ok])
    return half, sd, df


def equal_variance_p(groups: list[np.ndarray]) -> float:
    """Brown-Forsythe (Levene about the median) test that the steps' paired differences share one variance; small p
    says the pooled interval is not justified."""
    groups = [g for g in groups if len(g) > 1]
    if len(groups) < 2:
        return float("nan")
    return float(stats.levene(*groups, center="median").pvalue)


def spearman_with_uncertainty(ours: np.ndarray, paper: np.ndarray, seed: int = 0) -> dict:
    """Spearman's rho of our deltas with the paper's, its percentile bootstrap 95% CI over steps (steps resampled
    with replacement) and a two-sided permutation p (the paper's deltas shuffled against ours)."""
    ours, paper = np.asarray(ours, float), np.asarray(paper, float)
    n = len(ours)
    if n < 3:
        return {"spearman": float("nan"), "spearman_ci": (float("nan"), float("nan")), "spearman_p": float("nan")}
    rho = stats.spearmanr(ours, paper).statistic
    rng = np.random.default_rng(seed)
    draws = np.array([rng.integers(0, n, n) for _ in range(RESAMPLES)])
    a, b = ours[draws], paper[draws]
    ordered = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)  # a resample of one repeated step has no rank order
    boot = _row_spearman(a[ordered], b[ordered])
    shuffled = np.array([rng.permutation(paper) for _ in range(RESAMPLES)])
    perms = _row_spearman(np.broadcast_to(ours, shuffled.shape), shuffled)
    p = (1 + np.sum(np.abs(perms) >= abs(rho) - 1e-12)) / (RESAMPLES + 1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"spearman": float(rho), "spearman_ci": (float(low), float(high)), "spearman_p": float(p)}


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (scipy's spearmanr: the Pearson correlation of average ranks), all at once."""
    ra, rb = (stats.rankdata(x, axis=1) for x in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    return (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))


def sign_agreement_p(agree: int, steps: int) -> float:
    """One-sided binomial p of at least `agree` of `steps` signs matching by chance (each sign a fair coin)."""
    return float(stats.binomtest(agree, steps, 0.5, alternative="greater").pvalue) if steps else float("nan")


def binomial_se(top1_percent: float, images: int) -> float:
    """One run's sampling error of its val top-1, in points: the binomial standard error over its val images."""
    p = top1_percent / 100
    return 100 * math.sqrt(p * (1 - p) / images) if images else float("nan")
