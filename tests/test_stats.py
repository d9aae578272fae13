"""What a few seeds can carry: the corrections, the pooled interval, rank agreement with its uncertainty, checked
against values computed independently (scipy, statsmodels' published examples, hand arithmetic)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from ablate.stats import (benjamini_hochberg, binomial_se, equal_variance_p, holm, paired_delta, pooled_ci,
                          sign_agreement_p, spearman_with_uncertainty)


def test_holm_and_benjamini_hochberg_verdicts():
    # p sorted: .001 .008 .039 .041 .042 .060 .074 .205
    p = pd.Series([0.041, 0.001, 0.074, 0.008, 0.205, 0.039, 0.060, 0.042, float("nan")], index=list("abcdefghi"))
    # Holm: .001 <= .05/8 = .00625, then .008 > .05/7 = .00714 -> stop
    assert holm(p)[lambda v: v].index.tolist() == ["b"]
    # BH: the largest k with p_(k) <= .05 k / 8 is k=2 (.008 <= .0125; .039 > .01875, ..., .205 > .05) -> b, d
    assert benjamini_hochberg(p)[lambda v: v].index.tolist() == ["b", "d"]
    q = pd.Series([0.01, 0.02, 0.03, 0.04])  # BH passes all four (.04 <= .05), Holm only the first (.02 > .05/3)
    assert benjamini_hochberg(q).all() and holm(q).tolist() == [True, False, False, False]


def test_paired_delta_p_is_the_paired_t_test():
    a = pd.DataFrame({"seed": [0, 1, 2], "top1": [60.0, 61.5, 59.0]})
    b = pd.DataFrame({"seed": [0, 1, 2, 3], "top1": [58.0, 60.0, 58.5, 99.0]})  # seed 3 has no partner
    d = paired_delta(a, b)
    assert d["paired_seeds"] == 3 and d["delta"] == pytest.approx(4 / 3)
    assert d["p"] == pytest.approx(sp.ttest_rel([60.0, 61.5, 59.0], [58.0, 60.0, 58.5]).pvalue)
    assert d["ci"] == pytest.approx(4.303 * np.std([2.0, 1.5, 0.5], ddof=1) / math.sqrt(3), rel=1e-3)


def test_pooled_interval_shares_one_variance():
    var, seeds = pd.Series([1.0, 4.0, float("nan")]), pd.Series([3, 3, 0])
    half, sd, df = pooled_ci(var, seeds)
    assert df == 4 and sd == pytest.approx(math.sqrt(2.5))
    assert half.iloc[0] == half.iloc[1] == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(3), rel=1e-3)
    assert math.isnan(half.iloc[2])
    same = [np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])]
    assert equal_variance_p(same) == pytest.approx(1.0)
    assert equal_variance_p([np.array([0.0, 0.1, -0.1, 0.05]), np.array([-9.0, 9.0, -8.0, 8.5])]) < 0.05


def test_spearman_comes_with_a_bootstrap_interval_and_a_permutation_p():
    rng = np.random.default_rng(1)
    paper = rng.normal(size=13)
    ours = paper + rng.normal(scale=0.3, size=13)
    r = spearman_with_uncertainty(ours, paper)
    assert r["spearman"] == pytest.approx(sp.spearmanr(ours, paper).statistic)
    low, high = r["spearman_ci"]
    assert low < r["spearman"] < high <= 1 and r["spearman_p"] < 0.05
    # the permutation p agrees with the t approximation scipy reports, to within the resampling error
    assert r["spearman_p"] == pytest.approx(sp.spearmanr(ours, paper).pvalue, abs=0.01)
    unrelated = spearman_with_uncertainty(rng.normal(size=13), paper)  # a fixed draw, independent of `paper`
    assert unrelated["spearman_p"] > 0.05 and unrelated["spearman_ci"][0] < 0 < unrelated["spearman_ci"][1]
    assert spearman_with_uncertainty(ours, paper) == r  # seeded: the same report twice


def test_sign_agreement_and_one_runs_sampling_error():
    assert sign_agreement_p(9, 13) == pytest.approx(sum(math.comb(13, k) for k in range(9, 14)) / 2**13)
    assert sign_agreement_p(9, 13) == pytest.approx(0.1334, abs=1e-4)  # the p = 0.13
    assert binomial_se(60.0, 10_000) == pytest.approx(100 * math.sqrt(0.6 * 0.4 / 10_000))
