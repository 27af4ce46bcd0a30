"""AR KPIs with their conventions stated (docs/kpis.md has the worked examples).

All functions take a prepared ledger (paid dates known up to its as-of date)
and a period end; nothing looks past the ledger's as-of date.

- AR balance at date t: amount of invoices dated <= t not paid by t.
- DSO (standard, one-month period): AR at period end / credit sales in the
  period x days in the period.
- DSO (count-back): walk back month by month from the period end, using up the
  AR balance with each month's credit sales; full months count all their days,
  the last month the fraction of its sales needed.
- Best possible DSO: current (not past due) AR at period end / credit sales x days.
- Average days delinquent (ADD): DSO - best possible DSO.
- CEI (collection effectiveness index), the convention in most AR texts:
  (beginning AR + credit sales - ending total AR) /
  (beginning AR + credit sales - ending current AR) x 100.
  The other convention in circulation uses ending *past-due* AR in place of
  ending total AR in the numerator's subtraction; it is not used here.
- Aging buckets: open invoices at period end by days past due:
  current (not yet due), 1-30, 31-60, 61-90, 90+.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .ledger import as_of_of

__all__ = ["ar_balance", "aging", "month_kpis", "kpi_trend", "AGING_BUCKETS"]

AGING_BUCKETS = ["current", "1-30", "31-60", "61-90", "90+"]


def _check(ledger: pd.DataFrame, date: pd.Timestamp) -> None:
    if date > as_of_of(ledger):
        raise ValueError(f"date {date.date()} is after the ledger's as-of date {as_of_of(ledger).date()}")


def _open_at(ledger: pd.DataFrame, date) -> pd.DataFrame:
    date = pd.Timestamp(date)
    _check(ledger, date)
    m = (ledger["invoice_date"] <= date) & (ledger["paid_date"].isna() | (ledger["paid_date"] > date))
    return ledger[m]


def ar_balance(ledger: pd.DataFrame, date, current_only: bool = False) -> float:
    """AR balance at ``date`` (optionally only invoices not yet past due)."""
    op = _open_at(ledger, date)
    if current_only:
        op = op[op["due_date"] >= pd.Timestamp(date)]
    return float(op["amount"].sum())


def aging(ledger: pd.DataFrame, date) -> pd.DataFrame:
    """Open invoices at ``date`` by aging bucket: count and amount."""
    date = pd.Timestamp(date)
    op = _open_at(ledger, date)
    dpd = (date - op["due_date"]).dt.days
    bucket = pd.cut(dpd, [-np.inf, 0, 30, 60, 90, np.inf], labels=AGING_BUCKETS)
    g = op.groupby(bucket, observed=False)["amount"].agg(["size", "sum"]).reindex(AGING_BUCKETS).fillna(0)
    out = pd.DataFrame({"bucket": AGING_BUCKETS, "count": g["size"].astype(int).to_numpy(),
                        "amount": g["sum"].to_numpy()})
    total = out["amount"].sum()
    out["share_of_amount"] = out["amount"] / total if total else 0.0
    return out


def _sales(ledger: pd.DataFrame, start, end) -> float:
    m = (ledger["invoice_date"] >= start) & (ledger["invoice_date"] <= end)
    return float(ledger.loc[m, "amount"].sum())


def count_back_dso(ledger: pd.DataFrame, period_end, max_months: int = 24) -> float:
    """Count-back DSO at ``period_end`` (see module docstring)."""
    remaining = ar_balance(ledger, period_end)
    p = pd.Period(pd.Timestamp(period_end), freq="M")
    days = 0.0
    for _ in range(max_months):
        start, end = p.start_time.normalize(), p.end_time.normalize()
        sales = _sales(ledger, start, end)
        n_days = p.days_in_month
        if sales >= remaining:
            return days + (remaining / sales * n_days if sales > 0 else 0.0)
        remaining -= sales
        days += n_days
        p -= 1
    return days


def month_kpis(ledger: pd.DataFrame, month: str) -> dict:
    """KPIs for the calendar month ``YYYY-MM`` (which must end on or before the as-of date)."""
    p = pd.Period(month, freq="M")
    start, end = p.start_time.normalize(), p.end_time.normalize()
    _check(ledger, end)
    n_days = p.days_in_month
    sales = _sales(ledger, start, end)
    ar_end = ar_balance(ledger, end)
    ar_begin = ar_balance(ledger, start - pd.Timedelta(days=1))
    current_end = ar_balance(ledger, end, current_only=True)
    dso = ar_end / sales * n_days if sales else float("nan")
    best = current_end / sales * n_days if sales else float("nan")
    denom = ar_begin + sales - current_end
    cei = (ar_begin + sales - ar_end) / denom * 100 if denom else float("nan")
    paid_in_month = ledger[(ledger["paid_date"] >= start) & (ledger["paid_date"] <= end)]
    return {
        "month": month, "credit_sales": sales, "ar_begin": ar_begin, "ar_end": ar_end,
        "ar_current_end": current_end, "ar_past_due_end": ar_end - current_end,
        "dso": dso, "dso_count_back": count_back_dso(ledger, end), "best_possible_dso": best,
        "average_days_delinquent": dso - best, "cei": cei,
        "collected": float(paid_in_month["amount"].sum()),
        "share_paid_late": float((paid_in_month["paid_date"] > paid_in_month["due_date"]).mean())
        if len(paid_in_month) else float("nan"),
    }


def kpi_trend(ledger: pd.DataFrame, month: str, months: int = 12) -> pd.DataFrame:
    """:func:`month_kpis` for ``months`` months ending with ``month``, oldest first."""
    p = pd.Period(month, freq="M")
    first = pd.Period(ledger["invoice_date"].min(), freq="M")
    rows = [month_kpis(ledger, str(p - k)) for k in range(months - 1, -1, -1) if p - k >= first]
    return pd.DataFrame(rows)
