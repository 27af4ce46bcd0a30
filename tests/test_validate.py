"""Every validation rule, each with one small fixture of bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from arresearch.cli import main
from arresearch.config import DataError
from arresearch.validate import validate_files


def _one_bad(good_cols, column, value, row=1):
    cols = {k: list(v) for k, v in good_cols.items()}
    cols[column][row] = value
    return cols


@pytest.mark.parametrize(
    "column,value,reason",
    [
        ("invoice_date", "2025-13-45", "unparseable invoice_date"),
        ("due_date", "soon", "unparseable due_date"),
        ("paid_date", "yesterday", "unparseable paid_date"),
        ("amount", "12,3x", "unparseable amount"),
        ("amount", "0", "amount <= 0"),
        ("amount", "-5", "amount <= 0"),
        ("due_date", "2024-12-01", "due_date before invoice_date"),
        ("paid_date", "2024-12-30", "paid_date before invoice_date"),
        ("customer_id", "", "missing customer_id"),
    ],
)
def test_row_rules_quarantine_with_reason(write_csv, good_cols, column, value, reason):
    path = write_csv(_one_bad(good_cols, column, value))
    res = validate_files(path)
    assert res.report["rows_quarantined"] == 1
    assert len(res.clean) == 2
    q = res.quarantine.iloc[0]
    assert q["invoice_id"] == "0002"
    assert reason in q["reason"]
    # the original text is kept in quarantine
    assert (q[column] if pd.notna(q[column]) else "") == value
    assert reason in res.report["reasons"]


@pytest.mark.parametrize("pct,ok", [("0.02", True), ("0.2", True), ("0.25", False), ("-0.01", False)])
def test_discount_range(write_csv, good_cols, pct, ok):
    cols = {**good_cols, "discount_pct": ["0", pct, "0"], "discount_days": ["0", "10", "0"]}
    res = validate_files(write_csv(cols))
    assert (res.report["rows_quarantined"] == 0) is ok
    if not ok:
        assert "discount_pct outside" in res.quarantine["reason"].iloc[0]


def test_dispute_resolved_before_opened(write_csv, good_cols):
    cols = {**good_cols, "disputed": ["no", "yes", "no"],
            "dispute_opened_date": ["", "2025-01-20", ""], "dispute_resolved_date": ["", "2025-01-10", ""]}
    res = validate_files(write_csv(cols))
    assert res.report["rows_quarantined"] == 1
    assert "dispute resolved before opened" in res.quarantine["reason"].iloc[0]


def test_duplicates_identical_collapse_conflicting_quarantined(write_csv, good_cols):
    cols = {k: v + [v[0], v[1]] for k, v in good_cols.items()}
    cols["amount"][-1] = "999"  # conflicting copy of 0002
    res = validate_files(write_csv(cols))
    r = res.report
    assert r["rows_in"] == 5
    assert r["rows_collapsed"] == 1  # identical copy of 0001
    assert r["rows_quarantined"] == 2  # both copies of 0002
    assert sorted(res.clean["invoice_id"]) == ["0001", "0003"]
    assert set(res.quarantine["invoice_id"]) == {"0002"}


def test_counts_and_amounts_reconcile(write_csv, good_cols):
    cols = {k: v + [v[0]] for k, v in good_cols.items()}
    cols["amount"][1] = "-3"
    cols["due_date"][2] = "2020-01-01"
    res = validate_files(write_csv(cols))
    r = res.report
    assert r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] + r["rows_collapsed"]
    assert r["amount_in"] == pytest.approx(r["amount_accepted"] + r["amount_quarantined"] + r["amount_collapsed"])
    assert r["amount_in"] == pytest.approx(100 - 3 + 80 + 100)


def test_as_of_counts_later_invoices(write_csv, good_cols):
    res = validate_files(write_csv(good_cols), as_of="2025-01-31")
    assert res.report["rows_after_as_of"] == 1
    assert len(res.clean) == 2


@pytest.mark.parametrize(
    "setup,expect",
    [
        ("missing_file", "invoices file not found"),
        ("empty_file", "is empty"),
        ("header_only", "no rows"),
        ("missing_column", "required invoice column(s) ['amount'] missing"),
        ("bad_type", "unsupported file type"),
    ],
)
def test_fatal_problems_one_line_exit_2(tmp_path, write_csv, good_cols, capsys, setup, expect):
    path = tmp_path / "invoices.csv"
    if setup == "empty_file":
        path.write_text("")
    elif setup == "header_only":
        path.write_text("invoice_id,customer_id,invoice_date,due_date,amount\n")
    elif setup == "missing_column":
        cols = dict(good_cols)
        cols.pop("amount")
        path = write_csv(cols)
    elif setup == "bad_type":
        path = tmp_path / "invoices.json"
        path.write_text("{}")
    rc = main(["validate", "--invoices", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert expect in err and str(path) in err
    if setup == "missing_column":
        assert "invoice_id" in err  # names the columns that are there


def test_validate_cli_writes_outputs_and_never_touches_raw(tmp_path, write_csv, good_cols):
    cols = _one_bad(good_cols, "amount", "0")
    path = write_csv(cols)
    before = path.read_bytes()
    out = tmp_path / "out"
    assert main(["validate", "--invoices", str(path), "--out", str(out)]) == 0
    assert path.read_bytes() == before
    report = json.loads((out / "validation.json").read_text())
    for key in ("rows_in", "rows_accepted", "rows_quarantined", "rows_collapsed", "amount_in",
                "amount_accepted", "amount_quarantined", "reasons"):
        assert key in report
    q = pd.read_csv(out / "quarantine.csv", dtype=str)
    assert list(q["reason"]) == ["amount <= 0"]
    clean = pd.read_parquet(out / "clean.parquet")
    assert list(clean["invoice_id"]) == ["0001", "0003"]


def test_segment_from_customers_file_else_all(tmp_path, write_csv, good_cols):
    inv = write_csv(good_cols)
    cust = write_csv({"customer_id": ["007"], "segment": ["retail"], "customer_name": ["=HYPERLINK()"]},
                     name="customers.csv")
    res = validate_files(inv, cust)
    seg = dict(zip(res.clean["invoice_id"], res.clean["segment"], strict=True))
    assert seg == {"0001": "retail", "0002": "retail", "0003": "all"}


def test_excel_and_parquet_read_like_csv(tmp_path, good_cols):
    df = pd.DataFrame(good_cols)
    xl = tmp_path / "inv.xlsx"
    df.to_excel(xl, index=False)
    pq = tmp_path / "inv.parquet"
    typed = df.assign(invoice_date=pd.to_datetime(df["invoice_date"]), amount=df["amount"].astype(float))
    typed.to_parquet(pq)
    for path in (xl, pq):
        res = validate_files(path)
        assert res.report["rows_accepted"] == 3, path
        assert list(res.clean["invoice_id"]) == ["0001", "0002", "0003"]
        assert res.clean["invoice_date"].iloc[2] == pd.Timestamp("2025-02-01")


def test_unknown_mapping_file_is_fatal(tmp_path, write_csv, good_cols):
    with pytest.raises(DataError, match="mapping file not found"):
        validate_files(write_csv(good_cols), mapping=tmp_path / "nope.yaml")
