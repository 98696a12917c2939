"""A smaller A/A study than benchmarks_nbs/ab_calibration.ipynb: the same code path, fewer units per experiment."""
import numpy as np

from musicml.experiment.analysis import srm_check
from musicml.experiment.calibration import aa_study, cuped_study


def test_aa_false_positive_rates():
    r = aa_study(n_sims=2000, n_units=300, msprt_units=1000, peek_every=30, seed=1)
    rates = r["rates"]
    assert abs(rates["ttest"] - 0.05) <= 0.01, rates
    assert abs(rates["ztest"] - 0.05) <= 0.01, rates
    assert rates["msprt_continuous_peeking"] <= 0.05 + 0.01, rates   # anytime-valid: an upper bound
    assert rates["naive_ttest_peeking"] > 0.15, rates                # what peeking does without it


def test_cuped_matches_theory():
    for r in cuped_study(rhos=(0.5, 0.9), n_sims=1000, n_units=500, seed=2):
        assert abs(r["rel_error_estimated"]) < 0.05, r
        assert abs(r["rel_error_empirical"]) < 0.12, r   # 1000 experiments: sampling error of a variance ratio ~ 4.5%
        assert abs(r["bias_cuped"]) < 0.01, r


def test_srm_acceptance():
    assert srm_check([505_000, 495_000]).mismatch
    assert not srm_check([500_000, 500_000]).mismatch
    assert not srm_check([500_300, 499_700]).mismatch  # p = 0.55: chance level imbalance passes
    assert np.isclose(srm_check([505_000, 495_000]).chi2, 100.0)


def test_ztest_exact_size():
    from musicml.experiment.calibration import ztest_exact_size
    for n, p in ((1000, 0.1), (300, 0.3)):
        assert abs(ztest_exact_size(n, n, p) - 0.05) < 0.003, (n, p)
