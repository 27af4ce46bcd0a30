"""Backtesting: metric functions against hand-computed values, and no leakage across the origin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arresearch.backtest import (
    _expanding_history,
    auc,
    brier,
    calibration_curve,
    coverage,
    mae,
    predict_gbm,
    predict_history,
    run_backtest,
    targets_at_origin,
)
from arresearch.models.delay import prepare_delay_data
from arresearch.models.sampling import FitSettings
from arresearch.synth import write_synthetic
from arresearch.validate import validate_files

ORIGIN = pd.Timestamp("2024-09-30")


def test_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.1, 0.6: 3 of the 4 pairs ordered right
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.6])) == pytest.approx(0.75)
    assert auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # a tie counts one half
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_brier_mae_by_hand():
    assert brier(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx((0.04 + 0.09) / 2)
    assert mae(np.array([10, 20]), np.array([12, 15])) == pytest.approx(3.5)


def test_coverage_scores_censored_outcomes_as_such():
    days = np.array([5, 10, 50, 30])
    lo, hi = np.array([4, 11, 0, 0]), np.array([6, 20, 40, 40])
    cens = np.array([False, False, True, True])
    # inside; outside; unpaid at 50 > 40 (a known miss); unpaid at 30 < 40 (unknown: not scored)
    cov, n = coverage(days, lo, hi, cens)
    assert n == 3 and cov == pytest.approx(1 / 3)


def test_calibration_curve_by_hand():
    c = calibration_curve(np.array([0, 1, 1, 1]), np.array([0.05, 0.15, 0.95, 0.91]), bins=10)
    assert list(c["bin"]) == [0, 1, 9]
    assert list(c["observed"]) == [0.0, 1.0, 1.0] and c.loc[2, "predicted"] == pytest.approx(0.93)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    paths = write_synthetic(tmp_path_factory.mktemp("bt"), seed=5, n_customers=80, months=14, dirty_rows=0)
    return validate_files(paths["invoices"], paths["customers"]).clean


def test_nothing_after_the_origin_reaches_the_fit(clean):
    end = clean["invoice_date"].max()
    train, targets = targets_at_origin(clean, ORIGIN, end)
    assert train["invoice_date"].max() <= ORIGIN
    assert not (train["paid_date"] > ORIGIN).any()
    assert not (train["dispute_opened_date"] > ORIGIN).any() and not (train["dispute_resolved_date"] > ORIGIN).any()
    assert set(targets["kind"]) == {"open", "new"}
    # rewrite the future: every payment after the origin moves 40 days later, later invoices double in amount
    future = clean.copy()
    later_paid = future["paid_date"] > ORIGIN
    future.loc[later_paid, "paid_date"] += pd.Timedelta(days=40)
    future.loc[future["invoice_date"] > ORIGIN, "amount"] *= 2
    train2, targets2 = targets_at_origin(future, ORIGIN, end + pd.Timedelta(days=40))
    assert later_paid.sum() > 100
    # what the model sees at the origin is byte-for-byte the same ...
    assert prepare_delay_data(train).digest() == prepare_delay_data(train2).digest()
    # ... and so are the baselines' predictions for the invoices open at the origin
    op = targets["kind"] == "open"
    pd.testing.assert_frame_equal(predict_history(train, targets[op]), predict_history(train2, targets2[op]))
    g1, g2 = predict_gbm(train, targets[op]), predict_gbm(train2, targets2[op])
    pd.testing.assert_frame_equal(g1, g2)


def test_customer_history_features_use_earlier_invoices_only(clean):
    train, _ = targets_at_origin(clean, ORIGIN, clean["invoice_date"].max())
    h = _expanding_history(train)
    first = train.sort_values(["customer_id", "invoice_date", "invoice_id"]).groupby("customer_id").head(1).index
    assert (h.loc[first, "h_n"] == 0).all() and (h.loc[first, "h_late"] == 0.5).all()
    # changing the last invoice of a customer does not change any earlier invoice's features
    c = train["customer_id"].value_counts().index[0]
    rows = train[train["customer_id"] == c].sort_values(["invoice_date", "invoice_id"])
    t2 = train.copy()
    t2.loc[rows.index[-1], "days_to_pay"] = 400.0
    t2.loc[rows.index[-1], "is_open"] = False
    h2 = _expanding_history(t2)
    pd.testing.assert_frame_equal(h.loc[rows.index[:-1]], h2.loc[rows.index[:-1]])


@pytest.mark.slow
def test_backtest_runs_and_scores_all_models(clean, fit_cache):
    metrics, calib, preds = run_backtest(clean, [ORIGIN], settings=FitSettings(draws=300, tune=300), progress=False)
    assert set(metrics["model"]) == {"bayes", "history", "gbm"}
    assert metrics.groupby("model")["n"].nunique().eq(1).all() and metrics["n"].nunique() == 1  # same invoices
    b = metrics.set_index("model").loc["bayes"]
    assert b["auc"] > 0.65 and 0.5 < b["coverage_80"] < 0.97
    assert set(calib["model"]) == {"bayes", "history", "gbm"}
    assert preds["pred_q10"].le(preds["pred_q90"]).all()


@pytest.mark.slow
def test_backtest_notebook_executes(tmp_path, fit_cache):
    """Reviewers see notebook 07 execute: papermill on a small ledger, one origin, short chains."""
    import papermill as pm

    from arresearch.config import NOTEBOOKS_DIR

    paths = write_synthetic(tmp_path / "raw", seed=5, n_customers=80, months=14, dirty_rows=0)
    out = tmp_path / "bt"
    pm.execute_notebook(str(NOTEBOOKS_DIR / "07_backtest.ipynb"), str(tmp_path / "07.ipynb"), cwd=str(NOTEBOOKS_DIR),
                        parameters={"invoices": str(paths["invoices"]), "customers": str(paths["customers"]),
                                    "origins": "2024-09-30", "draws": 300, "tune": 300, "out_dir": str(out)},
                        progress_bar=False, kernel_name="python3")
    m = pd.read_csv(out / "backtest_metrics.csv")
    assert set(m["model"]) == {"bayes", "history", "gbm"} and (m["origin"] == "2024-09-30").all()
