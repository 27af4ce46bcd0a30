"""The as-of cut: nothing after the as-of date leaks into the ledger."""

from __future__ import annotations

import pandas as pd

from arresearch.ledger import latest_complete_month, month_end, prepare_ledger
from arresearch.validate import validate_files


def test_as_of_cut_and_derived_columns(write_csv, good_cols):
    cols = {**good_cols, "disputed": ["no", "yes", "no"],
            "dispute_opened_date": ["", "2025-01-20", ""], "dispute_resolved_date": ["", "2025-02-15", ""]}
    clean = validate_files(write_csv(cols)).clean
    led = prepare_ledger(clean, "2025-02-10")
    assert list(led["invoice_id"]) == ["0001", "0002", "0003"]
    row = led.set_index("invoice_id")
    assert row.loc["0001", "days_to_pay"] == 29 and row.loc["0001", "days_late"] == -1
    assert row.loc["0003", "is_open"]  # paid 2025-03-10, after the as-of date
    assert row.loc["0003", "age_days"] == 9
    assert pd.isna(row.loc["0002", "dispute_resolved_date"])  # resolved after as-of: unresolved
    assert row.loc["0002", "days_past_due"] == 6
    assert led.attrs["as_of"] == "2025-02-10"
    led2 = prepare_ledger(clean, "2025-01-31")
    assert list(led2["invoice_id"]) == ["0001", "0002"]
    assert led2["disputed"].iloc[1]  # dispute opened 2025-01-20, before the as-of date: stays
    led3 = prepare_ledger(clean, "2025-01-10")
    assert not led3.set_index("invoice_id").loc["0002", "disputed"]  # opened after as-of


def test_months():
    assert month_end("2025-02") == pd.Timestamp("2025-02-28")
    df = pd.DataFrame({"invoice_date": pd.to_datetime(["2025-01-03", "2025-03-14"]),
                       "paid_date": pd.to_datetime(["2025-03-20", None])})
    assert latest_complete_month(df) == "2025-02"
    df.loc[1, "paid_date"] = pd.Timestamp("2025-03-31")
    assert latest_complete_month(df) == "2025-03"
