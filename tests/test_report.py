"""The whole monthly pipeline on a small ledger with the default (converging) chains."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

from arresearch import kpi
from arresearch.config import DataError
from arresearch.pipeline import load
from arresearch.report import NOTEBOOKS, build_report
from arresearch.synth import write_synthetic

pytestmark = pytest.mark.slow
EVIL = '<script>alert("x")</script> & =cmd|Co'


@pytest.fixture(scope="module")
def built(tmp_path_factory, fit_cache):
    root = tmp_path_factory.mktemp("report")
    paths = write_synthetic(root / "raw", seed=21, n_customers=100, months=14, dirty_rows=6)
    cust = pd.read_csv(paths["customers"], dtype=str)
    cust["customer_name"] = EVIL
    cust.to_csv(paths["customers"], index=False)
    out = build_report(month=None, invoices=paths["invoices"], customers=paths["customers"], out_root=root / "reports")
    return root, paths, out


def test_files_written(built):
    _, _, out = built
    for f in ["index.html", "worklist.xlsx", "01_overview.html", "01_overview.code.html", "02_payment_delay.html",
              "02_payment_delay.code.html", "data/customer_risk.csv", "data/open_invoice_forecast.csv",
              "data/collections_forecast.csv", "data/kpi_trend.csv", "data/aging.csv", "data/quarantine.csv",
              "data/validation.json", "notebooks/01_overview.ipynb", "notebooks/02_payment_delay.ipynb",
              "03_incentives.html", "03_incentives.code.html", "data/segment_incentives.csv",
              "data/terms_incentives.csv", "data/pilot_plan.csv", "04_payment_methods.html",
              "05_disputes.code.html", "data/payment_methods.csv", "data/switch_candidates.csv",
              "data/disputes_by_segment.csv", "data/open_disputes.csv", "data/payment_trend.csv"]:
        assert (out / f).is_file(), f
    assert out.name == "2025-02"  # the latest complete month of a 14-month ledger from 2024-01
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # the run parameters name the published data folder, not the staging folder the notebooks ran in
    index = (out / "index.html").read_text()
    assert str((out / "notebooks" / "data").resolve()) in index and f"/.{out.name}-" not in index


def test_summary_numbers_match_kpi_functions(built):
    _, paths, out = built
    led = load(paths["invoices"], paths["customers"], as_of="2025-02-28").ledger
    trend = pd.read_csv(out / "data" / "kpi_trend.csv")
    k = kpi.month_kpis(led, "2025-02")
    row = trend.iloc[-1]
    assert row["month"] == "2025-02"
    for key in ("dso", "dso_count_back", "best_possible_dso", "cei", "ar_end"):
        assert row[key] == pytest.approx(k[key], rel=1e-4), key
    page = (out / "index.html").read_text()
    assert f"{k['dso']:,.1f}" in page
    fc = pd.read_csv(out / "data" / "collections_forecast.csv")
    assert len(fc) == 13 and (fc["lower"] <= fc["expected"]).all() and (fc["expected"] <= fc["upper"]).all()


def test_discount_recommendations_in_summary(built):
    _, _, out = built
    seg = pd.read_csv(out / "data" / "segment_incentives.csv")
    assert set(seg["recommendation"]) <= {"offer", "extend", "stop", "test"}
    page = (out / "index.html").read_text()
    section = page[page.index("Discount recommendation per segment"):page.index("Data quality")]
    for r in seg.itertuples():
        assert re.search(rf"<td>{r.segment}</td><td>{r.recommendation.upper()}</td>", section), r.segment
    assert "37.2%" in section  # the textbook annualised cost of 2/10 net 30


def test_pages_are_self_contained_and_escaped(built):
    _, _, out = built
    for page in out.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"<script[^>]*\bsrc=[\"']?https?://", text, re.I), page
        assert not re.search(r"<link[^>]*href=[\"']?https?://", text, re.I), page
        assert not re.search(r"import[^;\n]*from\s*[\"']https?://", text), page
        assert not re.search(r"@import\s+url\([\"']?https?://", text), page
    index = (out / "index.html").read_text()
    assert "<script>alert" not in index
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; =cmd|Co" in index


def test_worklist_guards_formulas(built):
    _, _, out = built
    wl = pd.read_excel(out / "worklist.xlsx", sheet_name="call first", dtype=str)
    assert len(wl) > 0
    assert not wl["customer_name"].str.startswith("=").any()


def test_failed_step_keeps_previous_report(built, monkeypatch):
    root, paths, out = built
    before = (out / "index.html").read_bytes()
    monkeypatch.setattr("arresearch.report.NOTEBOOKS", ["99_missing.ipynb"])
    with pytest.raises(DataError, match="report step 'notebook 99_missing.ipynb' failed"):
        build_report(month="2025-02", invoices=paths["invoices"], customers=paths["customers"],
                     out_root=root / "reports")
    assert (out / "index.html").read_bytes() == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_executed_notebooks_pass_nbval(built):
    """Reviewers see every notebook execute: nbval re-runs what papermill produced."""
    _, _, out = built
    nbs = sorted(str(p) for p in (out / "notebooks").glob("*.ipynb"))
    assert len(nbs) == len(NOTEBOOKS)
    res = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", *nbs],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert re.search(r"\b2 passed\b|\b\d+ passed\b", res.stdout)


def test_backtest_appendix_reads_latest_metrics(tmp_path):
    from arresearch.report import _backtest_section

    assert "make backtest" in _backtest_section(tmp_path / "missing.csv")
    p = tmp_path / "backtest_metrics.csv"
    pd.DataFrame({"origin": ["2025-06-30"], "model": ["<b>bayes</b>"], "n": [10], "auc": [0.81234], "brier": [0.2],
                  "mae_days": [9.5], "coverage_80": [0.8]}).to_csv(p, index=False)
    html_ = _backtest_section(p)
    assert "0.812" in html_ and "&lt;b&gt;bayes&lt;/b&gt;" in html_


def test_disputes_section_reads_as_rates_and_days():
    """Rates as percentages with their interval, amounts without decimals, the delay a dispute adds, escaped."""
    from arresearch.report import _disputes_section

    seg = pd.DataFrame({"segment": ["<i>retail</i>", "wholesale"], "dispute_rate": [0.0321, 0.052],
                        "dispute_rate_q05": [0.029, 0.048], "dispute_rate_q95": [0.034, 0.055],
                        "open_disputes": [17, 24], "open_dispute_amount": [49890.63, 122092.09],
                        "dispute_effect_days": [8.266, float("nan")]})
    od = pd.DataFrame({"invoice_id": ["I1"], "customer_id": ["C1"], "dispute_reason": ["pricing"], "amount": [1223.79],
                       "dispute_opened_date": [pd.Timestamp("2025-04-01")],
                       "expected_resolution_date": [pd.Timestamp("2026-01-31")]})
    html_ = _disputes_section(seg, od)
    assert "3.2% [2.9%, 3.4%]" in html_ and "49,891" in html_ and "+8.3" in html_
    assert "&lt;i&gt;retail&lt;/i&gt;" in html_ and "<i>" not in html_
    assert "1 disputes open" in html_ and "2025-04-01" in html_


def test_aging_share_shown_as_percentage():
    from arresearch.report import _aging_display

    ag = pd.DataFrame({"bucket": ["current", "1-30"], "count": [3, 1], "amount": [750.0, 250.0],
                       "share_of_amount": [0.75, 0.25]})
    shown = _aging_display(ag)
    assert list(shown["share_of_amount"]) == ["75.0%", "25.0%"]
    assert ag["share_of_amount"].tolist() == [0.75, 0.25]  # the table itself (and its CSV) keeps the numbers
