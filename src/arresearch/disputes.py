"""Disputes: how often, why, how long they take to resolve, and what they do to payment.

A small hierarchical model (PyMC, nutpie, cached like the payment-delay fit):

- **Rate.** Disputes among customer c's invoices ~ Binomial(n_c, logit^-1(a_s + u_c)),
  segments partially pooled (a_s ~ Normal(a_0, tau_a)), customers within segments
  (u_c ~ Normal(0, tau_u)), both non-centred (most customers have a handful of
  disputes or none). Only invoices issued at least ``EXPOSURE_DAYS`` before the as-of
  date count, because a dispute is raised some days after the invoice: the most recent
  invoices have not had their chance yet.
- **Time to resolution** (days from opening to resolution), log-normal per reason,
  reasons partially pooled (m_r ~ Normal(m_0, tau_m)). Unresolved disputes are
  right-censored at their age on the as-of date, never dropped: dropping them is what
  makes the naive mean over resolved disputes too short.
- **Effect on payment** comes from the payment-delay model's dispute term.

The per-segment rate reported is the model's expected share of disputed invoices over
the segment's exposed invoices, sum_c n_c p_c / sum_c n_c.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import ndtr, ndtri

from .ledger import as_of_of
from .models.sampling import (
    Diagnostics,
    FitSettings,
    cache_key,
    check_convergence,
    compile_pymc,
    data_hash,
    sample_cached,
)

__all__ = ["DisputeData", "DisputeFit", "prepare_dispute_data", "build_dispute_model", "fit_disputes",
           "disputes_by_segment", "disputes_by_reason", "dispute_customers", "open_disputes", "dispute_effect",
           "MODEL_VERSION"]

MODEL_VERSION = "disputes-1"
EXPOSURE_DAYS = 30
UNSPECIFIED = "unspecified"


@dataclass
class DisputeData:
    as_of: pd.Timestamp
    customers: pd.Index
    segments: pd.Index
    reasons: pd.Index
    cust_seg: np.ndarray
    n_exposed: np.ndarray  # (C,) invoices old enough to have been disputed
    n_disputed: np.ndarray  # (C,)
    res_reason: np.ndarray  # (D,) reason index of disputes with an opening date
    res_log_days: np.ndarray  # (D,) log days to resolution, or log age when unresolved
    res_resolved: np.ndarray  # (D,) bool
    disputes: pd.DataFrame  # the disputed invoices with opening dates, in the order above
    ledger: pd.DataFrame

    def digest(self) -> str:
        return data_hash(self.n_exposed, self.n_disputed, self.res_reason, self.res_log_days, self.res_resolved,
                         self.cust_seg, np.asarray(self.customers, dtype=str).astype("S"),
                         np.asarray(self.reasons, dtype=str).astype("S"))


def prepare_dispute_data(ledger: pd.DataFrame) -> DisputeData:
    """Per-customer exposure and dispute counts, and per-dispute resolution times (censored when open)."""
    as_of = as_of_of(ledger)
    df = ledger
    seg_of = df.groupby("customer_id")["segment"].agg(lambda s: s.mode().iloc[0])
    customers = pd.Index(seg_of.index, name="customer")
    segments = pd.Index(sorted(seg_of.unique()), name="segment")
    cust_seg = segments.get_indexer(seg_of.values)
    exposed = df["invoice_date"] <= as_of - pd.Timedelta(days=EXPOSURE_DAYS)
    n_exp = df[exposed].groupby("customer_id").size().reindex(customers).fillna(0).to_numpy(float)
    n_dis = df[exposed & df["disputed"]].groupby("customer_id").size().reindex(customers).fillna(0).to_numpy(float)
    dis = df[df["disputed"] & df["dispute_opened_date"].notna()].copy()
    dis["dispute_reason"] = dis["dispute_reason"].fillna(UNSPECIFIED).astype(str)
    resolved = dis["dispute_resolved_date"].notna().to_numpy()
    end = dis["dispute_resolved_date"].where(resolved, as_of)
    days = (end - dis["dispute_opened_date"]).dt.days.to_numpy(float)
    reasons = pd.Index(sorted(dis["dispute_reason"].unique()) or [UNSPECIFIED], name="reason")
    return DisputeData(
        as_of=as_of, customers=customers, segments=segments, reasons=reasons, cust_seg=cust_seg,
        n_exposed=n_exp, n_disputed=n_dis, res_reason=reasons.get_indexer(dis["dispute_reason"]),
        res_log_days=np.log(np.clip(days, 0, None) + 0.5), res_resolved=resolved, disputes=dis.reset_index(drop=True),
        ledger=ledger)


def build_dispute_model(d: DisputeData):
    import pymc as pm
    import pytensor.tensor as pt

    coords = {"segment": list(d.segments), "customer": list(d.customers), "reason": list(d.reasons)}
    seg = d.cust_seg
    with pm.Model(coords=coords) as model:
        a0 = pm.Normal("rate_0", -3.0, 1.5)
        tau_a = pm.HalfNormal("tau_rate_seg", 1.0)
        a = pm.Deterministic("rate_seg", a0 + tau_a * pm.Normal("rate_seg_z", 0.0, 1.0, dims="segment"),
                             dims="segment")
        tau_u = pm.HalfNormal("tau_rate_cust", 0.5)
        u = tau_u * pm.Normal("rate_cust_z", 0.0, 1.0, dims="customer")
        p = pm.Deterministic("p_dispute", pm.math.sigmoid(a[seg] + u), dims="customer")
        has = d.n_exposed > 0
        pm.Binomial("disputes", n=d.n_exposed[has], p=p[has], observed=d.n_disputed[has])
        m0 = pm.Normal("res_0", np.log(20.0), 1.0)
        tau_m = pm.HalfNormal("tau_res", 0.5)
        m = pm.Deterministic("res_reason", m0 + tau_m * pm.Normal("res_reason_z", 0.0, 1.0, dims="reason"),
                             dims="reason")
        s = pm.HalfNormal("res_sigma", 1.0)
        if len(d.res_reason):
            mu = m[d.res_reason]
            r = d.res_resolved
            if r.any():
                pm.Normal("resolved_days", mu[np.flatnonzero(r)], s, observed=d.res_log_days[r])
            if (~r).any():
                cens = pm.logccdf(pm.Normal.dist(mu[np.flatnonzero(~r)], s), d.res_log_days[~r])
                pm.Potential("unresolved", pt.sum(cens))
    return model


DISPUTE_TARGET_ACCEPT = 0.95


@dataclass
class DisputeFit:
    data: DisputeData
    idata: xr.DataTree
    diagnostics: Diagnostics
    settings: FitSettings
    timings: dict
    key: str = ""  # the cache key of the fit (data, model, settings)

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].dataset


def fit_disputes(ledger: pd.DataFrame, settings: FitSettings | None = None, allow_unconverged: bool = False,
                 cache: bool = True, progress: bool = True) -> DisputeFit:
    """Fit (or load from the cache) the dispute model; convergence is checked like the delay fit."""
    from .config import CACHE_DIR
    from .models.sampling import ConvergenceError

    settings = settings or FitSettings()
    # the dispute model samples at target_accept >= 0.95 whatever the delay fit uses: at 0.85 its
    # per-customer rates diverged twice on a 150-customer ledger, and it samples in seconds anyway
    settings = replace(settings, target_accept=max(settings.target_accept, DISPUTE_TARGET_ACCEPT))
    d = prepare_dispute_data(ledger)
    key = cache_key("disputes", MODEL_VERSION, d.digest(), str(d.as_of.date()), settings)
    t0 = time.perf_counter()
    idata, seconds, cached = sample_cached(lambda: compile_pymc(build_dispute_model(d)), key, settings,
                                           CACHE_DIR if cache else None, progress)
    post = idata["posterior"].dataset
    q = {k: post[k] for k in ("rate_seg", "p_dispute", "res_reason", "res_sigma")}
    diag = check_convergence(q, idata["sample_stats"].dataset if "sample_stats" in idata.children else None)
    diag.sampling_seconds, diag.cached = float(idata.attrs.get("sampling_seconds", seconds)), cached
    fit = DisputeFit(d, idata, diag, settings, {"build_and_sample": round(time.perf_counter() - t0, 2),
                                                "cached": cached}, key)
    if not diag.ok and not allow_unconverged:
        raise ConvergenceError(f"dispute fit {diag.message()}. Sample longer or pass --allow-unconverged.")
    return fit


def _flat(post, name):
    return post[name].stack(sample=("chain", "draw")).transpose("sample", ...).values


def _iv(a, prob, axis=0):
    return np.quantile(a, (1 - prob) / 2, axis=axis), np.quantile(a, 1 - (1 - prob) / 2, axis=axis)


def disputes_by_segment(fit: DisputeFit, prob: float = 0.9, effect: pd.DataFrame | None = None) -> pd.DataFrame:
    """Dispute rate per segment with its interval, counts, open disputes, and (optionally) the delay effect."""
    d = fit.data
    p = _flat(fit.posterior, "p_dispute")  # (S, C)
    led = d.ledger
    open_d = led[led["disputed"] & led["dispute_resolved_date"].isna() & led["dispute_opened_date"].notna()]
    rows = []
    for j, seg in enumerate(d.segments):
        m = d.cust_seg == j
        w = d.n_exposed[m]
        rate = (p[:, m] * w).sum(1) / max(w.sum(), 1)
        lo, hi = _iv(rate, prob)
        od = open_d[open_d["segment"] == seg]
        rows.append({"segment": seg, "n_invoices": int(w.sum()), "n_disputes": int(d.n_disputed[m].sum()),
                     "observed_rate": d.n_disputed[m].sum() / max(w.sum(), 1), "dispute_rate": float(rate.mean()),
                     "dispute_rate_q05": float(lo), "dispute_rate_q95": float(hi), "open_disputes": len(od),
                     "open_dispute_amount": float(od["amount"].sum())})
    out = pd.DataFrame(rows)
    if effect is not None:
        out = out.merge(effect, on="segment", how="left")
    if not fit.diagnostics.ok:
        out["warning"] = "fit did not pass convergence checks"
    return out


def disputes_by_reason(fit: DisputeFit, prob: float = 0.9) -> pd.DataFrame:
    """Per reason: counts, share, resolution time (model, censoring-aware) against the naive mean of resolved ones."""
    d = fit.data
    m = _flat(fit.posterior, "res_reason")
    s = _flat(fit.posterior, "res_sigma")
    mean_days = np.exp(m + s[:, None] ** 2 / 2) - 0.5
    med_days = np.exp(m) - 0.5
    rows = []
    for j, r in enumerate(d.reasons):
        sel = d.res_reason == j
        res = sel & d.res_resolved
        lo, hi = _iv(mean_days[:, j], prob)
        rows.append({"reason": r, "n_disputes": int(sel.sum()), "share": sel.mean() if len(sel) else np.nan,
                     "n_unresolved": int((sel & ~d.res_resolved).sum()),
                     "mean_resolution_days": float(mean_days[:, j].mean()), "mean_resolution_q05": float(lo),
                     "mean_resolution_q95": float(hi), "median_resolution_days": float(med_days[:, j].mean()),
                     "naive_mean_resolved_only": float(np.exp(d.res_log_days[res]).mean() - 0.5) if res.any()
                     else np.nan})
    out = pd.DataFrame(rows).sort_values("n_disputes", ascending=False).reset_index(drop=True)
    # all reasons together: the mean over this period's disputes (weighted by reason counts)
    w = np.bincount(d.res_reason, minlength=len(d.reasons)).astype(float)
    if w.sum():
        allm = (mean_days * w).sum(1) / w.sum()
        lo, hi = _iv(allm, prob)
        out.loc[len(out)] = {"reason": "all", "n_disputes": int(w.sum()), "share": 1.0,
                             "n_unresolved": int((~d.res_resolved).sum()), "mean_resolution_days": float(allm.mean()),
                             "mean_resolution_q05": float(lo), "mean_resolution_q95": float(hi),
                             "median_resolution_days": np.nan,
                             "naive_mean_resolved_only": float(np.exp(d.res_log_days[d.res_resolved]).mean() - 0.5)
                             if d.res_resolved.any() else np.nan}
    return out


def dispute_customers(fit: DisputeFit, prob: float = 0.9, top: int = 25) -> pd.DataFrame:
    """Customers whose invoices are disputed most often (posterior rate), with counts."""
    d = fit.data
    p = _flat(fit.posterior, "p_dispute")
    lo, hi = _iv(p, prob)
    out = pd.DataFrame({"customer_id": d.customers.astype(str), "segment": d.segments[d.cust_seg].astype(str),
                        "n_invoices": d.n_exposed.astype(int), "n_disputes": d.n_disputed.astype(int),
                        "dispute_rate": p.mean(0), "dispute_rate_q05": lo, "dispute_rate_q95": hi})
    return out.sort_values("dispute_rate", ascending=False).head(top).reset_index(drop=True)


def open_disputes(fit: DisputeFit, horizon_days: int = 365) -> pd.DataFrame:
    """Unresolved disputes, oldest first, with amount and expected resolution date (median and 90th percentile).

    The resolution date is drawn from the reason's log-normal conditioned on the dispute
    being still open at its current age, averaged over the posterior.
    """
    d = fit.data
    un = np.flatnonzero(~d.res_resolved)
    dis = d.disputes.iloc[un]
    if dis.empty:
        return pd.DataFrame(columns=["invoice_id", "customer_id", "segment", "dispute_reason", "amount",
                                     "dispute_opened_date", "age_days", "expected_resolution_date",
                                     "resolution_date_q90"])
    m = _flat(fit.posterior, "res_reason")[:, d.res_reason[un]]
    s = _flat(fit.posterior, "res_sigma")[:, None]
    log_age = d.res_log_days[un][None]
    rng = np.random.default_rng(0)
    a = ndtr((log_age - m) / s)
    u = a + rng.random(m.shape) * (1 - a)
    days = np.exp(m + s * ndtri(np.clip(u, 1e-12, 1 - 1e-12))) - 0.5
    age = np.exp(d.res_log_days[un]) - 0.5
    q50, q90 = np.quantile(days, 0.5, axis=0), np.quantile(days, 0.9, axis=0)
    opened = dis["dispute_opened_date"].to_numpy()
    out = pd.DataFrame({
        "invoice_id": dis["invoice_id"].to_numpy(), "customer_id": dis["customer_id"].to_numpy(),
        "segment": dis["segment"].to_numpy(), "dispute_reason": dis["dispute_reason"].to_numpy(),
        "amount": dis["amount"].to_numpy(), "dispute_opened_date": opened, "age_days": np.round(age).astype(int),
    })
    for name, q in (("expected_resolution_date", q50), ("resolution_date_q90", q90)):
        dates = pd.to_datetime(opened) + pd.to_timedelta(np.ceil(q), unit="D")
        out[name] = pd.Series(dates).where(q - age <= horizon_days).to_numpy()
    return out.sort_values(["dispute_opened_date", "invoice_id"]).reset_index(drop=True)


def dispute_effect(delay_fit, prob: float = 0.9, months: int = 12, max_draws: int = 500) -> pd.DataFrame:
    """Per segment: expected days to pay if disputed minus if not, over the segment's recent invoices.

    From the payment-delay model's dispute term (a log-scale shift); 90% intervals.
    """
    from .models.delay import coef_draws, draw_thin, linpred

    d = delay_fit.data
    led = d.ledger
    post = delay_fit.posterior
    thin = draw_thin(post, max_draws)
    b, sig = coef_draws(post, d, thin)
    j = 1 + d.features.index("disputed")
    recent = (led["invoice_date"] > d.as_of - pd.DateOffset(months=months)).to_numpy()
    rows = []
    for seg in d.segments:
        r = np.flatnonzero(recent & (led["segment"].to_numpy() == seg))
        if not len(r):
            continue
        c = d.inv_cust[r]
        X0 = d.X[r].copy()
        X0[:, j] = 0.0
        mu0 = linpred(b, c, X0)
        sg = sig[:, c]
        eff = (np.exp(mu0 + b[:, c, j] + sg ** 2 / 2) - np.exp(mu0 + sg ** 2 / 2)).mean(1)
        lo, hi = _iv(eff, prob)
        rows.append({"segment": seg, "dispute_effect_days": float(eff.mean()), "dispute_effect_q05": float(lo),
                     "dispute_effect_q95": float(hi)})
    return pd.DataFrame(rows)

