"""Incentives: does an early-payment discount (or shorter terms) pay off, segment by segment?

Built on the payment-delay model (:mod:`arresearch.models.delay`), which already
holds the two pieces an incentive analysis needs, partially pooled by segment:
the discount's shift of the log time to pay for invoices where it is not taken
(``beta_disc``), and the take-up probability (segment ``takeup_seg`` plus
customer deviations). Customer effects in that model absorb who a discount was
aimed at, so in a targeted segment the effect is learnt from the variation
*within* customers (before/after the programme, offered/not offered), which is
what "adjusting for customer history" means here.

The estimand per segment (issue #4): the average, over the segment's invoices in
the analysis window (from the first offer in the data to the as-of date), of
expected days to pay if offered minus if not offered. Negative is faster.

Money per 1,000 invoiced (reporting currency), per posterior draw::

    net = financing + collection cost avoided + bad debt avoided - discount cost
    financing          = cost_of_capital / 365 x days saved x amount
    collection avoided = cost_per_contact x contacts_per_30_days_late x (days late avoided) / 30
    bad debt avoided   = bad_debt_rate_per_30_days_over_90 x amount x (days beyond 90 past due avoided) / 30
    discount cost      = take-up x discount_pct x amount

all summed over the window's invoices and scaled to 1,000 of invoiced amount.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr
from scipy.stats import chi2

from .models.delay import DelayFit, coef_draws, draw_thin, linpred, takeup_draws

__all__ = ["naive_comparison", "targeting_check", "offer_evidence", "incentive_draws", "segment_incentives", "terms_incentives", "pilot_plan",
           "annualised_discount_cost", "RECOMMENDATIONS"]

RECOMMENDATIONS = {
    "offer": "keep offering the discount to the whole segment",
    "extend": "extend the discount from the customers who get it now to the whole segment",
    "stop": "stop offering the discount: it costs more than it brings",
    "test": "the evidence does not settle it: run a randomized pilot (see the pilot plan)",
}


def annualised_discount_cost(pct: float, discount_days: float, net_days: float) -> float:
    """Textbook annualised cost of not taking the discount: d/(1-d) x 365/(N-D) (0.372 for 2/10 net 30)."""
    if net_days <= discount_days:
        return float("nan")
    return pct / (1 - pct) * 365.0 / (net_days - discount_days)


def _window(ledger: pd.DataFrame) -> pd.Timestamp | None:
    """Start of the analysis window: the first invoice with a discount offer (None: no offers at all)."""
    off = ledger.loc[ledger["discount_offered"], "invoice_date"]
    return None if off.empty else off.min()


def naive_comparison(ledger: pd.DataFrame) -> pd.DataFrame:
    """Mean days to pay of paid invoices offered vs not offered, per segment, inside the window.

    This is the comparison a spreadsheet makes; where offers were aimed at slow
    payers it is biased (the offered invoices belong to different customers).
    """
    start = _window(ledger)
    rows = []
    for seg, g in ledger.groupby("segment", sort=True):
        g = g[~g["is_open"]]
        if start is not None:
            g = g[g["invoice_date"] >= start]
        on, off = g.loc[g["discount_offered"], "days_to_pay"], g.loc[~g["discount_offered"], "days_to_pay"]
        rows.append({"segment": seg, "n_offered_paid": len(on), "n_not_offered_paid": len(off),
                     "mean_days_offered": on.mean() if len(on) else np.nan,
                     "mean_days_not_offered": off.mean() if len(off) else np.nan})
    out = pd.DataFrame(rows)
    out["naive_effect_days"] = out["mean_days_offered"] - out["mean_days_not_offered"]
    return out


def targeting_check(ledger: pd.DataFrame) -> pd.DataFrame:
    """Mean days to pay *before* the first offer, of customers later offered vs never offered, per segment.

    Where the offer was aimed at slow payers the offered customers were already slower
    before any discount existed: the naive comparison mixes that difference into the effect.
    """
    start = _window(ledger)
    if start is None:
        return pd.DataFrame(columns=["segment", "offered_customers_days_before", "other_customers_days_before"])
    offered_c = set(ledger.loc[ledger["discount_offered"], "customer_id"])
    before = ledger[(ledger["invoice_date"] < start) & ~ledger["is_open"]]
    grp = before.assign(later_offered=before["customer_id"].isin(offered_c))
    t = grp.groupby(["segment", "later_offered"])["days_to_pay"].mean().unstack()
    t = t.reindex(columns=[True, False])
    t.columns = ["offered_customers_days_before", "other_customers_days_before"]
    return t.reset_index()


def offer_evidence(ledger: pd.DataFrame, randomized_segments=None, alpha: float = 0.01) -> pd.Series:
    """Which kind of evidence the discount estimate of each segment rests on.

    ``randomized`` when the segment is declared randomized (config
    ``incentives.randomized_segments``) or, when nothing is declared, when offers
    inside the window are spread evenly over the segment's customers (a
    chi-square test of equal offer shares does not reject at ``alpha``) -- the
    signature of an invoice-level randomized pilot. ``observational`` when offers
    were concentrated on chosen customers; ``none`` when the segment was never offered.
    """
    start = _window(ledger)
    out = {}
    for seg, g in ledger.groupby("segment", sort=True):
        if start is None or not g["discount_offered"].any():
            out[seg] = "none"
            continue
        if randomized_segments:
            out[seg] = "randomized" if seg in set(randomized_segments) else "observational"
            continue
        w = g[g["invoice_date"] >= start]
        t = w.groupby("customer_id")["discount_offered"].agg(["sum", "size"])
        t = t[t["size"] >= 3]
        p = t["sum"].sum() / t["size"].sum()
        if len(t) < 2 or p in (0, 1):
            out[seg] = "observational"
            continue
        e = t["size"] * p
        stat = (((t["sum"] - e) ** 2) / (e * (1 - p))).sum()
        out[seg] = "randomized" if chi2.sf(stat, len(t) - 1) > alpha else "observational"
    return pd.Series(out, name="evidence")


def _excess(mu, sig, k):
    """E[(T - k)+] for log T ~ Normal(mu, sig): the partial expectation of a log-normal."""
    return np.exp(mu + sig ** 2 / 2) * ndtr((mu + sig ** 2 - np.log(k)) / sig) - k * ndtr((mu - np.log(k)) / sig)


def daily_rates(assumptions) -> tuple[float, float]:
    """(value of one day of earlier cash per unit, collection cost per day late per invoice) from the assumptions."""
    return (assumptions["cost_of_capital"] / 365.0,
            assumptions["collection_cost_per_contact"] * assumptions["contacts_per_30_days_late"] / 30.0)


def _offer_terms(ledger: pd.DataFrame) -> tuple[float, float]:
    off = ledger[ledger["discount_offered"]]
    if off.empty:
        return 0.02, 10.0
    return float(off["discount_pct"].mode().iloc[0]), float(off["discount_days"].mode().iloc[0])


def _interval(a: np.ndarray, prob: float) -> tuple[float, float]:
    lo, hi = np.quantile(a, [(1 - prob) / 2, 1 - (1 - prob) / 2])
    return float(lo), float(hi)


def incentive_draws(fit: DelayFit, assumptions, max_draws: int = 500) -> dict[str, dict[str, np.ndarray]]:
    """Posterior draws, per segment, of effect_days, uptake and net value per 1,000 invoiced.

    Every invoice of the segment in the window is evaluated twice, offered and not
    offered, under each posterior draw (a disputed invoice cannot take the discount).
    """
    d = fit.data
    led = d.ledger
    start = _window(led)
    post = fit.posterior
    thin = draw_thin(post, max_draws)
    b, sig = coef_draws(post, d, thin)
    take = takeup_draws(post, d, thin)
    pct, ddays = _offer_terms(led)
    taken_days = led.loc[d.taken, "days_to_pay"]
    take_day = float(taken_days.mean()) if len(taken_days) else (ddays + 1) / 2
    coc, contact = daily_rates(assumptions)
    bad = assumptions["bad_debt_rate_per_30_days_over_90"] / 30.0
    j_disc = 1 + d.features.index("discount")
    out = {}
    in_window = (led["invoice_date"] >= start).to_numpy() if start is not None else np.ones(len(led), bool)
    for seg in d.segments:
        rows = np.flatnonzero(in_window & (led["segment"].to_numpy() == seg))
        if not len(rows):
            continue
        c = d.inv_cust[rows]
        X0 = d.X[rows].copy()
        X0[:, j_disc] = 0.0
        mu0 = linpred(b, c, X0)
        mu1 = mu0 + b[:, c, j_disc]
        sg = sig[:, c]
        terms = led["terms_days"].to_numpy(float)[rows]
        amount = led["amount"].to_numpy(float)[rows]
        can_take = ~led["disputed"].to_numpy(bool)[rows]
        p_take = (take[:, c] if take is not None else np.zeros_like(mu0)) * can_take[None]
        # expected days to pay (ceil adds about half a day to both arms, so it cancels)
        e0 = np.exp(mu0 + sg ** 2 / 2)
        e1 = p_take * take_day + (1 - p_take) * np.exp(mu1 + sg ** 2 / 2)
        late0, late1 = _excess(mu0, sg, terms), (1 - p_take) * _excess(mu1, sg, terms)
        bd0, bd1 = _excess(mu0, sg, terms + 90), (1 - p_take) * _excess(mu1, sg, terms + 90)
        per_1000 = 1000.0 / amount.sum()
        saved = e0 - e1
        net = (coc * (saved * amount).sum(1) + contact * (late0 - late1).sum(1) + bad * ((bd0 - bd1) * amount).sum(1)
               - pct * (p_take * amount).sum(1)) * per_1000
        out[seg] = {
            "effect_days": (e1 - e0).mean(1),
            "uptake": p_take[:, can_take].mean(1) if can_take.any() else p_take.mean(1),
            "net_value_per_1000": net,
            "financing_per_1000": coc * (saved * amount).sum(1) * per_1000,
            "discount_cost_per_1000": pct * (p_take * amount).sum(1) * per_1000,
            "sd_days": np.full(e0.shape[0], float(np.nanstd(led["days_to_pay"].to_numpy(float)[rows]))),
        }
    return out


def _recommend(evidence: str, p_pos: float, offer_share: float, confidence: float) -> tuple[str, float]:
    if evidence == "none":
        return "test", float("nan")
    if p_pos >= confidence:
        return ("offer" if offer_share >= 0.5 or evidence == "randomized" else "extend"), p_pos
    if p_pos <= 1 - confidence:
        return "stop", 1 - p_pos
    return "test", max(p_pos, 1 - p_pos)


def segment_incentives(fit: DelayFit, assumptions, randomized_segments=None, confidence: float = 0.9,
                       max_draws: int = 500, draws: dict | None = None) -> pd.DataFrame:
    """One row per segment: evidence, counts, effect on days to pay, take-up, net value, recommendation.

    A segment never offered the discount gets evidence ``none``, empty estimates and
    the recommendation ``test``: the model's population-level prediction for it is a
    guess, not an estimate, and is used only by :func:`pilot_plan`.
    """
    led = fit.data.ledger
    prob = assumptions["interval_prob"]
    draws = draws if draws is not None else incentive_draws(fit, assumptions, max_draws)
    evidence = offer_evidence(led, randomized_segments)
    naive = naive_comparison(led).set_index("segment")["naive_effect_days"]
    pct, ddays = _offer_terms(led)
    start = _window(led)
    rows = []
    for seg in fit.data.segments:
        g = led[led["segment"] == seg]
        w = g if start is None else g[g["invoice_date"] >= start]
        n_off = int(w["discount_offered"].sum())
        row = {"segment": seg, "evidence": evidence.get(seg, "none"), "n_offered": n_off,
               "n_not_offered": int(len(w) - n_off)}
        ev = row["evidence"]
        if ev != "none" and seg in draws:
            dr = draws[seg]
            for name in ("effect_days", "uptake", "net_value_per_1000"):
                lo, hi = _interval(dr[name], prob)
                key = {"net_value_per_1000": "net_value"}.get(name, name)
                row[name] = float(dr[name].mean())
                row[f"{key}_q05"], row[f"{key}_q95"] = lo, hi
            row["p_net_positive"] = float((dr["net_value_per_1000"] > 0).mean())
            row["financing_per_1000"] = float(dr["financing_per_1000"].mean())
            row["discount_cost_per_1000"] = float(dr["discount_cost_per_1000"].mean())
        else:
            row["p_net_positive"] = np.nan
        rec, p_rec = _recommend(ev, row["p_net_positive"], n_off / max(len(w), 1), confidence)
        row["recommendation"], row["p_recommendation"] = rec, p_rec
        row["naive_effect_days"] = float(naive.get(seg, np.nan))
        row["note"] = ("no discount was offered in this segment: nothing to estimate" if ev == "none"
                       else RECOMMENDATIONS[rec])
        rows.append(row)
    cols = ["segment", "evidence", "n_offered", "n_not_offered", "effect_days", "effect_days_q05",
            "effect_days_q95", "uptake", "uptake_q05", "uptake_q95", "net_value_per_1000", "net_value_q05",
            "net_value_q95", "p_net_positive", "recommendation", "p_recommendation", "naive_effect_days",
            "financing_per_1000", "discount_cost_per_1000", "note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["annualised_discount_cost"] = annualised_discount_cost(pct, ddays, 30.0)
    if not fit.diagnostics.ok:
        out["warning"] = "fit did not pass convergence checks"
    return out


def terms_incentives(fit: DelayFit, assumptions, target_terms: int = 30, max_draws: int = 1000) -> pd.DataFrame:
    """Effect of moving each segment's longer-term invoices (net > ``target_terms``) to net ``target_terms``.

    Uses the model's terms elasticity (``beta_terms``, learnt from invoices whose
    terms differ from the customer's usual ones, so observational evidence) on the
    segment's invoices of the last 12 months. Financing value per 1,000 invoiced.
    """
    d = fit.data
    led = d.ledger
    post = fit.posterior
    thin = draw_thin(post, max_draws)
    b, sig = coef_draws(post, d, thin)
    j = 1 + d.features.index("log_terms")
    recent = (led["invoice_date"] > d.as_of - pd.DateOffset(months=12)).to_numpy()
    coc = daily_rates(assumptions)[0]
    prob = assumptions["interval_prob"]
    rows = []
    for seg in d.segments:
        m = recent & (led["segment"].to_numpy() == seg)
        longer = m & (led["terms_days"].to_numpy(float) > target_terms)
        row = {"segment": seg, "n_invoices": int(m.sum()), "n_longer_terms": int(longer.sum()),
               "target_terms": target_terms, "evidence": "observational"}
        if longer.any():
            r = np.flatnonzero(longer)
            c = d.inv_cust[r]
            mu = linpred(b, c, d.X[r])
            terms = led["terms_days"].to_numpy(float)[r]
            mu_new = mu + b[:, c, j] * (np.log(target_terms / 30.0) - np.log(terms / 30.0))[None]
            e_old, e_new = np.exp(mu + sig[:, c] ** 2 / 2), np.exp(mu_new + sig[:, c] ** 2 / 2)
            eff = (e_new - e_old).mean(1)
            amount = led["amount"].to_numpy(float)[r]
            val = coc * ((e_old - e_new) * amount).sum(1) * 1000.0 / amount.sum()
            row["effect_days"] = float(eff.mean())
            row["effect_days_q05"], row["effect_days_q95"] = _interval(eff, prob)
            row["financing_per_1000"] = float(val.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def pilot_plan(draws: dict, seg_table: pd.DataFrame, sizes=(100, 200, 500, 1000, 2000, 5000, 10000,
               20000), target: float = 0.9, confidence: float = 0.9, n_sim: int = 2000, seed: int = 0) -> pd.DataFrame:
    """How many invoices a randomized pilot needs to settle the sign of the net value, by simulation.

    For each segment recommended ``test``: draw a true net value from the current
    posterior (for a never-offered segment, the model's population-level
    prediction), simulate the pilot's estimate with half the invoices offered
    (noise from the segment's spread of days to pay, mapped to money by the
    posterior slope of net value on days saved), update a normal approximation of
    the posterior, and call the question settled when P(net > 0) ends at or above
    ``confidence`` or at or below 1 - ``confidence``. The smallest size settling
    it with probability ``target`` is reported (empty when none in ``sizes`` does).
    """
    rng = np.random.default_rng(seed)
    rows = []
    from scipy.stats import norm

    for seg in seg_table.loc[seg_table["recommendation"] == "test", "segment"]:
        if seg not in draws:
            continue
        dr = draws[seg]
        v, e = dr["net_value_per_1000"], dr["effect_days"]
        m, sd = float(v.mean()), float(v.std())
        slope = float(np.polyfit(e, v, 1)[0]) if e.std() > 0 else 0.0
        sd_days = float(dr["sd_days"][0]) if np.isfinite(dr["sd_days"][0]) else 20.0
        truth = rng.choice(v, n_sim)
        settled_at = {}
        for n in sizes:
            se = abs(slope) * sd_days * np.sqrt(4.0 / n)
            obs = truth + rng.normal(0, se, n_sim) if se > 0 else truth
            prec = 1 / sd ** 2 + (1 / se ** 2 if se > 0 else 1e12)
            pm = (m / sd ** 2 + (obs / se ** 2 if se > 0 else obs * 1e12)) / prec
            p_pos = 1 - norm.cdf(0, pm, 1 / np.sqrt(prec))
            settled_at[n] = float(((p_pos >= confidence) | (p_pos <= 1 - confidence)).mean())
        ok = [n for n in sizes if settled_at[n] >= target]
        rows.append({"segment": seg, "p_net_positive_now": float((v > 0).mean()),
                     "invoices_needed": ok[0] if ok else np.nan,
                     **{f"p_settled_{n}": settled_at[n] for n in sizes}})
    return pd.DataFrame(rows)

