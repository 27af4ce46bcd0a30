"""Backtesting: how good were the predictions, against simple baselines, on the user's own data?

For each origin date:

1. **Cut** the validated ledger at the origin (:func:`arresearch.ledger.prepare_ledger`):
   invoices after it are left out, payments and dispute events after it have not happened.
   Every model -- ours and the baselines -- sees only this cut.
2. **Predict** for every invoice open at the origin and every invoice issued in the next
   ``horizon_months`` months (of customers known at the origin): whether it will be paid
   late, and its days to pay (median and 80% interval).
3. **Score** against the ledger as of the end of the data. An invoice still unpaid at
   the end is censored there: it counts as late when its age then exceeds its terms
   (known late), is left out of the late scores otherwise; it counts as outside its 80%
   interval when its age exceeds the interval's upper end, and is left out of the
   coverage otherwise; MAE uses paid invoices only.

Models:

- ``bayes``: the payment-delay model fitted at the origin (cached), posterior predictive.
  Open invoices are conditioned on being unpaid at their age; a new invoice's dispute is
  unknown at the origin and drawn with the customer's dispute share so far.
- ``history``: the customer's historical late rate (Laplace-smoothed) and the empirical
  10/50/90% quantiles of its days to pay (conditioned on the age of an open invoice).
- ``gbm``: scikit-learn HistGradientBoosting (classifier for late, quantile regressors
  for days) on invoice features plus customer history features computed from earlier
  invoices only, trained on the invoices paid by the origin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .ledger import prepare_ledger
from .models.delay import (
    DelayFit,
    _open_payment_days,
    coef_draws,
    design_matrix,
    draw_thin,
    fit_delay,
    linpred,
    takeup_draws,
)
from .models.sampling import FitSettings

__all__ = ["auc", "brier", "mae", "coverage", "calibration_curve", "targets_at_origin", "predict_bayes",
           "predict_history", "predict_gbm", "score", "run_backtest", "default_origins"]

Q = (0.1, 0.5, 0.9)
MATURE_DAYS = 120  # the gbm baseline trains on invoices at least this old at the origin


# ------------------------------------------------------------------ metrics

def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); nan when only one class is present."""
    y = np.asarray(y, bool)
    p = np.asarray(p, float)
    n1, n0 = y.sum(), (~y).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def mae(days: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(days, float) - np.asarray(pred, float))))


def coverage(days: np.ndarray, lo: np.ndarray, hi: np.ndarray, censored: np.ndarray | None = None) -> tuple[float, int]:
    """Share of outcomes inside [lo, hi] and the number scored.

    A censored outcome (still unpaid at the given age) counts as a miss when its age is
    already beyond ``hi`` and is not scored otherwise.
    """
    days, lo, hi = (np.asarray(a, float) for a in (days, lo, hi))
    cens = np.zeros(len(days), bool) if censored is None else np.asarray(censored, bool)
    inside = ~cens & (days >= lo) & (days <= hi)
    scored = ~cens | (days > hi)
    n = int(scored.sum())
    return (float(inside[scored].mean()) if n else float("nan")), n


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability against observed frequency in equal-width bins of p."""
    p = np.asarray(p, float)
    b = np.clip((p * bins).astype(int), 0, bins - 1)
    df = pd.DataFrame({"bin": b, "p": p, "y": np.asarray(y, float)})
    g = df.groupby("bin").agg(n=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")).reset_index()
    return g


# ------------------------------------------------------------------ targets

def targets_at_origin(clean: pd.DataFrame, origin, end, horizon_months: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train ledger cut at the origin, target invoices with their outcomes as of ``end``).

    Targets: invoices open at the origin plus those issued in the next ``horizon_months``
    months, of customers with history at the origin. Outcome columns: ``days`` (to payment,
    or age at ``end`` when ``censored``), ``late`` (nan when unknown), ``kind`` (open/new).
    """
    origin, end = pd.Timestamp(origin), pd.Timestamp(end)
    train = prepare_ledger(clean, origin)
    full = prepare_ledger(clean, end)
    known = set(train["customer_id"])
    stop = origin + pd.DateOffset(months=horizon_months)
    open_ids = set(train.loc[train["is_open"], "invoice_id"])
    is_new = (full["invoice_date"] > origin) & (full["invoice_date"] <= stop)
    t = full[(full["invoice_id"].isin(open_ids) | is_new) & full["customer_id"].isin(known)].copy()
    t["kind"] = np.where(t["invoice_id"].isin(open_ids), "open", "new")
    t["censored"] = t["is_open"]
    t["days"] = np.where(t["censored"], t["age_days"], t["days_to_pay"].to_numpy(dtype=float, na_value=np.nan))
    late = t["days"] > t["terms_days"]
    t["late"] = np.where(~t["censored"] | late, late.astype(float), np.nan)
    # what was known at the origin about the open ones: their age then
    t["age_at_origin"] = np.where(t["kind"] == "open", (origin - t["invoice_date"]).dt.days, 0)
    return train, t.reset_index(drop=True)


# ------------------------------------------------------------------ predictions

def _summ(days: np.ndarray, terms: np.ndarray) -> pd.DataFrame:
    """From predictive draws (S, n) of days to pay: p_late, q10, q50, q90."""
    qs = np.quantile(days, Q, axis=0)
    return pd.DataFrame({"p_late": (days > terms[None]).mean(0), "q10": qs[0], "q50": qs[1], "q90": qs[2]})


def predict_bayes(fit: DelayFit, targets: pd.DataFrame, seed: int = 0, max_draws: int = 400) -> pd.DataFrame:
    """Posterior predictive p_late and days quantiles for the targets, from a fit at the origin."""
    d = fit.data
    led = d.ledger
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(index=targets.index, columns=["p_late", "q10", "q50", "q90"], dtype=float)
    # open at the origin: the delay module's conditional draws
    op, _, days_open = _open_payment_days(fit, seed, max_draws)
    pos = pd.Series(np.arange(len(op)), index=led["invoice_id"].to_numpy()[op])
    is_open = (targets["kind"] == "open").to_numpy()
    if is_open.any():
        j = pos.reindex(targets.loc[is_open, "invoice_id"]).to_numpy()
        ok = ~np.isnan(j)
        s = _summ(days_open[:, j[ok].astype(int)], targets.loc[is_open, "terms_days"].to_numpy(float)[ok])
        out.loc[targets.index[is_open][ok]] = s.to_numpy()
    new = targets[~is_open]
    if len(new):
        thin = draw_thin(fit.posterior, max_draws)
        b, sig = coef_draws(fit.posterior, d, thin)
        c = d.customers.get_indexer(new["customer_id"])
        X = design_matrix(new.assign(disputed=False), d.methods, d.channels)
        # a dispute is unknown at the origin: drawn with the customer's share of disputed invoices so far
        share = led.groupby("customer_id")["disputed"].mean().reindex(d.customers).fillna(0).to_numpy()
        j_disp = 1 + d.features.index("disputed")
        disp = rng.random((b.shape[0], len(new))) < share[c][None]
        mu = linpred(b, c, X) + disp * b[:, c, j_disp]
        t = np.exp(mu + sig[:, c] * rng.standard_normal(mu.shape))
        take = takeup_draws(fit.posterior, d, thin)
        if take is not None:
            offered = new["discount_offered"].to_numpy(bool)
            D = new["discount_days"].to_numpy(float)
            tk = (rng.random(mu.shape) < take[:, c]) & offered[None] & ~disp
            t = np.where(tk, rng.random(mu.shape) * np.clip(D, 1, None)[None], t)
        days = np.maximum(np.ceil(t), 1)
        out.loc[new.index] = _summ(days, new["terms_days"].to_numpy(float)).to_numpy()
    return out


def predict_history(train: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Baseline: the customer's own history (late share with Laplace smoothing, empirical quantiles)."""
    paid = train[~train["is_open"]]
    hist = {cid: g for cid, g in paid.groupby("customer_id")}
    glob = paid
    rows = []
    for r in targets.itertuples():
        g = hist.get(r.customer_id, glob)
        dtp = g["days_to_pay"].to_numpy(float)
        late = (g["days_to_pay"] > g["terms_days"]).to_numpy()
        age = r.age_at_origin
        if r.kind == "open" and age > 0:
            keep = dtp > age
            dtp, late = (dtp[keep], late[keep]) if keep.any() else (np.array([age + 1.0]), np.array([age > r.terms_days]))
        p = (late.sum() + 1) / (len(late) + 2)
        if r.kind == "open" and age > r.terms_days:
            p = 1.0
        q10, q50, q90 = np.quantile(dtp, Q) if len(dtp) else (np.nan,) * 3
        rows.append((p, q10, q50, q90))
    return pd.DataFrame(rows, index=targets.index, columns=["p_late", "q10", "q50", "q90"])


def _gbm_features(df: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    x = pd.DataFrame({
        "terms": df["terms_days"].to_numpy(float), "log_amount": np.log(df["amount"].to_numpy(float)),
        "month": df["month"].to_numpy(float), "discount": df["discount_offered"].to_numpy(float),
        "age": df["age_at_origin"].to_numpy(float) if "age_at_origin" in df else 0.0,
    }, index=df.index)
    for col in ("payment_method", "billing_channel", "segment"):
        x[col] = df[col].astype(str).astype("category")
    return x.join(hist, how="left")


def _expanding_history(train: pd.DataFrame) -> pd.DataFrame:
    """Per training invoice: its customer's late share, mean log days and count over *earlier* paid invoices."""
    t = train.sort_values(["customer_id", "invoice_date", "invoice_id"])
    paid = (~t["is_open"]).astype(float)
    dtp = t["days_to_pay"].to_numpy(dtype=float, na_value=np.nan)
    late = pd.Series(np.where(paid > 0, dtp > t["terms_days"].to_numpy(float), 0.0), index=t.index)
    logd = pd.Series(np.where(paid > 0, np.log(np.clip(np.nan_to_num(dtp, nan=1.0), 1, None)), 0.0), index=t.index)
    g = t["customer_id"]
    n_prev = paid.groupby(g).cumsum() - paid
    s_late = late.groupby(g).cumsum() - late
    s_logd = logd.groupby(g).cumsum() - logd
    return pd.DataFrame({"h_late": (s_late + 1) / (n_prev + 2), "h_logd": s_logd / n_prev.replace(0, np.nan),
                         "h_n": n_prev}, index=t.index)


def predict_gbm(train: pd.DataFrame, targets: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Baseline: gradient boosting on invoice and customer-history features (history before each invoice)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    paid = train[~train["is_open"]]
    h_train = _expanding_history(train)
    # train on matured invoices only: those issued MATURE_DAYS before the origin, unpaid ones counted at
    # their age (late when past terms). Training on "paid by the origin" keeps only the fast recent
    # invoices and teaches the model that recent months are never late.
    mature = train[train["age_days"] >= MATURE_DAYS]
    days_m = mature["days_to_pay"].to_numpy(dtype=float, na_value=np.nan)
    days_m = np.where(np.isnan(days_m), mature["age_days"].to_numpy(float), days_m)
    X = _gbm_features(mature.assign(age_at_origin=0.0), h_train.reindex(mature.index))
    y_late = days_m > mature["terms_days"].to_numpy(float)
    y_logd = np.log(np.clip(days_m, 1, None))
    # at the origin: each customer's history over all its invoices paid by then
    late_all = (paid["days_to_pay"] > paid["terms_days"]).astype(float)
    by = pd.DataFrame({"late": late_all, "logd": np.log(paid["days_to_pay"].astype(float).clip(lower=1)),
                       "c": paid["customer_id"]}).groupby("c")
    hc = pd.DataFrame({"h_late": (by["late"].sum() + 1) / (by["late"].size() + 2), "h_logd": by["logd"].mean(),
                       "h_n": by["late"].size().astype(float)})
    h_t = hc.reindex(targets["customer_id"]).set_axis(targets.index)
    Xt = _gbm_features(targets, h_t)
    for col in ("payment_method", "billing_channel", "segment"):
        cats = pd.api.types.union_categoricals([X[col], Xt[col]]).categories
        X[col] = pd.Categorical(X[col].astype(str), categories=cats)
        Xt[col] = pd.Categorical(Xt[col].astype(str), categories=cats)
    kw = {"categorical_features": "from_dtype", "random_state": seed, "max_iter": 200}
    clf = HistGradientBoostingClassifier(**kw).fit(X, y_late)
    p = clf.predict_proba(Xt)[:, 1]
    qs = [np.exp(HistGradientBoostingRegressor(loss="quantile", quantile=q, **kw).fit(X, y_logd).predict(Xt))
          for q in Q]
    age = targets["age_at_origin"].to_numpy(float)
    is_open = (targets["kind"] == "open").to_numpy()
    qs = [np.where(is_open, np.maximum(q, age + 1), q) for q in qs]
    p = np.where(is_open & (age > targets["terms_days"].to_numpy(float)), 1.0, p)
    return pd.DataFrame({"p_late": p, "q10": qs[0], "q50": qs[1], "q90": qs[2]}, index=targets.index)


# ------------------------------------------------------------------ scoring and the run

def score(targets: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """AUC and Brier on invoices whose lateness is known, MAE on paid ones, coverage of [q10, q90]."""
    ok = pred["p_late"].notna().to_numpy()
    t, p = targets[ok], pred[ok]
    known = t["late"].notna().to_numpy()
    paid = ~t["censored"].to_numpy()
    cov, n_cov = coverage(t["days"].to_numpy(float), p["q10"].to_numpy(float), p["q90"].to_numpy(float),
                          t["censored"].to_numpy())
    return {"n": int(ok.sum()), "n_late_known": int(known.sum()),
            "auc": auc(t["late"].to_numpy()[known] == 1, p["p_late"].to_numpy(float)[known]),
            "brier": brier(t["late"].to_numpy(float)[known], p["p_late"].to_numpy(float)[known]),
            "mae_days": mae(t["days"].to_numpy(float)[paid], p["q50"].to_numpy(float)[paid]),
            "coverage_80": cov, "n_coverage": n_cov}


def default_origins(ledger_end: pd.Timestamp, n: int = 4, horizon_months: int = 3) -> list[pd.Timestamp]:
    """``n`` quarter-ends before the last ``horizon_months`` months of data, latest last."""
    last = (ledger_end - pd.DateOffset(months=horizon_months)).to_period("Q").start_time - pd.Timedelta(days=1)
    return [(last - pd.DateOffset(months=3 * k)).to_period("M").end_time.normalize() for k in range(n)][::-1]


def run_backtest(clean: pd.DataFrame, origins, end=None, settings: FitSettings | None = None,
                 horizon_months: int = 3, progress: bool = True, seed: int = 0):
    """Fit at each origin, predict, score all models. Returns (metrics, calibration, predictions)."""
    from contextlib import nullcontext

    from .progress import step

    end = pd.Timestamp(end) if end is not None else clean["invoice_date"].max()
    metrics, calib, preds = [], [], []
    for origin in map(pd.Timestamp, origins):
        with step(f"backtest origin {origin.date()}: fit on data as of then, predict the next {horizon_months} "
                  "months") if progress else nullcontext():
            train, targets = targets_at_origin(clean, origin, end, horizon_months)
            fit = fit_delay(train, settings, allow_unconverged=True, progress=False)
            models = {"bayes": predict_bayes(fit, targets, seed), "history": predict_history(train, targets),
                      "gbm": predict_gbm(train, targets, seed)}
        for name, pr in models.items():
            m = score(targets, pr)
            metrics.append({"origin": str(origin.date()), "model": name, **m,
                            "converged": bool(fit.diagnostics.ok) if name == "bayes" else None})
            known = targets["late"].notna() & pr["p_late"].notna()
            cc = calibration_curve(targets.loc[known, "late"].to_numpy(), pr.loc[known, "p_late"].to_numpy(float))
            calib.append(cc.assign(origin=str(origin.date()), model=name))
            preds.append(pd.concat([targets[["invoice_id", "customer_id", "kind", "days", "censored", "late"]],
                                    pr.add_prefix("pred_")], axis=1).assign(origin=str(origin.date()), model=name))
    return pd.DataFrame(metrics), pd.concat(calib, ignore_index=True), pd.concat(preds, ignore_index=True)

