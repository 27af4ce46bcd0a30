"""KPIs against hand-computed examples."""

from __future__ import annotations

import pandas as pd
import pytest

from arresearch.kpi import aging, ar_balance, count_back_dso, kpi_trend, month_kpis
from arresearch.ledger import prepare_ledger


def _ledger(rows, as_of="2025-03-31"):
    df = pd.DataFrame(rows, columns=["invoice_id", "invoice_date", "due_date", "amount", "paid_date"])
    for c in ("invoice_date", "due_date", "paid_date"):
        df[c] = pd.to_datetime(df[c]).astype("datetime64[s]")
    df["customer_id"] = "c1"
    df["segment"] = "all"
    df["discount_pct"] = 0.0
    df["discount_days"] = 0
    df["payment_method"] = "ach"
    df["billing_channel"] = "electronic"
    df["disputed"] = False
    df["dispute_opened_date"] = pd.NaT
    df["dispute_resolved_date"] = pd.NaT
    df["dispute_reason"] = pd.NA
    return prepare_ledger(df, as_of)


@pytest.fixture
def led():
    # February 2025 (28 days): begins with 1,000 open (A), sells 3,000 (B, C), collects A and B.
    return _ledger([
        ("A", "2025-01-10", "2025-02-09", 1000.0, "2025-02-20"),  # paid late in Feb
        ("B", "2025-02-01", "2025-03-03", 2000.0, "2025-02-25"),  # paid early
        ("C", "2025-02-10", "2025-02-20", 1000.0, None),          # past due at Feb end (8 days)
        ("D", "2024-11-01", "2024-12-01", 500.0, None),           # 89 days past due at Feb end
    ])


def test_balances_and_aging(led):
    assert ar_balance(led, "2025-01-31") == 1500.0
    assert ar_balance(led, "2025-02-28") == 1500.0
    assert ar_balance(led, "2025-02-28", current_only=True) == 0.0
    ag = aging(led, "2025-02-28").set_index("bucket")
    assert ag.loc["1-30", "count"] == 1 and ag.loc["1-30", "amount"] == 1000.0
    assert ag.loc["61-90", "amount"] == 500.0
    assert ag["amount"].sum() == 1500.0


def test_month_kpis_hand_computed(led):
    k = month_kpis(led, "2025-02")
    assert k["credit_sales"] == 3000.0
    assert k["dso"] == pytest.approx(1500 / 3000 * 28)  # 14 days
    assert k["best_possible_dso"] == 0.0
    assert k["average_days_delinquent"] == pytest.approx(14.0)
    # CEI = (1500 + 3000 - 1500) / (1500 + 3000 - 0) * 100
    assert k["cei"] == pytest.approx(3000 / 4500 * 100)
    assert k["collected"] == 3000.0
    assert k["share_paid_late"] == pytest.approx(0.5)


def test_count_back_dso(led):
    # AR 1,500 at Feb end; Feb sales 3,000 cover it: 1500/3000 * 28 = 14 days
    assert count_back_dso(led, "2025-02-28") == pytest.approx(14.0)
    # at Jan end: AR 1,500; Jan sales 1,000 (31 days), Dec sales 0 (31), Nov sales 500 covers the rest (30 days)
    assert count_back_dso(led, "2025-01-31") == pytest.approx(31 + 31 + 30)


def test_nothing_after_as_of(led):
    with pytest.raises(ValueError, match="after the ledger's as-of date"):
        month_kpis(led, "2025-04")
    trend = kpi_trend(led, "2025-03", months=12)
    assert list(trend["month"])[-1] == "2025-03" and len(trend) == 5  # Nov 2024 .. Mar 2025
