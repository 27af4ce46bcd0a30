"""Payment options: what each payment method and billing channel does to payment speed, and what it costs.

Built on the payment-delay model, whose method and channel effects are per segment,
partially pooled around a population effect per level. The effect of a method in a
segment is the average, over the segment's invoices of the last 12 months, of the
expected days to pay had every one been paid by that method minus by the reference
method (ACH when present), other covariates as they were.

Most customers pay by habit: a customer who pays by check pays nearly every invoice by
check. The model's customer effects then separate "check payers are slow people" from
"checks are slow" only through the invoices paid by a customer's *other* methods; the
``evidence`` column says which it is for each level, by the same rule the model uses
(``DelayData.within_share``, the share of the level's variance that lies within customers):
``within customers`` when the level varies within customers enough for the model to give it
a Mundlak term (its effect is then learnt from the customers who use several levels), else
``between customers (habit)`` (an effect shared by all segments, from comparing customers).

Cost per 1,000 invoiced: ``fees[method].pct x amount + fees[method].flat`` per invoice
(config, with documented defaults), summed over the segment's invoices and scaled.
Net value per 1,000 of a method against the reference: financing of the days saved at
the cost of capital, plus collection contacts avoided, minus the extra processing cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .incentives import _excess, _interval, daily_rates
from .models.delay import DelayFit, coef_draws, draw_thin

__all__ = ["level_effects", "method_effects", "channel_effects", "switch_candidates", "fee_per_invoice"]


def fee_per_invoice(method: str, amount: np.ndarray, fees: dict) -> np.ndarray:
    """Processing cost of paying ``amount`` by ``method`` (unknown methods use ``fees['other']``)."""
    f = fees.get(str(method), fees.get("other", {"pct": 0.0, "flat": 0.0}))
    return f.get("pct", 0.0) * amount + f.get("flat", 0.0)


def _recent(d, months: int) -> np.ndarray:
    return (d.ledger["invoice_date"] > d.as_of - pd.DateOffset(months=months)).to_numpy()


def _set_level(X: np.ndarray, cols: list[int], j: int | None) -> np.ndarray:
    """Design rows with the one-hot block ``cols`` set to level ``j`` (None: the reference level)."""
    X = X.copy()
    X[:, cols] = 0.0
    if j is not None:
        X[:, cols[j]] = 1.0
    return X


def _within(d, kind: str, level: str) -> bool:
    """Does the level vary within customers enough for the model's Mundlak term (the model's own rule)?"""
    from .models.delay import MUNDLAK_MIN_WITHIN

    return bool(d.within_share[d.features.index(f"{kind}[{level}]")] >= MUNDLAK_MIN_WITHIN)


def level_effects(fit: DelayFit, assumptions, kind: str = "method", months: int = 12,
                  max_draws: int = 500) -> pd.DataFrame:
    """Effect on days to pay, cost and net value per 1,000 invoiced of each level of ``kind`` per segment.

    ``kind`` is ``"method"`` (payment_method) or ``"channel"`` (billing_channel).
    """
    d = fit.data
    led = d.ledger
    col = {"method": "payment_method", "channel": "billing_channel"}[kind]
    levels = d.methods if kind == "method" else d.channels
    ref = d.method_ref if kind == "method" else d.channel_ref
    cols = [1 + d.features.index(f"{kind}[{lv}]") for lv in levels]
    post = fit.posterior
    thin = draw_thin(post, max_draws)
    b, sig = coef_draws(post, d, thin)
    coc, contact = daily_rates(assumptions)
    fees = assumptions["fees"]
    prob = assumptions["interval_prob"]
    recent = _recent(d, months)
    rows = []
    for seg in d.segments:
        r = np.flatnonzero(recent & (led["segment"].to_numpy() == seg))
        if not len(r):
            continue
        c = d.inv_cust[r]
        amount = led["amount"].to_numpy(float)[r]
        terms = led["terms_days"].to_numpy(float)[r]
        bc, sg = b[:, c, :], sig[:, c]

        def expect(j, bc=bc, rows=r, sg=sg, terms=terms):
            mu = np.einsum("sik,ik->si", bc, _set_level(d.X[rows], cols, j))
            return np.exp(mu + sg ** 2 / 2), _excess(mu, sg, terms)

        e_ref, late_ref = expect(None)
        per = 1000.0 / amount.sum()
        cost_ref = fee_per_invoice(ref, amount, fees).sum() * per if kind == "method" else 0.0
        for j, lv in [(None, ref)] + list(enumerate(levels)):
            e, late = (e_ref, late_ref) if j is None else expect(j)
            eff = (e - e_ref).mean(1)
            cost = fee_per_invoice(lv, amount, fees).sum() * per if kind == "method" else 0.0
            val = (coc * ((e_ref - e) * amount).sum(1) + contact * (late_ref - late).sum(1)) * per - (cost - cost_ref)
            lo, hi = _interval(eff, prob)
            vlo, vhi = _interval(val, prob)
            seg_n = int((led[col].to_numpy()[r] == lv).sum())
            rows.append({
                "segment": seg, kind: lv, "reference": ref, "n_invoices": seg_n,
                "effect_days": float(eff.mean()), "effect_days_q05": lo, "effect_days_q95": hi,
                "cost_per_1000": cost, "net_value_per_1000": float(val.mean()), "net_value_q05": vlo,
                "net_value_q95": vhi, "p_net_positive": float((val > 0).mean()) if j is not None else np.nan,
                "evidence": "reference" if j is None else
                ("within customers" if _within(d, kind, lv) else "between customers (habit)"),
            })
    out = pd.DataFrame(rows)
    if kind == "channel":
        out = out.drop(columns=["cost_per_1000"])
    if not fit.diagnostics.ok:
        out["warning"] = "fit did not pass convergence checks"
    return out


def method_effects(fit: DelayFit, assumptions, **kw) -> pd.DataFrame:
    """``payment_methods.csv``: per segment and method, effect against the reference, cost, net value."""
    return level_effects(fit, assumptions, "method", **kw)


def channel_effects(fit: DelayFit, assumptions, **kw) -> pd.DataFrame:
    """``billing_channels.csv``: per segment and billing channel, effect against the reference."""
    return level_effects(fit, assumptions, "channel", **kw)


def switch_candidates(fit: DelayFit, assumptions, targets=("ach", "card"), months: int = 12,
                      max_draws: int = 400) -> pd.DataFrame:
    """Customers for whom moving their invoices to another method is worth most, per year.

    For each customer and each target method it does not usually use: its invoices of
    the last ``months`` months re-evaluated with the target method under every posterior
    draw (the customer's own level, terms, season and segment's method effects), valued as
    financing of the days saved plus collection contacts avoided minus the change in
    processing fees. One row per customer: the best target by posterior mean.
    """
    d = fit.data
    led = d.ledger
    levels = d.methods
    cols = [1 + d.features.index(f"method[{lv}]") for lv in levels]
    targets = [t for t in targets if t == d.method_ref or t in levels]
    post = fit.posterior
    thin = draw_thin(post, max_draws)
    b, sig = coef_draws(post, d, thin)
    coc, contact = daily_rates(assumptions)
    fees = assumptions["fees"]
    prob = assumptions["interval_prob"]
    recent = _recent(d, months)
    r = np.flatnonzero(recent)
    c = d.inv_cust[r]
    amount = led["amount"].to_numpy(float)[r]
    terms = led["terms_days"].to_numpy(float)[r]
    method = led["payment_method"].to_numpy()[r]
    bc, sg = b[:, c, :], sig[:, c]
    mu_now = np.einsum("sik,ik->si", bc, d.X[r])
    e_now, late_now = np.exp(mu_now + sg ** 2 / 2), _excess(mu_now, sg, terms)
    fee_now = np.array([fee_per_invoice(m, a, fees) for m, a in zip(method, amount, strict=True)])
    usual = led.iloc[r].groupby("customer_id")["payment_method"].agg(lambda s: s.mode().iloc[0])
    C = len(d.customers)
    best = {}
    for t in targets:
        j = None if t == d.method_ref else levels.index(t)
        mu_t = np.einsum("sik,ik->si", bc, _set_level(d.X[r], cols, j))
        e_t, late_t = np.exp(mu_t + sg ** 2 / 2), _excess(mu_t, sg, terms)
        inv_val = coc * (e_now - e_t) * amount + contact * (late_now - late_t) - (fee_per_invoice(t, amount, fees)
                                                                                 - fee_now)[None]
        saved = e_now - e_t
        val = np.zeros((inv_val.shape[0], C))
        days = np.zeros((inv_val.shape[0], C))
        for k in range(inv_val.shape[0]):
            val[k] = np.bincount(c, weights=inv_val[k], minlength=C)
            days[k] = np.bincount(c, weights=saved[k], minlength=C)
        n = np.bincount(c, minlength=C)
        for i in np.flatnonzero(n):
            cid = d.customers[i]
            if usual.get(cid) == t:
                continue
            v = val[:, i]
            if cid not in best or v.mean() > best[cid]["annual_net_value"]:
                lo, hi = _interval(v, prob)
                best[cid] = {"customer_id": cid, "segment": d.segments[d.cust_seg[i]], "usual_method": usual.get(cid),
                             "switch_to": t, "invoices_12m": int(n[i]), "amount_12m": float(amount[c == i].sum()),
                             "days_saved_per_invoice": float(days[:, i].mean() / n[i]),
                             "annual_net_value": float(v.mean()), "annual_net_value_q05": lo,
                             "annual_net_value_q95": hi, "p_positive": float((v > 0).mean())}
    out = pd.DataFrame(list(best.values()))
    if out.empty:
        return out
    return out.sort_values("annual_net_value", ascending=False).reset_index(drop=True)
