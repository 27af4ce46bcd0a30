"""Credit history: is each customer getting slower or faster at paying?

On top of the payment-delay fit. For every paid invoice the residual
``r = log(days_to_pay - 0.5) - mu`` removes what the model already explains (the
customer's level, terms, method, discount, dispute, season). Within a window of
``months`` months that ends ``lag_days`` before the as-of date (so that the window's
invoices have had time to be paid: a recent window holds only the fast payments), each
customer's residuals are regressed on time. The slopes are then partially pooled with
a normal prior whose spread is estimated from all customers (empirical Bayes, marginal
maximum likelihood), which gives each customer a normal posterior for its trend and the
probability that it is getting slower. Invoices of the window still open at the as-of
date enter at their age, a lower bound on their time to pay.

``trend_per_year`` is multiplicative: +0.20 means days to pay grow by 20% a year.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr

from .models.delay import DelayFit, coef_draws

__all__ = ["payment_trend"]


def payment_trend(fit: DelayFit, months: int = 12, lag_days: int = 90, confidence: float = 0.9,
                  prob: float = 0.9, ledger: pd.DataFrame | None = None, min_invoices: int = 6) -> pd.DataFrame:
    """Per customer: trend in payment speed with its interval, P(getting slower) and a direction label.

    ``ledger`` (default: the fit's) must hold the same rows in the same order as the fit's
    ledger; passing a modified copy lets a test plant a trend without refitting.
    """
    d = fit.data
    led = d.ledger if ledger is None else ledger
    end = d.as_of - pd.Timedelta(days=lag_days)
    start = end - pd.DateOffset(months=months)
    inv = led["invoice_date"]
    in_win = ((inv > start) & (inv <= end)).to_numpy() & ~d.taken
    days = led["days_to_pay"].to_numpy(dtype=float, na_value=np.nan)
    days = np.where(np.isnan(days), led["age_days"].to_numpy(float), days)
    rows = np.flatnonzero(in_win & (days >= 1))
    b, sig = coef_draws(fit.posterior, d, thin=max(1, fit.posterior.sizes["draw"] // 100))
    bm, sm = b.mean(0), sig.mean(0)
    c = d.inv_cust[rows]
    mu = (d.X[rows] * bm[c]).sum(1)
    r = np.log(days[rows] - 0.5) - mu
    t = ((inv.to_numpy()[rows] - np.datetime64(start)) / np.timedelta64(1, "D")) / 365.25
    C = len(d.customers)
    n = np.bincount(c, minlength=C)
    tbar = np.bincount(c, weights=t, minlength=C) / np.maximum(n, 1)
    rbar = np.bincount(c, weights=r, minlength=C) / np.maximum(n, 1)
    tc = t - tbar[c]
    stt = np.bincount(c, weights=tc ** 2, minlength=C)
    str_ = np.bincount(c, weights=tc * (r - rbar[c]), minlength=C)
    ok = (n >= min_invoices) & (stt > 0)
    slope = np.where(ok, str_ / np.where(ok, stt, 1), 0.0)
    var = np.where(ok, sm ** 2 / np.where(ok, stt, 1), np.inf)
    tau2 = _tau2(slope[ok], var[ok]) if ok.any() else 0.0
    shrink = np.where(ok, tau2 / (tau2 + var), 0.0)
    post_mean = shrink * slope
    v_ok = np.where(ok, var, 1.0)
    post_sd = np.sqrt(np.where(ok, tau2 * v_ok / (tau2 + v_ok), tau2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_slower = np.where(post_sd > 0, ndtr(post_mean / np.where(post_sd > 0, post_sd, 1)), 0.5)
    z = _z(prob)
    out = pd.DataFrame({
        "customer_id": d.customers.astype(str), "segment": d.segments[d.cust_seg].astype(str),
        "n_invoices_window": n, "trend_per_year": np.expm1(post_mean), "trend_q05": np.expm1(post_mean - z * post_sd),
        "trend_q95": np.expm1(post_mean + z * post_sd), "p_slower": p_slower,
    })
    out["direction"] = np.select([~ok, out["p_slower"] >= confidence, out["p_slower"] <= 1 - confidence],
                                 ["too few invoices", "slower", "faster"], "stable")
    out.attrs.update(window_start=str(start.date()), window_end=str(end.date()), tau_per_year=float(np.sqrt(tau2)))
    return out.sort_values("p_slower", ascending=False).reset_index(drop=True)


def _tau2(slope: np.ndarray, var: np.ndarray) -> float:
    """Spread of the true slopes by marginal maximum likelihood: slope_c ~ Normal(0, tau^2 + var_c)."""
    from scipy.optimize import minimize_scalar

    def nll(log_tau):
        v = np.exp(2 * log_tau) + var
        return 0.5 * np.sum(np.log(v) + slope ** 2 / v)

    res = minimize_scalar(nll, bounds=(np.log(1e-4), np.log(5.0)), method="bounded")
    tau2 = float(np.exp(2 * res.x))
    return 0.0 if tau2 < 1e-6 else tau2


def _z(prob: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - prob) / 2))
