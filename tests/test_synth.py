"""The synthetic ledger: reproducible, realistic, and its truth agrees with its data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from arresearch.ledger import prepare_ledger
from arresearch.synth import generate, write_synthetic
from arresearch.validate import validate_files


@pytest.fixture(scope="module")
def big():
    return generate(seed=7, n_customers=600, months=24)


def test_same_seed_same_files(tmp_path):
    a = write_synthetic(tmp_path / "a", seed=3, n_customers=60, months=6)
    b = write_synthetic(tmp_path / "b", seed=3, n_customers=60, months=6)
    c = write_synthetic(tmp_path / "c", seed=4, n_customers=60, months=6)
    for k in a:
        assert a[k].read_bytes() == b[k].read_bytes(), k
    assert a["invoices"].read_bytes() != c["invoices"].read_bytes()


def test_default_shape_covers_every_practice():
    led = generate()  # the default demo: 1,000 customers, 24 months
    inv = led.observed()
    assert 45_000 <= len(inv) <= 55_000
    assert inv["segment"].nunique() >= 5
    assert set(inv["due_date"].sub(inv["invoice_date"]).dt.days.unique()) == {30, 45, 60}
    assert set(inv["payment_method"]) >= {"check", "ach", "card", "wire", "eft"}
    t = led.truth
    designs = {s["design"] for s in t["segments"].values()}
    assert designs == {"randomized", "targeted", "none"}
    cust = t["customers"].values()
    assert sum(c["routinely_late"] for c in cust) > 50
    assert sum(c["seasonal"] for c in cust) > 40
    assert sum(c["stopped_paying"] for c in cust) >= 3
    assert inv["paid_date"].isna().mean() > 0.03  # open at the as-of date
    assert inv["disputed"].mean() > 0.02
    assert (inv["disputed"] & inv["dispute_resolved_date"].isna()).sum() > 10  # unresolved disputes


def test_randomized_pilot_difference_agrees_with_truth(big):
    inv = big.invoices  # the future is revealed: every invoice's real payment date
    start = pd.Timestamp(big.truth["discount"]["programme_start"])
    for seg, st in big.truth["segments"].items():
        if st["design"] != "randomized":
            continue
        w = inv[(inv["segment"] == seg) & (inv["invoice_date"] >= start) & inv["paid_date"].notna()]
        dtp = (w["paid_date"] - w["invoice_date"]).dt.days
        off = w["discount_pct"] > 0
        diff = dtp[off].mean() - dtp[~off].mean()
        se = np.sqrt(dtp[off].var() / off.sum() + dtp[~off].var() / (~off).sum())
        assert abs(diff - st["discount_effect_days"]) < 3 * se, (seg, diff, st["discount_effect_days"], se)


def test_targeted_naive_difference_is_biased(big):
    """In targeted segments the offered customers are slower, so a naive comparison misleads."""
    inv = big.invoices
    start = pd.Timestamp(big.truth["discount"]["programme_start"])
    gaps = []
    for seg, st in big.truth["segments"].items():
        if st["design"] != "targeted":
            continue
        w = inv[(inv["segment"] == seg) & (inv["invoice_date"] >= start) & inv["paid_date"].notna()]
        dtp = (w["paid_date"] - w["invoice_date"]).dt.days
        off = w["discount_pct"] > 0
        gaps.append((dtp[off].mean() - dtp[~off].mean()) - st["discount_effect_days"])
    assert max(gaps) > 4  # the naive difference overstates (less negative) by days


def test_truth_p_late_matches_observed_late_share(big):
    """Customers' observed late share tracks truth p_late (rank correlation)."""
    inv = big.invoices[(big.invoices["discount_pct"] == 0) & ~big.invoices["disputed"] & big.invoices["paid_date"].notna()]
    late = (inv["paid_date"] > inv["due_date"]).groupby(inv["customer_id"]).agg(["mean", "size"])
    late = late[late["size"] >= 20]
    truth = pd.Series({k: v["p_late"] for k, v in big.truth["customers"].items()})
    rho = late["mean"].corr(truth.reindex(late.index), method="spearman")
    assert rho > 0.75


def test_demo_files_validate(tmp_path):
    paths = write_synthetic(tmp_path, seed=5, n_customers=80, months=8, dirty_rows=12)
    res = validate_files(paths["invoices"], paths["customers"])
    r = res.report
    assert r["rows_quarantined"] + r["rows_collapsed"] >= 10  # the dirty rows are caught
    assert r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] + r["rows_collapsed"]
    truth = json.loads(paths["truth"].read_text())
    led = prepare_ledger(res.clean, truth["as_of"])
    assert led["is_open"].sum() > 0
    assert (led["days_to_pay"].dropna() >= 0).all()
