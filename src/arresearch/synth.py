"""A realistic synthetic AR ledger with known truth.

The generator draws customers within segments, their invoices over a number
of months, and when each invoice is paid. It covers every practice the
project studies: routinely late customers, seasonal payers, net 30/45/60
terms, a 2/10 net 30 discount (randomized in some segments, targeted at slow
customers in others), payment methods with different speeds, disputes that
hold payment until resolved, invoices open at the as-of date and a few
customers who stop paying. ``docs/synthetic_ledger.md`` defines every value
in ``truth.json``.

The payment-time model the data are drawn from, for an invoice of customer c
in segment s issued in month m (not disputed, discount not taken)::

    log T = log(terms) + mu_s + u_c + late_c + b_method + b_channel
            + season_s(m) + season_c(m) + delta_s * offered + eps,
    eps ~ Normal(0, sigma_s),  days_to_pay = ceil(T)

so the invoice is late (days_to_pay > terms) with probability
Phi((mu_s + u_c + late_c + b_method + b_channel + season) / sigma_s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import norm

__all__ = ["SEGMENTS", "METHOD_EFFECTS", "generate", "write_synthetic", "SynthLedger"]

METHODS = ("check", "ach", "eft", "wire", "card")
# log-scale effect on time to pay, against ACH
METHOD_EFFECTS = {"check": 0.15, "ach": 0.0, "eft": -0.03, "wire": -0.06, "card": -0.12}
CHANNEL_EFFECTS = {"paper": 0.06, "electronic": 0.0}
REASONS = ("pricing", "quantity", "quality", "missing_po", "duplicate_billing")
REASON_P = (0.35, 0.2, 0.2, 0.15, 0.10)
# median days from opening to resolution, per reason
REASON_MEDIAN_DAYS = {"pricing": 25.0, "quantity": 15.0, "quality": 35.0, "missing_po": 10.0,
                      "duplicate_billing": 8.0}
RESOLUTION_SIGMA = 0.6

SEGMENTS = {
    #                 share  mu     tau   sigma  terms p(30,45,60)   design        takeup delta  dispute  methods p(check,ach,eft,wire,card)
    "retail":        (0.26, -0.20, 0.18, 0.28, (0.80, 0.15, 0.05), "randomized", -0.4, -0.04, 0.025, (0.15, 0.35, 0.10, 0.05, 0.35)),
    "wholesale":     (0.22, -0.08, 0.22, 0.30, (0.50, 0.30, 0.20), "targeted", -0.9, -0.02, 0.045, (0.35, 0.40, 0.10, 0.10, 0.05)),
    "manufacturing": (0.20, -0.05, 0.20, 0.30, (0.30, 0.30, 0.40), "randomized", -1.4, -0.01, 0.060, (0.40, 0.30, 0.15, 0.12, 0.03)),
    "healthcare":    (0.17, 0.05, 0.22, 0.32, (0.35, 0.35, 0.30), "targeted", -0.2, -0.06, 0.080, (0.45, 0.35, 0.10, 0.05, 0.05)),
    "public_sector": (0.15, 0.12, 0.15, 0.26, (0.20, 0.30, 0.50), "none", 0.0, 0.0, 0.035, (0.55, 0.30, 0.10, 0.05, 0.00)),
}
SEGMENT_SEASON_AMPLITUDE = 0.05  # year-end slowdown, peaking in December
ROUTINELY_LATE_SHARE = 0.10
ROUTINELY_LATE_SHIFT = 0.45
SEASONAL_SHARE = 0.08
SEASONAL_AMPLITUDE = 0.40
STOPPER_SHARE = 0.01
DISCOUNT_PCT, DISCOUNT_DAYS = 0.02, 10
PILOT_START_MONTH = 6  # months after the start when the discount programme begins


@dataclass
class SynthLedger:
    """Full simulated history (payments past the as-of date included) and truth."""

    invoices: pd.DataFrame  # paid_date is the real one, possibly after as_of
    customers: pd.DataFrame
    truth: dict
    as_of: pd.Timestamp

    def observed(self, as_of=None) -> pd.DataFrame:
        """The ledger as an ERP would export it on ``as_of``: later invoices left out,
        later payments and dispute resolutions blank."""
        as_of = pd.Timestamp(as_of or self.as_of)
        df = self.invoices[self.invoices["invoice_date"] <= as_of].copy()
        df.loc[df["paid_date"] > as_of, "paid_date"] = pd.NaT
        df.loc[df["dispute_resolved_date"] > as_of, "dispute_resolved_date"] = pd.NaT
        late_open = df["dispute_opened_date"] > as_of
        df.loc[late_open, "disputed"] = False
        df.loc[late_open, ["dispute_opened_date"]] = pd.NaT
        df.loc[late_open, "dispute_reason"] = pd.NA
        return df.reset_index(drop=True)


def _season(month: np.ndarray, peak: np.ndarray | float, amplitude) -> np.ndarray:
    return amplitude * np.cos(2 * np.pi * (month - peak) / 12.0)


def generate(seed: int = 42, n_customers: int = 1000, months: int = 24, start: str = "2024-01-01",
             as_of: str | None = None, future_months: int = 12,
             invoices_per_month: float = 2.1) -> SynthLedger:
    """Simulate customers, invoices and payments.

    Parameters
    ----------
    seed : int
        Same seed, same ledger.
    n_customers, months : int
        Size of the ledger; invoices are issued over ``months`` months from ``start``.
    as_of : str, optional
        The export date; default the last day of the last month.
    future_months : int
        Payments are simulated this far past ``as_of`` so that tests can reveal the future.
    invoices_per_month : float
        Mean invoices per customer per month (customer rates vary around it).

    Returns
    -------
    SynthLedger
    """
    if n_customers < 10 or months < 3:
        raise ValueError("need at least 10 customers and 3 months")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start)
    end_ts = start_ts + pd.DateOffset(months=months) - pd.Timedelta(days=1)
    as_of_ts = pd.Timestamp(as_of) if as_of else end_ts
    seg_names = list(SEGMENTS)
    shares = np.array([SEGMENTS[s][0] for s in seg_names])
    C = n_customers

    # --- customers -------------------------------------------------------
    seg_idx = rng.choice(len(seg_names), size=C, p=shares / shares.sum())
    seg_idx[: len(seg_names)] = np.arange(len(seg_names))  # every segment present
    P = {k: np.array([SEGMENTS[seg_names[s]][i] for s in seg_idx], dtype=object)
         for i, k in enumerate(["share", "mu", "tau", "sigma", "terms_p", "design", "takeup", "delta",
                                "dispute", "methods_p"])}
    mu = P["mu"].astype(float)
    tau = P["tau"].astype(float)
    sigma = P["sigma"].astype(float)
    u = rng.normal(0, 1, C) * tau
    routinely = rng.random(C) < ROUTINELY_LATE_SHARE
    late_shift = np.where(routinely, ROUTINELY_LATE_SHIFT, 0.0)
    seasonal = rng.random(C) < SEASONAL_SHARE
    season_peak = rng.integers(1, 13, C)  # month in which a seasonal payer is slowest
    season_amp = np.where(seasonal, SEASONAL_AMPLITUDE, 0.0)
    usual_terms = np.array([rng.choice([30, 45, 60], p=np.asarray(p, float)) for p in P["terms_p"]])
    usual_method = np.array([rng.choice(METHODS, p=np.asarray(p, float)) for p in P["methods_p"]])
    electronic_p = np.where(usual_method == "check", 0.25, 0.85)
    usual_channel = np.where(rng.random(C) < electronic_p, "electronic", "paper")
    take_logit = P["takeup"].astype(float) + rng.normal(0, 0.6, C)
    p_take = expit(take_logit)
    baseline = mu + u + late_shift  # log-scale lateness before method/channel/season
    # targeting: in targeted segments the slow customers get the offer
    targeted = (P["design"] == "targeted") & (rng.random(C) < expit(4.0 * (baseline - mu) + 0.3 * late_shift / 0.45))
    rate = invoices_per_month * rng.lognormal(-0.18, 0.6, C)
    size = rng.lognormal(np.log(1800), 0.9, C)
    stopper = rng.random(C) < STOPPER_SHARE
    stop_date = as_of_ts - pd.to_timedelta(rng.integers(60, 270, C), unit="D")
    cust_ids = np.array([f"C{i:05d}" for i in range(1, C + 1)])

    # --- invoices --------------------------------------------------------
    n_days = (end_ts - start_ts).days + 1
    counts = rng.poisson(rate * months)
    cust_of = np.repeat(np.arange(C), counts)
    N = len(cust_of)
    inv_date = start_ts + pd.to_timedelta(rng.integers(0, n_days, N), unit="D")
    order = np.lexsort((cust_of, inv_date.values))
    cust_of, inv_date = cust_of[order], inv_date[order]
    month = inv_date.month.values
    months_since_start = (inv_date.year.values - start_ts.year) * 12 + inv_date.month.values - start_ts.month
    terms = np.where(rng.random(N) < 0.85, usual_terms[cust_of], rng.choice([30, 45, 60], N))
    method = np.where(rng.random(N) < 0.92, usual_method[cust_of], rng.choice(METHODS, N))
    channel = usual_channel[cust_of]
    design = P["design"][cust_of]
    programme = months_since_start >= PILOT_START_MONTH
    offered = programme & (
        ((design == "randomized") & (rng.random(N) < 0.5))
        | ((design == "targeted") & targeted[cust_of] & (rng.random(N) < 0.8))
    )
    s_of = seg_idx[cust_of]
    eta_base = (baseline[cust_of] + np.vectorize(METHOD_EFFECTS.get)(method)
                + np.vectorize(CHANNEL_EFFECTS.get)(channel)
                + _season(month, 12, SEGMENT_SEASON_AMPLITUDE)
                + _season(month, season_peak[cust_of], season_amp[cust_of]))
    eps = rng.normal(0, 1, N) * sigma[cust_of]
    delta = P["delta"].astype(float)[cust_of]
    t_not = terms * np.exp(eta_base + eps)  # time to pay if not offered
    t_off_notake = terms * np.exp(eta_base + delta + eps)
    take_u = rng.random(N)
    take_day = rng.integers(2, DISCOUNT_DAYS + 1, N).astype(float)
    took = offered & (take_u < p_take[cust_of])

    # disputes hold payment until resolved
    disp_rate = P["dispute"].astype(float)[cust_of] * np.where(channel == "paper", 1.4, 1.0)
    disputed = rng.random(N) < disp_rate
    reason = rng.choice(REASONS, N, p=REASON_P)
    opened_after = rng.integers(3, 21, N).astype(float)
    med = np.vectorize(REASON_MEDIAN_DAYS.get)(reason)
    resolve_days = med * np.exp(rng.normal(0, RESOLUTION_SIGMA, N))
    pay_after_res = rng.lognormal(np.log(6), 0.5, N)
    hold = opened_after + resolve_days + pay_after_res

    def outcome(t_raw):
        t = np.where(disputed, np.maximum(t_raw, hold), t_raw)
        return np.ceil(t)

    days_not = outcome(t_not)
    # a disputed invoice cannot take the discount
    # expected days if offered, integrating over the take-up decision (a disputed
    # invoice cannot take the discount); take_day is uniform on 2..DISCOUNT_DAYS
    mean_take_day = (DISCOUNT_DAYS + 2) / 2
    days_off_expected = np.where(disputed, outcome(t_off_notake),
                                 p_take[cust_of] * mean_take_day + (1 - p_take[cust_of]) * np.ceil(t_off_notake))
    took = took & ~disputed
    days = np.where(offered, np.where(took, take_day, outcome(t_off_notake)), days_not)
    paid = inv_date + pd.to_timedelta(days, unit="D")
    never = stopper[cust_of] & ((inv_date >= stop_date[cust_of]) | (paid >= stop_date[cust_of]))
    horizon = as_of_ts + pd.DateOffset(months=future_months)
    paid = pd.Series(paid).where(~never & (paid <= horizon))
    d_open = inv_date + pd.to_timedelta(opened_after, unit="D")
    d_res = inv_date + pd.to_timedelta(opened_after + resolve_days, unit="D")
    d_res = pd.Series(d_res).where(~never)

    amount = np.round(size[cust_of] * rng.lognormal(0, 0.5, N), 2)
    invoices = pd.DataFrame({
        "invoice_id": [f"INV{i:07d}" for i in range(1, N + 1)],
        "customer_id": cust_ids[cust_of],
        "invoice_date": inv_date.values.astype("datetime64[s]"),
        "due_date": (inv_date + pd.to_timedelta(terms, unit="D")).values.astype("datetime64[s]"),
        "amount": amount,
        "paid_date": paid.values.astype("datetime64[s]"),
        "segment": np.array(seg_names)[s_of],
        "discount_pct": np.where(offered, DISCOUNT_PCT, 0.0),
        "discount_days": np.where(offered, DISCOUNT_DAYS, 0),
        "payment_method": method,
        "billing_channel": channel,
        "disputed": disputed,
        "dispute_opened_date": pd.Series(d_open).where(disputed).values.astype("datetime64[s]"),
        "dispute_resolved_date": d_res.where(disputed).values.astype("datetime64[s]"),
        "dispute_reason": pd.Series(reason).where(disputed).astype("string").values,
    })
    invoices = invoices[invoices["invoice_date"] <= as_of_ts].reset_index(drop=True)
    keep = (pd.Series(inv_date) <= as_of_ts).values

    names = _customer_names(rng, C)
    customers = pd.DataFrame({
        "customer_id": cust_ids, "segment": np.array(seg_names)[seg_idx], "customer_name": names,
        "region": rng.choice(["north", "south", "east", "west"], C),
        "credit_limit": np.round(size * rate * 3, -2),
    })

    # --- truth -----------------------------------------------------------
    next_month = (as_of_ts + pd.DateOffset(months=1)).month
    eta_next = (mu + u + late_shift + np.vectorize(METHOD_EFFECTS.get)(usual_method)
                + np.vectorize(CHANNEL_EFFECTS.get)(usual_channel)
                + _season(next_month, 12, SEGMENT_SEASON_AMPLITUDE)
                + _season(next_month, season_peak, season_amp))
    p_late = norm.cdf(eta_next / sigma)
    n_inv = np.bincount(cust_of[keep], minlength=C)
    window = keep & programme
    seg_truth = {}
    effect_i = (days_off_expected - days_not)
    for j, s in enumerate(seg_names):
        m = window & (s_of == j)
        mo = m & offered
        seg_truth[s] = {
            "design": SEGMENTS[s][5],
            "mu": SEGMENTS[s][1], "tau": SEGMENTS[s][2], "sigma": SEGMENTS[s][3],
            "discount_effect_days": float(effect_i[m].mean()) if SEGMENTS[s][5] != "none" and m.any() else None,
            "uptake": float(p_take[cust_of][mo & ~disputed].mean()) if mo.any() else None,
            "dispute_rate": float(disp_rate[keep & (s_of == j)].mean()),
            "n_customers": int((seg_idx == j).sum()),
        }
    truth = {
        "seed": seed, "n_customers": C, "months": months, "start": str(start_ts.date()),
        "as_of": str(as_of_ts.date()), "n_invoices": int(keep.sum()),
        "discount": {"pct": DISCOUNT_PCT, "days": DISCOUNT_DAYS, "programme_start":
                     str((start_ts + pd.DateOffset(months=PILOT_START_MONTH)).date())},
        "p_late_definition": "P(days_to_pay > terms) for the customer's next invoice on its usual terms, "
                             "method and channel, no discount, no dispute, issued the month after as_of",
        "segments": seg_truth,
        "method_effects_log": METHOD_EFFECTS,
        "channel_effects_log": CHANNEL_EFFECTS,
        "segment_season_amplitude": SEGMENT_SEASON_AMPLITUDE,
        "reason_median_resolution_days": REASON_MEDIAN_DAYS,
        "reason_mean_resolution_days": {k: float(v * np.exp(RESOLUTION_SIGMA ** 2 / 2)) for k, v in REASON_MEDIAN_DAYS.items()},
        "customers": {
            cid: {"segment": seg_names[seg_idx[i]], "p_late": round(float(p_late[i]), 5),
                  "routinely_late": bool(routinely[i]), "seasonal": bool(seasonal[i]),
                  "season_peak_month": int(season_peak[i]) if seasonal[i] else None,
                  "stopped_paying": bool(stopper[i]), "targeted": bool(targeted[i]),
                  "usual_terms": int(usual_terms[i]), "usual_method": str(usual_method[i]),
                  "p_take": round(float(p_take[i]), 5), "log_effect": round(float(u[i] + late_shift[i]), 5),
                  "n_invoices": int(n_inv[i])}
            for i, cid in enumerate(cust_ids)
        },
    }
    return SynthLedger(invoices=invoices, customers=customers, truth=truth, as_of=as_of_ts)


_FIRST = ["Acme", "Northwind", "Blue Ridge", "Summit", "Harbor", "Pioneer", "Keystone", "Cedar", "Atlas",
          "Granite", "Riverside", "O'Brien & Sons", "Lakeside", "Evergreen", "Redwood", "Sterling"]
_LAST = ["Supply", "Foods", "Medical", "Logistics", "Tools", "Builders", "Labs", "Health", "Traders",
         "Works", "Partners", "<Holdings>"]


def _customer_names(rng, n):
    a = rng.choice(_FIRST, n)
    b = rng.choice(_LAST, n)
    return [f"{x} {y} {i % 97}" for i, (x, y) in enumerate(zip(a, b, strict=True))]


def _dirty_rows(df: pd.DataFrame, n: int, rng) -> pd.DataFrame:
    """Rows an ERP export really contains: each breaks one contract rule."""
    if n <= 0:
        return df
    out = df.copy()
    picks = rng.choice(len(out), size=n, replace=False)
    kinds = ["amount_zero", "due_before", "bad_date", "dup_identical", "dup_conflict", "paid_before"]
    extra = []
    for j, i in enumerate(picks):
        kind = kinds[j % len(kinds)]
        if kind == "amount_zero":
            out.loc[i, "amount"] = "0"
        elif kind == "due_before":
            out.loc[i, "due_date"] = str((pd.Timestamp(out.loc[i, "invoice_date"]) - pd.Timedelta(days=5)).date())
        elif kind == "bad_date":
            out.loc[i, "invoice_date"] = "31/02/2025"
        elif kind == "paid_before":
            if pd.notna(out.loc[i, "paid_date"]):
                out.loc[i, "paid_date"] = str((pd.Timestamp(out.loc[i, "invoice_date"]) - pd.Timedelta(days=3)).date())
        elif kind == "dup_identical":
            extra.append(out.loc[[i]].copy())
        elif kind == "dup_conflict":
            row = out.loc[[i]].copy()
            row["amount"] = str(float(row["amount"].iloc[0]) + 100.0)
            extra.append(row)
    if extra:
        out = pd.concat([out, *extra], ignore_index=True)
    return out


def write_synthetic(out_dir: str | Path, seed: int = 42, n_customers: int = 1000, months: int = 24,
                    as_of: str | None = None, dirty_rows: int = 30) -> dict[str, Path]:
    """Write ``invoices.csv``, ``customers.csv`` and ``truth.json`` into ``out_dir``.

    ``dirty_rows`` rows are broken on purpose (amount 0, due before invoice
    date, an impossible date, duplicates) so validation has something to show;
    their invoices keep their truth.
    """
    led = generate(seed=seed, n_customers=n_customers, months=months, as_of=as_of)
    obs = led.observed()
    text = obs.copy()
    for c in text.columns:
        if pd.api.types.is_datetime64_any_dtype(text[c].dtype):
            text[c] = text[c].dt.strftime("%Y-%m-%d")
    text = text.astype("string")
    text = _dirty_rows(text, dirty_rows, np.random.default_rng(seed + 1))
    led.truth["dirty_rows"] = dirty_rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"invoices": out / "invoices.csv", "customers": out / "customers.csv", "truth": out / "truth.json"}
    text.to_csv(paths["invoices"], index=False)
    led.customers.to_csv(paths["customers"], index=False)
    paths["truth"].write_text(json.dumps(led.truth, indent=1))
    return paths
