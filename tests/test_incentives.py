"""Incentives: discount effects per segment recover the truth, including where offers were targeted.

Three seeded small ledgers (150 customers, 18 months; the discount programme runs
for the last 12) give 3 x 4 = 12 segments with offers. The issue's tolerance: the
90% intervals cover the true per-segment effect for at least 80% of them (10 of
12; with perfect calibration the expected count is 10.8), the sign is right
wherever the true effect is larger than 2 days, and in the targeted segments the
naive difference in means misses (so the coverage is not a gift of the design).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arresearch.config import load_assumptions
from arresearch.incentives import (
    annualised_discount_cost,
    incentive_draws,
    naive_comparison,
    offer_evidence,
    pilot_plan,
    segment_incentives,
    terms_incentives,
)

SEEDS = (11, 12, 13)


def test_annualised_cost_textbook_value():
    assert annualised_discount_cost(0.02, 10, 30) == pytest.approx(0.3724, abs=1e-4)
    assert np.isnan(annualised_discount_cost(0.02, 30, 30))


def _ledger(rows):
    df = pd.DataFrame(rows, columns=["customer_id", "segment", "invoice_date", "discount_offered", "is_open",
                                     "days_to_pay"])
    df["invoice_date"] = pd.to_datetime(df["invoice_date"])
    return df


def test_naive_comparison_by_hand():
    led = _ledger([("a", "s", "2025-01-01", False, False, 50.0),  # before the first offer: outside the window
                   ("a", "s", "2025-02-01", True, False, 10.0), ("b", "s", "2025-02-02", True, False, 20.0),
                   ("b", "s", "2025-02-03", False, False, 40.0), ("b", "s", "2025-02-04", True, True, None)])
    row = naive_comparison(led).iloc[0]
    assert (row["n_offered_paid"], row["n_not_offered_paid"]) == (2, 1)
    assert row["naive_effect_days"] == pytest.approx(15.0 - 40.0)


def test_offer_evidence_tells_pilots_from_targeting(ledger_small):
    ev = offer_evidence(ledger_small)
    assert ev["retail"] == ev["manufacturing"] == "randomized"
    assert ev["wholesale"] == ev["healthcare"] == "observational"
    assert ev["public_sector"] == "none"
    declared = offer_evidence(ledger_small, randomized_segments=["wholesale"])
    assert declared["wholesale"] == "randomized" and declared["retail"] == "observational"


@pytest.fixture(scope="module")
def tables(small_fit):
    a = load_assumptions()
    out = []
    for seed in SEEDS:
        s, _, fit = small_fit(seed)
        t = segment_incentives(fit, a, max_draws=400)
        truth = s.truth["segments"]
        t["truth"] = [truth[g]["discount_effect_days"] for g in t["segment"]]
        t["design"] = [truth[g]["design"] for g in t["segment"]]
        t["seed"] = seed
        out.append(t)
    return pd.concat(out, ignore_index=True)


@pytest.mark.slow
def test_effect_intervals_cover_truth_across_seeds(tables):
    est = tables[tables["evidence"] != "none"]
    assert len(est) == 12
    covered = (est["effect_days_q05"] <= est["truth"]) & (est["truth"] <= est["effect_days_q95"])
    assert covered.mean() >= 0.8, est[["seed", "segment", "effect_days_q05", "effect_days_q95", "truth"]]
    # the confounded segments are part of the count, and covered too
    assert covered[est["design"] == "targeted"].mean() >= 0.8
    big = est["truth"].abs() > 2
    assert (np.sign(est.loc[big, "effect_days"]) == np.sign(est.loc[big, "truth"])).all()


@pytest.mark.slow
def test_naive_difference_misses_where_offers_were_targeted(tables):
    t = tables[tables["design"] == "targeted"]
    naive_err = (t["naive_effect_days"] - t["truth"]).abs()
    model_err = (t["effect_days"] - t["truth"]).abs()
    assert naive_err.mean() > 2 * model_err.mean()
    outside = (t["naive_effect_days"] < t["effect_days_q05"]) | (t["naive_effect_days"] > t["effect_days_q95"])
    assert outside.mean() >= 0.5


@pytest.mark.slow
def test_no_offers_means_no_estimate(tables):
    none = tables[tables["evidence"] == "none"]
    assert set(none["segment"]) == {"public_sector"}
    assert none["effect_days"].isna().all() and none["net_value_per_1000"].isna().all()
    assert (none["recommendation"] == "test").all()


@pytest.mark.slow
def test_money_adds_up_and_recommendation_follows_it(small_fit):
    _, _, fit = small_fit(11)
    a = load_assumptions()
    draws = incentive_draws(fit, a, max_draws=200)
    seg = segment_incentives(fit, a, draws=draws)
    for r in seg.dropna(subset=["effect_days"]).itertuples():
        # discount cost = take-up x 2% per unit invoiced (up to disputed invoices, which cannot take it)
        assert r.discount_cost_per_1000 == pytest.approx(r.uptake * 0.02 * 1000, rel=0.15)
        expected = ("stop" if r.p_net_positive <= 0.1 else "test" if r.p_net_positive < 0.9 else ("offer", "extend"))
        assert r.recommendation in expected
    # a cost of capital ten times higher makes the same days saved worth ten times more financing
    rich = load_assumptions()
    rich.values["cost_of_capital"] = 0.8
    seg_rich = segment_incentives(fit, rich, draws=incentive_draws(fit, rich, max_draws=200))
    ratio = seg_rich["financing_per_1000"] / seg["financing_per_1000"]
    assert np.allclose(ratio.dropna(), 10.0, rtol=0.02)
    plan = pilot_plan(draws, seg)
    assert set(plan["segment"]) == set(seg.loc[seg["recommendation"] == "test", "segment"])
    p_cols = [c for c in plan if c.startswith("p_settled_")]
    assert (plan[p_cols].diff(axis=1).iloc[:, 1:] >= -0.05).all().all()  # bigger pilots settle more often


@pytest.mark.slow
def test_shorter_terms_recover_unit_elasticity(small_fit, ledger_small):
    _, _, fit = small_fit(11)
    t = terms_incentives(fit, load_assumptions())
    # the generator scales time to pay with terms (elasticity 1): net 60 -> 30 halves the expected days
    assert (t["effect_days"] < 0).all()
    # (disputed invoices wait for their resolution whatever the terms, which pulls the
    # fitted elasticity slightly below 1: allow 10%)
    post = fit.posterior["beta_terms"].values.ravel()
    assert 0.9 <= post.mean() <= 1.1
