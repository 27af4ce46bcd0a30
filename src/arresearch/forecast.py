"""Cash collections forecast from the payment-delay model's posterior predictive."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["collections_forecast"]


def collections_forecast(fit, weeks: int = 13, interval: float = 0.80, seed: int = 0) -> pd.DataFrame:
    """Expected collections per week for the next ``weeks`` weeks from the open invoices.

    Each posterior predictive draw gives every open invoice a payment day; the
    amounts are summed per week within the draw, so the interval reflects the
    joint uncertainty (parameters and timing), not a point estimate spread around.

    Returns
    -------
    DataFrame
        week (1..weeks), week_start, week_end, expected, lower, upper (``interval`` ETI).
    """
    from .models.delay import open_invoice_day_samples

    open_inv, days = open_invoice_day_samples(fit, seed=seed)
    amount = open_inv["amount"].to_numpy(float)
    week = np.ceil(days / 7.0).astype(int)  # day 1-7 -> week 1
    S = days.shape[0]
    totals = np.zeros((S, weeks))
    for w in range(1, weeks + 1):
        totals[:, w - 1] = ((week == w) * amount[None]).sum(1)
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    as_of = fit.data.as_of
    starts = [as_of + pd.Timedelta(days=7 * (w - 1) + 1) for w in range(1, weeks + 1)]
    return pd.DataFrame({
        "week": np.arange(1, weeks + 1), "week_start": starts,
        "week_end": [s + pd.Timedelta(days=6) for s in starts],
        "expected": totals.mean(0), "lower": np.quantile(totals, lo, axis=0),
        "upper": np.quantile(totals, hi, axis=0),
    })
