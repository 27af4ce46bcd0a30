"""The payment-delay model: who pays late, and when open invoices will be paid.

Model (documented in ``docs/models.md``). For invoice i of customer c in
segment s, the latent time to pay T (days; days_to_pay = ceil(T)) is
log-normal when the early-payment discount is not taken::

    log T_i = log 30 + theta_c + beta_terms * log(terms_i / 30)
              + beta_disc_s * offered_i + beta_disp * disputed_i
              + beta_method[s, method_i] + beta_channel[s, channel_i]
              + (a_s + g_c) * cos(2 pi month_i / 12) + (b_s + h_c) * sin(2 pi month_i / 12)
              + eps_i,   eps_i ~ Normal(0, sigma_s)

    theta_c ~ StudentT(4, alpha_s + shift_c, tau_s)   customers partially pooled within segment
    alpha_s ~ Normal(alpha_0, 0.3)   segments pooled with a fixed spread (SEGMENT_SPREAD)
    beta_method[s, m] ~ Normal(beta_method_0[m], 0.1)   likewise beta_channel, beta_disc
    (g_c, h_c) ~ StudentT(4, 0, tau_season)   only customers whose history supports it

On an undisputed offered invoice the customer takes the discount with probability
``logit^-1(k_s + v_c)`` and then pays on a uniform day inside the discount
window; otherwise the log-normal above applies. An offered invoice paid inside
the window is therefore a two-part mixture (taken, or early anyway); one paid
after it was not taken. Paid invoices outside the windows enter through
per-customer sufficient statistics (n, X'X, X'y, y'y with y = log(days_to_pay - 0.5)),
exact for a Gaussian likelihood, so the cost of a gradient grows with
customers x covariates plus the cells of open invoices and of invoices paid
inside a discount window (identical customer, design row and outcome merged
with a count), not with all invoices. Customer levels carry a Mundlak term (the customer's mean of
each covariate that varies within customers), so slopes are learnt within customers.
Open invoices are right-censored at their age: log P(T > age).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit, ndtr, ndtri

from ..ledger import as_of_of
from .sampling import ConvergenceError, Diagnostics, FitSettings, cache_key, check_convergence, data_hash, sample_cached

__all__ = ["DelayData", "DelayFit", "prepare_delay_data", "build_delay_model", "fit_delay",
           "customer_risk", "open_invoice_forecast", "open_invoice_day_samples", "seasonal_payers", "coef_draws",
           "p_late_draws", "takeup_draws", "delay_diagnostics", "linpred", "draw_thin", "loo_tree", "compare_likelihoods",
           "prior_predictive_days", "pointwise_loglik", "add_deterministics", "mundlak_design", "segment_sufficient_stats",
           "posterior_predictive_days", "ConvergenceError", "MODEL_VERSION"]

MODEL_VERSION = "delay-4"
LOG30 = np.log(30.0)
CENTRED_MIN_INVOICES = 10  # customers with at least this many paid invoices get a centred effect
SEASON_MIN_INVOICES = 12
SEASON_MIN_SPAN_DAYS = 330
NU = 4.0  # Student-t degrees of freedom of customer effects: a few customers differ a lot
HORIZON_DAYS = 365
STOPPED_PAYING_DAYS = 120  # open past due and no payment for this long: stopped paying (prepare_delay_data)
MUNDLAK_MIN_WITHIN = 0.05  # share of a covariate's variance within customers needed for a Mundlak term
# spread of segment-level effects around their common value (fixed, see build_delay_model): segment
# means of log time to pay (0.3 ~ +-35%), the discount shift of non-takers', method and channel
# effects (log scale) and take-up (logit scale)
SEGMENT_SPREAD = {"alpha": 0.3, "discount": 0.1, "method": 0.1, "channel": 0.1, "takeup": 1.0}


def _mode(s: pd.Series):
    m = s.mode()
    return m.iloc[0] if len(m) else s.iloc[0]


@dataclass
class DelayData:
    """Everything the model sees, as arrays; built once from a prepared ledger."""

    as_of: pd.Timestamp
    customers: pd.Index
    segments: pd.Index
    cust_seg: np.ndarray
    features: list[str]
    methods: list[str]  # non-reference method levels
    channels: list[str]
    method_ref: str
    channel_ref: str
    # paid, discount not taken: per-customer sufficient statistics
    n: np.ndarray
    G: np.ndarray
    h: np.ndarray
    q: np.ndarray
    # open invoices (right-censored)
    Xc: np.ndarray  # one row per cell of identical (customer, design row, age); cens_w invoices each
    cens_cust: np.ndarray
    cens_log_age: np.ndarray
    cens_w: np.ndarray
    # discount take-up per customer
    n_offered: np.ndarray  # undisputed offers whose window has passed
    n_taken: np.ndarray  # ... of which paid inside the window (taken, or paid early anyway)
    win_X: np.ndarray  # those paid inside the window: design rows, customer, y, log window length
    win_cust: np.ndarray
    win_y: np.ndarray
    win_log_d: np.ndarray
    win_w: np.ndarray  # invoices per window cell (identical customer, design row, day, window)
    season_eligible: np.ndarray
    stopped: np.ndarray
    hurdle: bool
    # per invoice design (for pointwise log-lik, predictive checks)
    X: np.ndarray
    inv_cust: np.ndarray
    y: np.ndarray  # log(days_to_pay - 0.5); nan when open
    taken: np.ndarray
    offered: np.ndarray
    discount_days: np.ndarray
    # which term each invoice enters (before cells are merged): the log-normal (paid, not inside a taken
    # discount window), right-censored (open), an offer not taken (decided: paid or open past its window)
    in_lognormal: np.ndarray
    censored: np.ndarray
    not_taken: np.ndarray
    next_X: np.ndarray  # the customer's "next invoice" design row
    next_terms: np.ndarray
    xbar: np.ndarray  # (C, K) customer means of the design columns (column 0 is 0)
    within_share: np.ndarray  # (K-1,) share of each covariate's variance within customers
    ledger: pd.DataFrame = field(repr=False)

    def free_levels(self) -> tuple[np.ndarray, np.ndarray]:
        """Which method and which channel levels vary within customers (``MUNDLAK_MIN_WITHIN``): those get
        per-segment effects; the others are customer habits with one effect shared by all segments."""
        M, Ch = len(self.methods), len(self.channels)
        return (self.within_share[3:3 + M] >= MUNDLAK_MIN_WITHIN,
                self.within_share[3 + M:3 + M + Ch] >= MUNDLAK_MIN_WITHIN)

    def digest(self) -> str:
        return data_hash(self.G, self.h, self.xbar, self.q, self.n, self.Xc, self.cens_log_age, self.cens_w,
                         self.n_offered, self.n_taken, self.win_X, self.win_y, self.win_log_d, self.win_w, self.cust_seg, np.asarray(self.customers, dtype=str).astype("S"),
                         self.season_eligible, self.stopped)


def _cells(cust: np.ndarray, *cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with identical (customer, columns...) merged: (first row of each cell, rows per cell)."""
    if len(cust) == 0:
        return np.zeros(0, int), np.zeros(0)
    key = np.column_stack([cust.astype(float)] + [c.reshape(len(cust), -1) for c in cols])
    _, first, count = np.unique(key, axis=0, return_index=True, return_counts=True)
    order = np.sort(first)
    return order, count[np.argsort(first)].astype(float)


def design_matrix(df: pd.DataFrame, methods: list[str], channels: list[str]) -> np.ndarray:
    """Rows [1, covariates...] in the order of ``DelayData.features``."""
    m = df["month"].to_numpy(float)
    cols = [np.ones(len(df)), np.log(df["terms_days"].to_numpy(float).clip(1) / 30.0),
            df["discount_offered"].to_numpy(float), df["disputed"].to_numpy(float)]
    cols += [(df["payment_method"] == lvl).to_numpy(float) for lvl in methods]
    cols += [(df["billing_channel"] == lvl).to_numpy(float) for lvl in channels]
    cols += [np.cos(2 * np.pi * m / 12), np.sin(2 * np.pi * m / 12)]
    return np.column_stack(cols)


def prepare_delay_data(ledger: pd.DataFrame, hurdle: bool = True,
                       stopped_paying_days: int = STOPPED_PAYING_DAYS) -> DelayData:
    """Turn a prepared ledger into model arrays.

    Parameters
    ----------
    ledger : DataFrame
        From :func:`arresearch.ledger.prepare_ledger` (carries the as-of date).
    hurdle : bool
        Model discount take-up separately (True) or let the log-normal absorb it.
    stopped_paying_days : int
        A customer with open past-due invoices and no payment in this many days
        is flagged as having stopped paying; its open invoices are left out of
        the likelihood (a default process, not a delay) and reported separately.
    """
    as_of = as_of_of(ledger)
    df = ledger
    if df.empty:
        raise ValueError("the ledger has no invoices at the as-of date")
    cust_seg_s = df.groupby("customer_id")["segment"].agg(_mode)
    customers = pd.Index(cust_seg_s.index, name="customer")
    segments = pd.Index(sorted(cust_seg_s.unique()), name="segment")
    cust_seg = segments.get_indexer(cust_seg_s.values)
    inv_cust = customers.get_indexer(df["customer_id"])

    def levels(col):
        counts = df[col].value_counts()
        preferred = {"payment_method": "ach", "billing_channel": "electronic"}[col]
        ref = preferred if preferred in counts.index else counts.index[0]
        return ref, sorted(lvl for lvl in counts.index if lvl != ref)

    method_ref, methods = levels("payment_method")
    channel_ref, channels = levels("billing_channel")
    features = (["log_terms", "discount", "disputed"] + [f"method[{m}]" for m in methods]
                + [f"channel[{c}]" for c in channels] + ["season_cos", "season_sin"])
    X = design_matrix(df, methods, channels)
    C, K = len(customers), X.shape[1]

    is_open = df["is_open"].to_numpy()
    dtp = df["days_to_pay"].to_numpy(dtype=float, na_value=np.nan)
    y = np.where(is_open, np.nan, np.log(np.clip(dtp, 1, None) - 0.5))
    offered = df["discount_offered"].to_numpy()
    ddays = df["discount_days"].to_numpy(float)
    disputed = df["disputed"].to_numpy(bool)
    taken = offered & ~disputed & ~is_open & (dtp <= ddays)

    # stopped paying: open past due and no payment in the last N days
    last_paid = df.groupby("customer_id")["paid_date"].max().reindex(customers)
    open_pd = df[df["is_open"] & (df["days_past_due"] > 0)].groupby("customer_id").size().reindex(customers).fillna(0)
    stopped = ((open_pd > 0) & ((last_paid.isna()) | (as_of - last_paid).dt.days.gt(stopped_paying_days))).to_numpy()

    in_normal = ~is_open & ~(hurdle & taken)
    n = np.bincount(inv_cust[in_normal], minlength=C).astype(float)
    G = np.zeros((C, K, K))
    h = np.zeros((C, K))
    q = np.zeros(C)
    Xn, yn, cn = X[in_normal], y[in_normal], inv_cust[in_normal]
    np.add.at(G, cn, Xn[:, :, None] * Xn[:, None, :])
    np.add.at(h, cn, Xn * yn[:, None])
    np.add.at(q, cn, yn ** 2)

    age = df["age_days"].to_numpy(float)
    censored = is_open & (age >= 1) & ~stopped[inv_cust]
    if hurdle:
        # an offered invoice still inside its discount window may yet be taken: leave it out
        censored &= ~(offered & (age <= ddays))
    # a disputed invoice is not paid inside the discount window: take-up is learnt from undisputed offers.
    # An undisputed offered invoice paid inside the window was either taken or paid early anyway (the
    # take-up mixture, per invoice); one paid after the window or still open past it was not taken.
    decided = offered & ~disputed & (~is_open | (age > ddays))
    n_offered = np.bincount(inv_cust[decided], minlength=C).astype(float)
    n_taken = np.bincount(inv_cust[taken], minlength=C).astype(float)
    win = np.flatnonzero(taken) if hurdle else np.zeros(0, int)
    # invoices that enter one by one (open ones, those paid inside a discount window) are merged into
    # cells of identical (customer, design row, outcome) with a count: exact, and on long ledgers
    # (many invoices per customer and day) it shrinks those terms severalfold
    cens_rows, cens_w = _cells(inv_cust[censored], X[censored], np.log(age[censored]))
    win_rows, win_w = _cells(inv_cust[win], X[win], y[win], np.log(np.clip(ddays[win], 1, None)))
    cens, win = np.flatnonzero(censored)[cens_rows], win[win_rows]

    first = df.groupby("customer_id")["invoice_date"].min().reindex(customers)
    span = (as_of - first).dt.days.to_numpy()
    season_eligible = (n >= SEASON_MIN_INVOICES) & (span >= SEASON_MIN_SPAN_DAYS)

    # the customer's next invoice: usual terms, method, channel; no discount, no dispute; next month
    usual = df.groupby("customer_id").agg(terms_days=("terms_days", _mode), payment_method=("payment_method", _mode),
                                          billing_channel=("billing_channel", _mode)).reindex(customers)
    usual["discount_offered"] = False
    usual["disputed"] = False
    usual["month"] = (as_of + pd.DateOffset(months=1)).month
    next_X = design_matrix(usual, methods, channels)

    xbar = np.zeros((C, K))
    np.add.at(xbar, inv_cust, X)
    xbar /= np.bincount(inv_cust, minlength=C)[:, None]
    xbar[:, 0] = 0.0
    # share of each covariate's variance that lies within customers (0: a pure customer habit)
    total = X[:, 1:].var(axis=0)
    within = ((X[:, 1:] - xbar[inv_cust, 1:]) ** 2).mean(axis=0)
    within_share = np.divide(within, total, out=np.zeros_like(total), where=total > 0)

    return DelayData(
        as_of=as_of, xbar=xbar, within_share=within_share, customers=customers, segments=segments, cust_seg=cust_seg, features=features,
        methods=methods, channels=channels, method_ref=method_ref, channel_ref=channel_ref,
        n=n, G=G, h=h, q=q, Xc=X[cens], cens_cust=inv_cust[cens], cens_log_age=np.log(age[cens]), cens_w=cens_w,
        n_offered=n_offered, n_taken=n_taken, win_X=X[win], win_cust=inv_cust[win], win_y=y[win],
        win_log_d=np.log(np.clip(ddays[win], 1, None)), win_w=win_w,
        season_eligible=season_eligible, stopped=stopped, hurdle=hurdle, X=X, inv_cust=inv_cust, y=y,
        taken=taken, offered=offered, discount_days=ddays, in_lognormal=in_normal, censored=censored,
        not_taken=decided & ~taken, next_X=next_X,
        next_terms=usual["terms_days"].to_numpy(float), ledger=ledger,
    )


def _slope_columns(p: dict, d: DelayData):
    """Per-customer slopes (S, C) from posterior draws, one design column (1..K-1) at a time."""
    seg = d.cust_seg
    ones = np.ones((p["theta"].shape[0], len(d.customers)))
    yield p["beta_terms"][:, None] * ones
    yield p["beta_disc"][:, seg]
    yield p["beta_disp"][:, None] * ones
    for j in range(len(d.methods)):  # method and channel effects are per segment: (S, segment, level)
        yield p["beta_method"][:, seg, j]
    for j in range(len(d.channels)):
        yield p["beta_channel"][:, seg, j]
    yield p["season_a"][:, seg] + p["season_g"][..., 0]
    yield p["season_b"][:, seg] + p["season_g"][..., 1]


def _coefs(p: dict, d: DelayData) -> np.ndarray:
    """Per-customer coefficient matrix (S, C, K) from posterior draws (each with a leading sample axis)."""
    slopes = np.stack(list(_slope_columns(p, d)), axis=-1)  # (S, C, K-1)
    intercept = p["theta"] - (slopes * d.xbar[:, 1:]).sum(axis=-1)
    return np.concatenate([intercept[..., None], slopes], axis=-1)


def _mixed_normal(pm, pt, name: str, mean, sd, n_obs: np.ndarray, dims: str, min_centred: int):
    """Group values with a centred parameterisation where a group has data, non-centred elsewhere.

    Effects are Student-t (``NU`` degrees of freedom) so that a minority of groups far from
    the rest (routinely late customers) is not shrunk into the crowd. Groups with
    ``n_obs >= min_centred`` get ``x ~ StudentT(mean, sd)`` (hierarchical
    centring: the group mean is not traded off against the effects); the rest get
    ``x = mean + z * sd`` with ``z ~ StudentT(0, 1)``, which avoids the funnel where the
    data say little. ``mean`` and ``sd`` are tensors over all groups.
    """
    big = np.flatnonzero(n_obs >= min_centred)
    small = np.flatnonzero(n_obs < min_centred)
    out = pt.zeros(len(n_obs))
    if len(big):
        xc = pm.StudentT(f"{name}_centred", nu=NU, mu=mean[big], sigma=sd[big], shape=len(big))
        out = pt.set_subtensor(out[big], xc)
    if len(small):
        z = pm.StudentT(f"{name}_z", nu=NU, mu=0.0, sigma=1.0, shape=len(small))
        out = pt.set_subtensor(out[small], mean[small] + z * sd[small])
    return pm.Deterministic(name, out, dims=dims)


def mundlak_design(d: DelayData) -> np.ndarray:
    """(C, L) customer means of the covariates that vary within customers, centred within segments.

    Centred within each segment, so that the Mundlak slopes and the segment means do not trade off.
    """
    cols = 1 + np.flatnonzero(d.within_share[:-2] >= MUNDLAK_MIN_WITHIN)
    if not len(cols):
        return np.zeros((len(d.customers), 0))
    onehot = np.eye(len(d.segments))[d.cust_seg]
    seg_mean = (onehot.T @ d.xbar[:, cols]) / np.clip(onehot.sum(axis=0), 1, None)[:, None]
    return d.xbar[:, cols] - seg_mean[d.cust_seg]


def segment_sufficient_stats(d: DelayData) -> dict:
    """The paid invoices' sufficient statistics on the segment/customer split of the coefficients.

    ``js`` are the design columns with segment-level slopes, ``jc`` those with per-customer values
    (intercept, cos, sin). Segment part summed over each segment's customers (``G_ss``, ``h_s``,
    ``q_s``, ``n_s``); customer part per customer (``G_sj``, ``G_jj``, ``h_j``). Shared by the PyMC
    model and the hand-written kernel.
    """
    K = d.G.shape[1]
    js, jc = np.arange(1, K - 2), np.array([0, K - 2, K - 1])
    onehot = np.eye(len(d.segments))[d.cust_seg]  # (C, S)
    G, h = d.G, d.h
    return {"js": js, "jc": jc, "onehot": onehot,
            "G_ss": np.einsum("cs,ckl->skl", onehot, G[:, js][:, :, js]), "h_s": onehot.T @ h[:, js],
            "q_s": onehot.T @ d.q, "n_s": onehot.T @ d.n,
            "G_sj": G[:, js][:, :, jc], "G_jj": G[:, jc][:, :, jc], "h_j": h[:, jc]}


def _segment_effects(pm, pt, name: str, base, spread: float, free_mask: np.ndarray, n_seg: int, dims: tuple):
    """Per-segment effects of a categorical covariate's levels, pooled around ``base`` with a fixed spread.

    A level that (almost) never varies within customers (``free_mask`` False: ``DelayData.free_levels``)
    is a customer habit: its effect is a between-customer comparison, and five segment-specific
    versions of it were barely identified (R-hat 1.014, ESS 418 for the billing channel on a
    100-customer ledger). Such a level gets one effect shared by every segment.
    """
    free = np.flatnonzero(free_mask)
    if len(free) == len(free_mask):
        return pm.Normal(name, base[None, :], spread, dims=dims)
    out = pt.zeros((n_seg, len(free_mask))) + base[None, :]
    if len(free):
        out = pt.set_subtensor(out[:, free], pm.Normal(f"{name}_free", base[free][None, :], spread,
                                                       shape=(n_seg, len(free))))
    return pm.Deterministic(name, out, dims=dims)


def build_delay_model(d: DelayData, min_centred: int = CENTRED_MIN_INVOICES, per_invoice: str | None = None):
    """The PyMC model (a ``pm.Model``) for prepared delay data.

    ``per_invoice`` writes the likelihood the way one would first write it, for the benchmark only
    (the posterior is the same): ``"paid"`` gives each paid invoice its own Normal term instead of
    the exact sufficient statistics and keeps the project's cells for the rest; ``"all"`` gives
    every invoice its own term -- paid and open invoices one ``pm.Censored`` log-normal, each
    offered invoice its own take-up term (log P(not taken), or the two-part mixture when paid
    inside the window) -- as in PyMC's censored-data examples.
    """
    if per_invoice not in (None, "paid", "all"):
        raise ValueError(f"per_invoice must be None, 'paid' or 'all', got {per_invoice!r}")
    import pymc as pm
    import pytensor.tensor as pt

    coords = {"segment": list(d.segments), "customer": list(d.customers), "method": d.methods,
              "channel": d.channels, "harmonic": ["cos", "sin"]}
    seg = d.cust_seg
    with pm.Model(coords=coords) as model:
        alpha_0 = pm.Normal("alpha_0", 0.2, 0.5)
        ones_s = pt.ones(len(d.segments))
        # Segment-level effects are pooled around a common value with a FIXED spread (SEGMENT_SPREAD), not a
        # learnt one. Five or so segments say little about their spread, and a learnt spread made funnels
        # that diverged whichever way the effects were parameterised: centred at small tau_alpha on a
        # 150-customer ledger, non-centred at large tau_alpha, in the tail of tau_disc on the demo, and
        # non-centred mixed at ESS 20-60 (docs/models.md). With the spread fixed every segment effect is
        # centred and the geometry is plain; each segment's effect is still learnt from its own data and a
        # segment without data gets the common value +- the spread.
        alpha = pm.Normal("alpha", alpha_0, SEGMENT_SPREAD["alpha"], dims="segment")
        tau = pm.HalfNormal("tau", 0.3, dims="segment")
        sigma = pm.HalfNormal("sigma", 0.5, dims="segment")
        beta_terms = pm.Normal("beta_terms", 0.8, 0.5)
        disc_0 = pm.Normal("beta_disc_0", 0.0, 0.3)
        beta_disc = pm.Normal("beta_disc", disc_0, SEGMENT_SPREAD["discount"], dims="segment")
        beta_disp = pm.Normal("beta_disp", 0.3, 0.5)
        # payment method and billing channel: a population effect per level, each segment's effect pooled
        # around it with a fixed spread; a level that never varies within customers gets one shared effect
        mfree, chfree = d.free_levels()
        beta_method_0 = pm.Normal("beta_method_0", 0.0, 0.3, dims="method")
        beta_method = _segment_effects(pm, pt, "beta_method", beta_method_0, SEGMENT_SPREAD["method"], mfree,
                                       len(d.segments), ("segment", "method"))
        beta_channel_0 = pm.Normal("beta_channel_0", 0.0, 0.3, dims="channel")
        beta_channel = _segment_effects(pm, pt, "beta_channel", beta_channel_0, SEGMENT_SPREAD["channel"], chfree,
                                        len(d.segments), ("segment", "channel"))
        season_a = pm.Normal("season_a", 0.0, 0.2, dims="segment")
        season_b = pm.Normal("season_b", 0.0, 0.2, dims="segment")
        elig = np.flatnonzero(d.season_eligible)
        g = pt.zeros((len(d.customers), 2))
        if len(elig):
            tau_season = pm.HalfNormal("tau_season", 0.2)
            # heavy tails: most customers follow their segment's season, a few (seasonal payers) a lot
            z_season = pm.StudentT("season_z", nu=NU, mu=0.0, sigma=1.0, shape=(len(elig), 2))
            g = pt.set_subtensor(g[elig], z_season * tau_season)
        season_g = pm.Deterministic("season_g", g, dims=("customer", "harmonic"))
        # Coefficients split by the level they vary at: segment-level slopes B (segment x the columns js:
        # terms, discount, dispute, methods, channels) and per-customer values E (customer x jc:
        # intercept, season cos, sin). Each likelihood term below is written on that split (small dense
        # products; no customer x covariate x covariate temporaries), which is what makes a gradient cheap.
        K = d.G.shape[1]
        st = segment_sufficient_stats(d)
        js, jc, onehot = st["js"], st["jc"], st["onehot"]  # onehot: (C, S)
        B = pt.stack([beta_terms * ones_s, beta_disc, beta_disp * ones_s]
                     + [beta_method[:, j] for j in range(len(d.methods))]
                     + [beta_channel[:, j] for j in range(len(d.channels))], axis=1)  # (S, K-3)
        s_cos = season_a[seg] + season_g[:, 0]
        s_sin = season_b[seg] + season_g[:, 1]
        shift = ((pt.dot(d.xbar[:, js], B.T) * onehot).sum(axis=1) + s_cos * d.xbar[:, K - 2]
                 + s_sin * d.xbar[:, K - 1])
        # theta is the customer's mean log time to pay: centred on the segment mean plus what the customer's
        # covariate mix implies (keeps the geometry simple), plus a Mundlak term gamma . (xbar_c - its segment
        # mean) over the non-seasonal covariates. Without it the customer effects are assumed unrelated to habits
        # (paying by check, being offered the discount) and between-customer differences leak into the
        # slopes; with it the slopes are learnt within customers and the habits' association with a
        # customer's level goes to gamma.
        # A covariate that never varies within a customer (a pure habit) gets no Mundlak term: its slope
        # can then only come from comparing customers, and DelayData.within_share says so.
        level = alpha[seg] + shift
        mk = mundlak_design(d)
        if mk.shape[1]:
            level = level + pt.dot(mk, pm.Normal("mundlak", 0.0, 0.5, shape=mk.shape[1]))
        theta = _mixed_normal(pm, pt, "theta", level, tau[seg], d.n, "customer", min_centred)
        E = pt.stack([theta - shift + LOG30, s_cos, s_sin], axis=1)  # (C, 3)
        sigma2 = sigma ** 2
        log_sig = pt.log(sigma)

        def mu_rows(Xr, cust):  # linear predictor of design rows Xr of customers cust
            return (E[cust] * Xr[:, jc]).sum(axis=1) + (pt.dot(Xr[:, js], B.T) * onehot[cust]).sum(axis=1)

        b0 = pt.concatenate([E[:, :1], B[seg], E[:, 1:]], axis=1)  # (C, K) in design order, for tests and checks
        model.delay_coefs = b0
        if per_invoice == "paid":
            rows = np.flatnonzero(d.in_lognormal)
            ci = d.inv_cust[rows]
            pm.Normal("paid_y", mu=(d.X[rows] * b0[ci]).sum(axis=1), sigma=sigma[seg[ci]], observed=d.y[rows])
        elif per_invoice is None:
            # exact Gaussian log-likelihood from the sufficient statistics (n, X'X, X'y, y'y) per customer:
            # sum_c [y'y - 2 b'X'y + b'X'X b] split into its segment part (B'GB summed over the segment's
            # customers) and its customer part (cross terms with E, and E'G E)
            seg_ss = (st["q_s"] - 2 * (B * st["h_s"]).sum(axis=1)
                      + (B[:, :, None] * st["G_ss"] * B[:, None, :]).sum(axis=(1, 2)))
            cross = (pt.dot((st["G_sj"] * E[:, None, :]).sum(axis=2), B.T) * onehot).sum(axis=1)
            cust_ss = (-2 * (E * st["h_j"]).sum(axis=1) + 2 * cross
                       + (E[:, :, None] * st["G_jj"] * E[:, None, :]).sum(axis=(1, 2)))
            pm.Potential("paid_loglik", (-st["n_s"] * log_sig - seg_ss / (2 * sigma2)).sum()
                         - (cust_ss / (2 * sigma2[seg])).sum())
        if len(d.cens_cust) and per_invoice != "all":
            mu_c = mu_rows(d.Xc, d.cens_cust)
            # log P(T > age) = log(erfc(x) / 2), x = z / sqrt 2, written with the scaled erfcx (one special
            # function, stable for large x); x is floored at -20 where the survival is 1 to machine precision
            x = pt.maximum((d.cens_log_age - mu_c) / (np.sqrt(2.0) * sigma[seg[d.cens_cust]]), -20.0)
            pm.Potential("open_censored", (d.cens_w * (pt.log(pt.erfcx(x)) - x ** 2)).sum()
                         - np.log(2.0) * d.cens_w.sum())
        if d.hurdle:
            k_0 = pm.Normal("takeup_0", -1.0, 1.5)
            k = pm.Normal("takeup_seg", k_0, SEGMENT_SPREAD["takeup"], dims="segment")
            tau_v = pm.HalfNormal("tau_takeup", 1.0)
            offered_c = np.flatnonzero(d.n_offered > 0)
            if len(offered_c):
                v = pm.Normal("takeup_z", 0.0, 1.0, shape=len(offered_c)) * tau_v
                logit = k[seg][offered_c] + v  # offered customers only
                if per_invoice != "all":  # per_invoice="all" writes these terms invoice by invoice below
                    log_p = -pm.math.log1pexp(-logit)  # log P(take), log P(not take); per customer, then gathered
                    log_q = log_p - logit
                    # offers not paid in the window: not taken
                    n_late = d.n_offered - d.n_taken
                    pm.Potential("not_taken", (n_late[offered_c] * log_q).sum())
                    if len(d.win_cust):
                        # paid inside the window: taken (uniform day in the window; density e^y / D on the
                        # y scale) or not taken and early anyway (the log-normal) -- a two-part mixture
                        pos = np.searchsorted(offered_c, d.win_cust)
                        mu_w = mu_rows(d.win_X, d.win_cust)
                        sw = seg[d.win_cust]
                        lp_take = log_p[pos] + (d.win_y - d.win_log_d)
                        lp_not = (log_q[pos] - 0.5 * np.log(2 * np.pi) - log_sig[sw]
                                  - 0.5 * ((d.win_y - mu_w) / sigma[sw]) ** 2)
                        hi = pt.maximum(lp_take, lp_not)
                        mix = hi + pt.log1p(pt.exp(-pt.abs(lp_take - lp_not)))
                        pm.Potential("paid_in_window", (d.win_w * mix).sum())
        if per_invoice == "all":
            takeup = (logit, offered_c) if d.hurdle and len(offered_c) else None
            _per_invoice_likelihood(pm, d, b0, sigma, takeup)
    return model


def _per_invoice_likelihood(pm, d: DelayData, b0, sigma, takeup) -> None:
    """Every invoice its own likelihood term (``build_delay_model(per_invoice="all")``, benchmark only).

    The same terms as the project's likelihood, invoice by invoice: a paid invoice outside the take-up
    mixture contributes its log-normal density, an open one log P(T > age) (one ``pm.Censored``
    over both), an offered invoice not paid inside its window log P(not taken), and one paid inside
    it the two-part mixture. ``takeup`` is (take-up logit of the offered customers, their indices), or None.
    """
    seg = d.cust_seg
    rows = np.flatnonzero(d.in_lognormal | d.censored)
    ci = d.inv_cust[rows]
    log_age = np.log(np.clip(d.ledger["age_days"].to_numpy(float)[rows], 1, None))
    upper = np.where(d.in_lognormal[rows], np.inf, log_age)
    observed = np.where(d.in_lognormal[rows], d.y[rows], upper)
    mu = (d.X[rows] * b0[ci]).sum(axis=1)
    pm.Censored("log_days", pm.Normal.dist(mu, sigma[seg[ci]]), lower=None, upper=upper, observed=observed)
    if takeup is None:
        return
    logit, offered_c = takeup
    late = np.searchsorted(offered_c, d.inv_cust[d.not_taken])  # positions among the offered customers
    pm.Potential("not_taken", -pm.math.log1pexp(logit[late]))
    w = np.flatnonzero(d.taken)
    if len(w):
        cw = d.inv_cust[w]
        lw = logit[np.searchsorted(offered_c, cw)]
        mu_w = (d.X[w] * b0[cw]).sum(axis=1)
        lp_take = -pm.math.log1pexp(-lw) + d.y[w] - np.log(np.clip(d.discount_days[w], 1, None))
        lp_not = -pm.math.log1pexp(lw) + pm.logp(pm.Normal.dist(mu_w, sigma[seg[cw]]), d.y[w])
        pm.Potential("paid_in_window", pm.math.logaddexp(lp_take, lp_not))


def add_deterministics(post: xr.Dataset, d: DelayData, min_centred: int = CENTRED_MIN_INVOICES) -> xr.Dataset:
    """The model's deterministic values, computed from the free parameters for every draw at once.

    The hand-written sampler (:mod:`.delay_grad`) stores only the free parameters; this adds what the
    PyMC model defines as ``pm.Deterministic``: ``theta``, ``season_g`` and the per-segment
    ``beta_method`` / ``beta_channel`` where some levels are shared across segments.
    """
    ch, dr = post.sizes["chain"], post.sizes["draw"]
    S, C = len(d.segments), len(d.customers)

    def fl(name):
        return _flat(post, name)

    def unflat(a):
        return a.reshape((ch, dr) + a.shape[1:])

    out = {}
    levels = {}
    for name, free in zip(("beta_method", "beta_channel"), d.free_levels(), strict=True):
        if name in post:
            levels[name] = fl(name)
            continue
        base = fl(f"{name}_0")  # (N, levels)
        full = np.repeat(base[:, None, :], S, axis=1)
        if f"{name}_free" in post:
            full[:, :, free] = fl(f"{name}_free")
        levels[name] = full
        out[name] = (("chain", "draw", "segment", name.split("_")[1]), unflat(full))
    N = ch * dr
    g = np.zeros((N, C, 2))
    elig = np.flatnonzero(d.season_eligible)
    if len(elig):
        g[:, elig] = fl("season_z") * fl("tau_season")[:, None, None]
    out["season_g"] = (("chain", "draw", "customer", "harmonic"), unflat(g))
    big = d.n >= min_centred
    theta = np.empty((N, C))
    theta[:, big] = fl("theta_centred") if big.any() else 0.0
    small = np.flatnonzero(~big)
    if len(small):
        seg = d.cust_seg[small]
        K = d.G.shape[1]
        B = np.concatenate([np.repeat(fl("beta_terms")[:, None, None], S, axis=1), fl("beta_disc")[:, :, None],
                            np.repeat(fl("beta_disp")[:, None, None], S, axis=1), levels["beta_method"],
                            levels["beta_channel"]], axis=2)  # (N, S, K - 3)
        s_cos = fl("season_a")[:, seg] + g[:, small, 0]
        s_sin = fl("season_b")[:, seg] + g[:, small, 1]
        shift = ((B[:, seg, :] * d.xbar[small, 1:K - 2]).sum(axis=2) + s_cos * d.xbar[small, K - 2]
                 + s_sin * d.xbar[small, K - 1])
        level = fl("alpha")[:, seg] + shift
        mk = mundlak_design(d)
        if mk.shape[1]:
            level = level + fl("mundlak") @ mk[small].T
        theta[:, small] = level + fl("theta_z") * fl("tau")[:, seg]
    out["theta"] = (("chain", "draw", "customer"), unflat(theta))
    coords = {"customer": list(d.customers), "segment": list(d.segments), "method": d.methods,
              "channel": d.channels, "harmonic": ["cos", "sin"]}
    used = set(post.dims) | {dim for dims, _ in out.values() for dim in dims}
    return post.assign(out).assign_coords({k: v for k, v in coords.items() if k in used})


def linpred(b: np.ndarray, cust: np.ndarray, X: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Linear predictor (S, n) = per-draw ``b[s, cust[i]] . X[i]``, in blocks of draws.

    The one-shot ``einsum`` over ``b[:, cust, :]`` materialises an (S, n, K) array: 4.8 GB for
    1,000 draws of the demo ledger's 46k paid invoices. Blocks keep it to a few hundred MB.
    """
    out = np.empty((b.shape[0], len(cust)))
    for s0 in range(0, b.shape[0], chunk):
        out[s0:s0 + chunk] = np.einsum("sik,ik->si", b[s0:s0 + chunk][:, cust, :], X)
    return out


def draw_thin(post: xr.Dataset, max_draws: int) -> int:
    """The thinning step that keeps at most about ``max_draws`` of the posterior's chain x draw samples."""
    return max(1, post.sizes["chain"] * post.sizes["draw"] // max_draws)


def _flat(post: xr.Dataset, name: str, thin: int = 1) -> np.ndarray:
    """A posterior variable with chain and draw flattened into a leading sample axis."""
    return post[name].stack(sample=("chain", "draw")).transpose("sample", ...).values[::thin]


_PARAMS = ["theta", "beta_terms", "beta_disc", "beta_disp", "beta_method", "beta_channel", "season_a",
           "season_b", "season_g"]


def _draws(post: xr.Dataset, d: DelayData, thin: int = 1) -> dict:
    """Posterior arrays with chain and draw flattened into one sample axis."""
    out = {}
    for name in _PARAMS + ["sigma"]:
        if name not in post:
            raise KeyError(f"posterior lacks {name}")
        out[name] = _flat(post, name, thin)
    for name, levels in (("beta_method", d.methods), ("beta_channel", d.channels)):
        if len(levels) == 0:
            out[name] = np.zeros((out["theta"].shape[0], len(d.segments), 0))
    return out


def coef_draws(post: xr.Dataset, d: DelayData, thin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer coefficients (S, C, K), log-scale intercept included, and sigma per customer (S, C)."""
    p = _draws(post, d, thin)
    b = _coefs(p, d)
    b[..., 0] += LOG30
    return b, p["sigma"][:, d.cust_seg]


def takeup_draws(post: xr.Dataset, d: DelayData, thin: int = 1) -> np.ndarray | None:
    """Per-customer discount take-up probability (S, C); customers never offered get their segment's."""
    if not d.hurdle or "takeup_seg" not in post:
        return None
    logit = _flat(post, "takeup_seg", thin)[:, d.cust_seg]
    if "takeup_z" in post:
        z, tv = _flat(post, "takeup_z", thin), _flat(post, "tau_takeup", thin)
        logit[:, np.flatnonzero(d.n_offered > 0)] += z * tv[:, None]
    return expit(logit)


@dataclass
class DelayFit:
    """A fitted payment-delay model: data, posterior, diagnostics, settings, timings."""

    data: DelayData
    idata: xr.DataTree
    diagnostics: Diagnostics
    settings: FitSettings
    timings: dict
    key: str

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].dataset

    def summary(self) -> dict:
        return {"model": MODEL_VERSION, "as_of": str(self.data.as_of.date()), "cache_key": self.key,
                "settings": self.settings.__dict__, "diagnostics": self.diagnostics.as_dict(),
                "timings_seconds": self.timings, "n_customers": len(self.data.customers),
                "n_segments": len(self.data.segments), "n_paid_in_lognormal": int(self.data.n.sum()),
                "n_open_censored": int(self.data.cens_w.sum()), "n_taken": int(self.data.n_taken.sum()),
                "n_offered": int(self.data.n_offered.sum()), "features": self.data.features,
                "stopped_paying_customers": int(self.data.stopped.sum())}


def _next_invoice(post: xr.Dataset, d: DelayData, thin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Log-scale location and scale of T for each customer's next invoice, both (S, C).

    Accumulated one design column at a time: the full (S, C, K) coefficient array of 6,000 draws
    of the demo's 1,000 customers is half a gigabyte.
    """
    p = _draws(post, d, thin)
    mu = p["theta"] + LOG30
    for j, col in enumerate(_slope_columns(p, d), start=1):
        mu += col * (d.next_X[:, j] - d.xbar[:, j])
    return mu, p["sigma"][:, d.cust_seg]


def p_late_draws(fit_or_post, d: DelayData, thin: int = 1) -> np.ndarray:
    """P(next invoice paid after due date) per customer, (S, C)."""
    post = fit_or_post.posterior if isinstance(fit_or_post, DelayFit) else fit_or_post
    mu, sig = _next_invoice(post, d, thin)
    return ndtr((mu - np.log(d.next_terms)[None]) / sig)


def delay_diagnostics(post: xr.Dataset, sample_stats: xr.Dataset | None, d: DelayData) -> Diagnostics:
    """R-hat, bulk ESS and divergences over every reported quantity (each customer's p_late included)."""
    quantities = {"p_late": xr.DataArray(
        p_late_draws(post, d).reshape(post.sizes["chain"], post.sizes["draw"], -1), dims=("chain", "draw", "customer"))}
    for name in ("alpha", "sigma", "beta_terms", "beta_disc", "beta_disp", "beta_method", "beta_channel",
                 "beta_method_0", "beta_channel_0"):
        if name in post and post[name].size:
            quantities[name] = post[name]
    return check_convergence(quantities, sample_stats)


def _code_digest() -> str:
    """A hash of the code that defines the model, so an edited model never reuses a stale cached fit."""
    import hashlib
    import inspect

    src = "".join(inspect.getsource(f) for f in (prepare_delay_data, _cells, design_matrix, _slope_columns, _coefs,
                                                 _mixed_normal, _segment_effects, mundlak_design, segment_sufficient_stats,
                                                 build_delay_model,
                                                 add_deterministics))
    # the sampler's kernel, read as text: importing it would load its compiled code in every notebook
    src += (Path(__file__).parent / "delay_grad.py").read_text()
    return hashlib.sha256(src.encode()).hexdigest()[:12]


def _fit_key(d: DelayData, settings: FitSettings) -> str:
    return cache_key("delay", f"{MODEL_VERSION}:{_code_digest()}", d.digest(), str(d.as_of.date()), settings,
                     {"hurdle": d.hurdle})


def fit_delay(ledger: pd.DataFrame, settings: FitSettings | None = None, *, hurdle: bool = True,
              allow_unconverged: bool = False, cache: bool = True, progress: bool = True,
              stopped_paying_days: int = STOPPED_PAYING_DAYS, data: DelayData | None = None) -> DelayFit:
    """Fit the payment-delay model, reusing a cached fit of the same data and settings.

    ``data``, when given, is the ledger already prepared (:func:`prepare_delay_data` with the same
    ``hurdle`` and ``stopped_paying_days``) and is used as is.

    Raises
    ------
    ConvergenceError
        If R-hat, ESS or divergences fail their limits and ``allow_unconverged`` is False.
    """
    from ..config import CACHE_DIR

    settings = settings or FitSettings()
    t0 = time.perf_counter()
    d = data if data is not None else prepare_delay_data(ledger, hurdle=hurdle, stopped_paying_days=stopped_paying_days)
    if d.hurdle != hurdle:
        raise ValueError(f"prepared data has hurdle={d.hurdle}, the fit asks for hurdle={hurdle}")
    t_prep = time.perf_counter() - t0
    key = _fit_key(d, settings)
    t1 = time.perf_counter()
    def compile_model():  # the PyMC model's parameters, sampled with the hand-written log density
        from .delay_grad import compile_for_nutpie, make_delay_logp

        return compile_for_nutpie(make_delay_logp(d, build_delay_model(d), CENTRED_MIN_INVOICES))

    idata, seconds, cached = sample_cached(compile_model, key, settings, CACHE_DIR if cache else None, progress,
                                           complete_posterior=lambda post: add_deterministics(post, d))
    t_fit = time.perf_counter() - t1

    def diagnose():
        return {"diagnostics": delay_diagnostics(
            idata["posterior"].dataset, idata["sample_stats"].dataset if "sample_stats" in idata.children else None, d)}

    if cache:  # the p_late draws of 1,000 customers x 4,000 draws take seconds: computed once per fit
        from ..cache import cached_tables

        diag = cached_tables("delay-diagnostics", {"fit": key}, diagnose)["diagnostics"]
    else:
        diag = diagnose()["diagnostics"]
    diag.sampling_seconds = float(idata.attrs.get("sampling_seconds", seconds))
    diag.cached = cached
    timings = {"prepare": round(t_prep, 2), "build_and_sample": round(t_fit, 2),
               "sampling_only": round(diag.sampling_seconds, 2), "cached": cached}
    fit = DelayFit(data=d, idata=idata, diagnostics=diag, settings=settings, timings=timings, key=key)
    if not diag.ok and not allow_unconverged:
        raise ConvergenceError(
            f"payment-delay fit {diag.message()}. Sample longer (--draws/--tune) or pass "
            "--allow-unconverged to write results that carry a warning.")
    return fit


# ---------------------------------------------------------------- estimands

def _q(a, p, axis=0):
    return np.quantile(a, p, axis=axis)


def customer_risk(fit: DelayFit, late_threshold: float = 0.5, late_confidence: float = 0.9,
                  interval: float = 0.90) -> pd.DataFrame:
    """Per-customer late risk with intervals and open exposure.

    Columns: customer_id, segment, n_invoices, p_late (posterior mean), p_late_q05, p_late_q95,
    expected_days_late (E[max(days_to_pay - terms, 0)] for the next invoice) with q05/q95,
    open_amount, open_past_due_amount, routinely_late, p_routinely_late, stopped_paying.

    ``routinely_late`` is True when P(p_late > late_threshold) >= late_confidence.
    """
    d = fit.data
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    mu, sig = _next_invoice(fit.posterior, d)
    pl = ndtr((mu - np.log(d.next_terms)[None]) / sig)
    # E[(T - K)+] for log-normal T with K = terms (Black-Scholes partial expectation)
    K = d.next_terms[None]
    edl = np.exp(mu + sig ** 2 / 2) * ndtr((mu + sig ** 2 - np.log(K)) / sig) - K * ndtr((mu - np.log(K)) / sig)
    led = d.ledger
    n_inv = led.groupby("customer_id").size().reindex(d.customers)
    open_amt = led[led["is_open"]].groupby("customer_id")["amount"].sum().reindex(d.customers).fillna(0.0)
    pd_amt = led[led["is_open"] & (led["days_past_due"] > 0)].groupby("customer_id")["amount"].sum()
    p_rl = (pl > late_threshold).mean(0)
    out = pd.DataFrame({
        "customer_id": d.customers.astype(str), "segment": d.segments[d.cust_seg].astype(str),
        "n_invoices": n_inv.to_numpy(int), "p_late": pl.mean(0), "p_late_q05": _q(pl, lo), "p_late_q95": _q(pl, hi),
        "expected_days_late": edl.mean(0), "expected_days_late_q05": _q(edl, lo),
        "expected_days_late_q95": _q(edl, hi), "open_amount": open_amt.to_numpy(),
        "open_past_due_amount": pd_amt.reindex(d.customers).fillna(0.0).to_numpy(),
        "routinely_late": p_rl >= late_confidence, "p_routinely_late": p_rl, "stopped_paying": d.stopped,
    })
    if not fit.diagnostics.ok:
        out["warning"] = "fit did not pass convergence checks"
    return out.sort_values(["routinely_late", "p_late"], ascending=False).reset_index(drop=True)


def _open_payment_days(fit: DelayFit, seed: int, max_draws: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior predictive days to pay (from the invoice date) of every open invoice.

    For each (thinned) posterior draw, T is drawn from the log-normal truncated
    below at the invoice's age (it is unpaid so far); an offered invoice still
    inside its discount window may yet be taken, with the customer's take-up
    probability conditioned on not having taken it so far (uniform take day).

    Returns (row positions of the open invoices in the ledger, their ages, days (S, n_open)).
    """
    d = fit.data
    led = d.ledger
    op = np.flatnonzero(led["is_open"].to_numpy())
    thin = draw_thin(fit.posterior, max_draws)
    b, sig = coef_draws(fit.posterior, d, thin)
    rng = np.random.default_rng(seed)
    c = d.inv_cust[op]
    age = led["age_days"].to_numpy(float)[op]
    mu = linpred(b, c, d.X[op])
    s = sig[:, c]
    a = ndtr((np.log(np.clip(age, 1e-9, None))[None] - mu) / s)
    uu = a + rng.random(mu.shape) * (1 - a)
    t = np.exp(mu + s * ndtri(np.clip(uu, 1e-12, 1 - 1e-12)))
    take = takeup_draws(fit.posterior, d, thin)
    if take is not None:
        D = d.discount_days[op]
        window = d.offered[op] & (age < D) & ~d.ledger["disputed"].to_numpy(bool)[op]
        p = take[:, c] * window[None]
        frac_left = np.clip((D - age) / np.clip(D, 1, None), 0, 1)
        p_cond = p * frac_left / (1 - p * (1 - frac_left))
        tk = rng.random(mu.shape) < p_cond
        tday = age[None] + rng.random(mu.shape) * np.clip(D - age, 0, None)[None]
        t = np.where(tk, tday, t)
    return op, age, np.maximum(np.ceil(t), age[None] + 1)


def open_invoice_forecast(fit: DelayFit, horizon_days: int = HORIZON_DAYS, seed: int = 0,
                          max_draws: int = 1000) -> pd.DataFrame:
    """Posterior predictive payment dates for every invoice open at the as-of date.

    Draws come from :func:`_open_payment_days`. Quantiles beyond ``horizon_days``
    after the as-of date are left empty.
    """
    d = fit.data
    led = d.ledger
    op, age, days = _open_payment_days(fit, seed, max_draws)
    within = (days <= age[None] + 30).mean(0)
    inv_date = led["invoice_date"].to_numpy()[op]
    out = pd.DataFrame({
        "invoice_id": led["invoice_id"].to_numpy()[op], "customer_id": led["customer_id"].to_numpy()[op],
        "segment": led["segment"].to_numpy()[op],
        "amount": led["amount"].to_numpy()[op], "invoice_date": inv_date, "due_date": led["due_date"].to_numpy()[op],
        "age_days": age.astype(int), "p_paid_within_30d": within,
    })
    limit = age + horizon_days
    for qn in (10, 50, 90):
        qd = np.quantile(days, qn / 100, axis=0, method="inverted_cdf")
        dates = pd.to_datetime(inv_date) + pd.to_timedelta(qd, unit="D")
        out[f"paid_date_q{qn}"] = pd.Series(dates).where(qd <= limit).to_numpy()
    out["stopped_paying"] = d.stopped[d.inv_cust[op]]
    return out.sort_values(["due_date", "invoice_id"]).reset_index(drop=True)


def open_invoice_day_samples(fit: DelayFit, seed: int = 0, max_draws: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    """Predictive draws of days from the as-of date to payment for each open invoice.

    The same draws as :func:`open_invoice_forecast`. Returns the open invoices (ledger
    rows, in ledger order) and an array (S, n_open) of days after the as-of date;
    used by the collections forecast.
    """
    op, age, days = _open_payment_days(fit, seed, max_draws)
    return fit.data.ledger.iloc[op].reset_index(drop=True), days - age[None]


def seasonal_payers(fit: DelayFit, min_amplitude: float = 0.15, confidence: float = 0.8,
                    interval: float = 0.90) -> pd.DataFrame:
    """Customers whose own seasonal pattern is credibly strong.

    The customer's seasonal curve is (a_s + g_c) cos + (b_s + h_c) sin on the log
    scale; its amplitude is a multiplicative swing in days to pay (0.2 ~ +-22%).
    A seasonal payer has P(own deviation amplitude > ``min_amplitude``) >= ``confidence``.
    ``slowest_month`` is the month whose invoices are paid slowest.
    """
    d = fit.data
    post = fit.posterior
    g = _flat(post, "season_g")  # (S, C, 2)
    a = _flat(post, "season_a")[:, d.cust_seg]
    bb = _flat(post, "season_b")[:, d.cust_seg]
    cos, sin = a + g[..., 0], bb + g[..., 1]
    amp = np.hypot(cos, sin)
    own = np.hypot(g[..., 0], g[..., 1])
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    phase = np.arctan2(sin.mean(0), cos.mean(0))
    slow = (np.round(phase * 12 / (2 * np.pi)) - 1) % 12 + 1
    fast = (slow + 5) % 12 + 1
    p_seasonal = (own > min_amplitude).mean(0)
    out = pd.DataFrame({
        "customer_id": d.customers.astype(str), "segment": d.segments[d.cust_seg].astype(str),
        "eligible": d.season_eligible, "amplitude": amp.mean(0), "amplitude_q05": _q(amp, lo),
        "amplitude_q95": _q(amp, hi), "own_amplitude": own.mean(0), "p_seasonal": p_seasonal,
        "slowest_month": slow.astype(int), "fastest_month": fast.astype(int),
        "seasonal_payer": d.season_eligible & (p_seasonal >= confidence),
    })
    return out[out["eligible"]].sort_values("p_seasonal", ascending=False).drop(columns="eligible").reset_index(drop=True)


def pointwise_loglik(fit: DelayFit, thin: int = 4) -> np.ndarray:
    """Per-invoice log-likelihood of paid invoices on the y = log(days - 0.5) scale, (chain, draw', n_paid).

    Under the take-up model an offered invoice paid inside its window contributes the
    mixture log(p_take x uniform-day density + (1 - p_take) x log-normal density); other
    offered invoices log(1 - p_take) + log-normal density.
    The same paid invoices are scored under either likelihood, so LOO compares them.
    """
    d = fit.data
    post = fit.posterior
    ch = post.sizes["chain"]
    sel = post.isel(draw=slice(None, None, thin))
    b, sig = coef_draws(sel, d)
    paid = np.flatnonzero(~np.isnan(d.y))
    c = d.inv_cust[paid]
    mu = linpred(b, c, d.X[paid])
    s = sig[:, c]
    y = d.y[paid]
    ll = -0.5 * np.log(2 * np.pi) - np.log(s) - 0.5 * ((y[None] - mu) / s) ** 2
    take = takeup_draws(sel, d)
    if take is not None:
        pt_ = take[:, c]
        off = d.offered[paid] & ~d.ledger["disputed"].to_numpy(bool)[paid]  # a disputed invoice cannot take it
        tk = d.taken[paid]
        D = np.clip(d.discount_days[paid], 1, None)
        ll_take = np.log(pt_) + y[None] - np.log(D)[None]  # T ~ Uniform(0, D): density e^y / D on y
        ll_mix = np.logaddexp(ll_take, np.log1p(-pt_) + ll)  # paid in the window: taken or early anyway
        ll = np.where(tk[None], ll_mix, np.where(off[None], np.log1p(-pt_) + ll, ll))
    S = ll.shape[0]
    return ll.reshape(ch, S // ch, -1)



def loo_tree(fit: DelayFit, thin: int = 8) -> xr.DataTree:
    """Posterior plus pointwise log-likelihood of the paid invoices, the input ``az.loo``/``az.compare`` expect."""
    ll = pointwise_loglik(fit, thin)
    post = fit.posterior.isel(draw=slice(None, None, thin))[["alpha", "sigma"]]
    return xr.DataTree.from_dict({"posterior": post, "log_likelihood": xr.Dataset(
        {"days": (("chain", "draw", "invoice"), ll)}, coords={"chain": post["chain"], "draw": post["draw"]})})


def compare_likelihoods(ledger: pd.DataFrame, settings: FitSettings | None = None, main: DelayFit | None = None,
                        thin: int = 8, **kw) -> pd.DataFrame:
    """LOO comparison of the take-up mixture ("hurdle") likelihood against a plain log-normal for every paid invoice.

    Both are scored on the same paid invoices on the same scale (y = log(days - 0.5)).
    Returns the ``az.compare`` table with ``n_high_k`` (invoices whose Pareto k-hat exceeds ArviZ's
    threshold: their LOO terms are less reliable) and ``n_invoices``. ``main`` reuses an existing hurdle fit. The table is
    cached under both fits' keys (pointwise log-likelihoods of every paid invoice and PSIS
    take most of a minute on the demo ledger), so a re-run reads it back.
    """
    import arviz as az

    from ..cache import cached_tables

    settings = settings or FitSettings()
    main = main or fit_delay(ledger, settings, allow_unconverged=True, **kw)
    alt_data = prepare_delay_data(ledger, hurdle=False,
                                  stopped_paying_days=kw.get("stopped_paying_days", STOPPED_PAYING_DAYS))
    alt_key = _fit_key(alt_data, settings)

    def compute():
        alt = fit_delay(ledger, settings, hurdle=False, allow_unconverged=True, data=alt_data, **kw)
        loos = {}
        with warnings.catch_warnings():
            # ArviZ warns once per model when some Pareto k-hat are high; the counts are reported instead
            # (n_high_k, and az.compare's diag_elpd), which a notebook reader can weigh against elpd_diff / dse
            warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
            for name, f in (("take-up mixture + log-normal", main), ("log-normal only", alt)):
                loos[name] = az.loo(loo_tree(f, thin), pointwise=True)
            table = az.compare(loos)
        table["n_high_k"] = [int((np.asarray(loos[n].pareto_k) > loos[n].good_k).sum()) for n in table.index]
        table["n_invoices"] = [int(loos[n].n_data_points) for n in table.index]
        return {"compare": table}

    return cached_tables("loo", {"main": main.key, "alternative": alt_key, "thin": thin}, compute)["compare"]


def prior_predictive_days(d: DelayData, draws: int = 200, n_invoices: int = 2000, seed: int = 0) -> np.ndarray:
    """Days to pay simulated from the prior (parameters drawn from their priors, log-normal part only)."""
    import pymc as pm

    rng = np.random.default_rng(seed)
    log = logging.getLogger("pymc")
    level = log.level
    with build_delay_model(d), warnings.catch_warnings():
        # the likelihood terms are Potentials, which prior sampling ignores: intended, the parameters are drawn
        # from their priors and the days simulated below (so neither that warning nor the list of sampled
        # variables goes into the report's pages)
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        log.setLevel(logging.WARNING)
        try:
            prior = pm.sample_prior_predictive(draws=draws, var_names=_PARAMS + ["sigma"], random_seed=seed)
        finally:
            log.setLevel(level)
    ds = prior["prior"].dataset if hasattr(prior, "children") else prior.prior
    b, sig = coef_draws(ds, d)
    rows = rng.choice(len(d.X), size=min(n_invoices, len(d.X)), replace=False)
    c = d.inv_cust[rows]
    mu = linpred(b, c, d.X[rows])
    return np.ceil(np.exp(mu + sig[:, c] * rng.standard_normal(mu.shape))).ravel()


def posterior_predictive_days(fit: DelayFit, max_draws: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observed days to pay and replicated ones from the posterior predictive.

    Paid invoices where the discount was not taken; ``max_draws`` posterior draws
    each replicate every such invoice once. Returns (observed, replicated) arrays.
    """
    d = fit.data
    rng = np.random.default_rng(seed)
    sel = np.flatnonzero(~np.isnan(d.y) & ~d.taken)
    b, sig = coef_draws(fit.posterior, d, thin=draw_thin(fit.posterior, max_draws))
    c = d.inv_cust[sel]
    mu = linpred(b, c, d.X[sel])
    rep = np.ceil(np.exp(mu + sig[:, c] * rng.standard_normal(mu.shape)))
    obs = np.ceil(np.exp(d.y[sel]) + 0.5)
    return obs, rep.ravel()

