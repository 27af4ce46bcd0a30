"""Payment methods, disputes and credit-history trends recover what the generator put in.

Coverage claims are checked across the three seeded small ledgers (as in
test_incentives): with calibrated 90% intervals, demanding that every one of k
intervals covers on a single seed would fail 1 - 0.9^k of the time (41% for the
four non-reference methods), so the tests ask for coverage of at least 80% of all
intervals over the seeds, and for each level in at least two of the three seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arresearch.config import load_assumptions
from arresearch.disputes import (
    dispute_effect,
    disputes_by_reason,
    disputes_by_segment,
    fit_disputes,
    open_disputes,
    prepare_dispute_data,
)
from arresearch.history import payment_trend
from arresearch.ledger import prepare_ledger
from arresearch.methods import channel_effects, fee_per_invoice, method_effects, switch_candidates
from arresearch.models.sampling import FitSettings
from arresearch.synth import METHOD_EFFECTS, generate

pytestmark = pytest.mark.slow
SEEDS = (11, 12, 13)


def test_fees_follow_config():
    fees = load_assumptions()["fees"]
    amt = np.array([1000.0, 2000.0])
    assert np.allclose(fee_per_invoice("card", amt, fees), [25.0, 50.0])
    assert np.allclose(fee_per_invoice("check", amt, fees), [4.0, 4.0])
    assert np.allclose(fee_per_invoice("barter", amt, fees), [1.0, 1.0])  # unknown method: 'other'


def test_method_effects_cover_generating_values(small_fit):
    rows = []
    for seed in SEEDS:
        post = small_fit(seed)[2].posterior["beta_method_0"]
        draws = post.values.reshape(-1, post.shape[-1])
        lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
        for j, m in enumerate(map(str, post["method"].values)):
            true = METHOD_EFFECTS[m] - METHOD_EFFECTS["ach"]
            rows.append((seed, m, lo[j] <= true <= hi[j]))
    cov = pd.DataFrame(rows, columns=["seed", "method", "covered"])
    assert cov["covered"].mean() >= 0.8, cov
    assert (cov.groupby("method")["covered"].sum() >= 2).all(), cov


def test_method_table_and_switch_candidates(small_fit):
    fit = small_fit(11)[2]
    a = load_assumptions()
    t = method_effects(fit, a)
    assert set(t["segment"]) == set(fit.data.segments)
    ref = t[t["method"] == "ach"]
    assert (ref["effect_days"] == 0).all() and (ref["evidence"] == "reference").all()
    check = t[t["method"] == "check"]
    assert (check["effect_days_q05"] > 0).all()  # checks are slower than ACH in every segment
    card = t[t["method"] == "card"]
    assert np.allclose(card["cost_per_1000"], 25.0)  # 2.5% of the amount
    # evidence labels follow the model's rule: methods vary within customers in the synthetic ledger, the
    # billing channel never does
    assert (t.loc[t["method"] != "ach", "evidence"] == "within customers").all()
    ch = channel_effects(fit, a)
    assert (ch.loc[ch["evidence"] != "reference", "evidence"] == "between customers (habit)").all()
    sc = switch_candidates(fit, a)
    assert sc["annual_net_value"].is_monotonic_decreasing
    assert not (sc["usual_method"] == sc["switch_to"]).any()
    # moving a check payer to ACH saves days; fees go down too (4.00 -> 0.30), so the value is positive
    chk = sc[(sc["usual_method"] == "check") & (sc["switch_to"] == "ach")]
    assert len(chk) and (chk["days_saved_per_invoice"] > 0).mean() > 0.9 and (chk["annual_net_value"] > 0).all()


@pytest.fixture(scope="module")
def dispute_fits(small_fit):
    return {seed: (small_fit(seed)[0], fit_disputes(small_fit(seed)[1], FitSettings(seed=3), progress=False))
            for seed in SEEDS}


def test_dispute_rates_cover_truth(dispute_fits):
    rows = []
    for seed, (s, fit) in dispute_fits.items():
        t = disputes_by_segment(fit)
        for r in t.itertuples():
            true = s.truth["segments"][r.segment]["dispute_rate"]
            rows.append((seed, r.segment, r.dispute_rate_q05 <= true <= r.dispute_rate_q95))
    cov = pd.DataFrame(rows, columns=["seed", "segment", "covered"])
    assert cov["covered"].mean() >= 0.8, cov
    assert (cov.groupby("segment")["covered"].sum() >= 2).all(), cov


def test_censored_resolution_time_beats_naive_mean():
    """A young ledger (4 months) leaves many long disputes unresolved: dropping them biases the mean down."""
    s = generate(seed=11, n_customers=300, months=4)
    led = prepare_ledger(s.observed(), s.as_of)
    d = prepare_dispute_data(led)
    assert (~d.res_resolved).mean() > 0.1  # the censoring is material
    fit = fit_disputes(led, FitSettings(seed=3), progress=False, cache=False)
    r = disputes_by_reason(fit).set_index("reason")
    truth = s.truth["reason_mean_resolution_days"]
    shares = r.drop(index="all")["n_disputes"]
    true_all = sum(truth[k] * n for k, n in shares.items()) / shares.sum()
    row = r.loc["all"]
    assert row["mean_resolution_q05"] <= true_all <= row["mean_resolution_q95"]
    assert abs(row["mean_resolution_days"] - true_all) < abs(row["naive_mean_resolved_only"] - true_all)
    assert row["naive_mean_resolved_only"] < true_all  # the naive mean is too short, as it must be


def test_open_disputes_and_effect(dispute_fits, small_fit):
    s, fit = dispute_fits[11]
    od = open_disputes(fit)
    led = fit.data.ledger
    assert len(od) == int((led["disputed"] & led["dispute_resolved_date"].isna()
                           & led["dispute_opened_date"].notna()).sum())
    assert od["dispute_opened_date"].is_monotonic_increasing  # oldest first
    known = od["expected_resolution_date"].dropna()
    assert (known > s.as_of).all()
    eff = dispute_effect(small_fit(11)[2])
    assert (eff["dispute_effect_q05"] > 0).all()  # a dispute holds payment back in every segment


def test_payment_trend_finds_planted_slowdown(small_fit):
    fit = small_fit(11)[2]
    base = payment_trend(fit)
    assert (base["direction"].isin(["slower", "faster"])).mean() <= 0.05  # the generator has no trends
    led = fit.data.ledger.copy()
    big = led.groupby("customer_id").size().sort_values().index[-40:]
    chosen = np.random.default_rng(0).choice(big, 8, replace=False)
    start = pd.Timestamp(base.attrs["window_start"])
    years = ((led["invoice_date"] - start).dt.days / 365.25).clip(lower=0)
    m = led["customer_id"].isin(chosen) & led["days_to_pay"].notna()
    led.loc[m, "days_to_pay"] = np.round(led.loc[m, "days_to_pay"].astype(float) * np.exp(0.5 * years[m]))
    t = payment_trend(fit, ledger=led).set_index("customer_id")
    assert (t.loc[chosen, "direction"] == "slower").sum() >= 5
    others = t.drop(index=chosen)
    assert (others["direction"] == "slower").mean() <= 0.03
