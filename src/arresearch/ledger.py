"""The as-of cut and the derived columns every analysis uses.

The as-of date travels with the ledger (``ledger.attrs["as_of"]``): nothing
downstream looks at a date past it. Derived once, here:

- ``terms_days``: due_date - invoice_date
- ``is_open``: no payment on or before the as-of date
- ``days_to_pay``: paid_date - invoice_date (paid invoices)
- ``days_late``: paid_date - due_date (paid invoices; negative = early)
- ``age_days``: as_of - invoice_date (open invoices; the censoring time)
- ``days_past_due``: as_of - due_date for open invoices (negative = not yet due)
- ``discount_offered``: discount_pct > 0 and discount_days > 0
- ``month``: calendar month of the invoice date (1..12)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["prepare_ledger", "as_of_of", "latest_date", "latest_complete_month", "month_end"]


def month_end(month: str) -> pd.Timestamp:
    """Last day of a ``YYYY-MM`` month."""
    try:
        p = pd.Period(month, freq="M")
    except Exception:  # noqa: BLE001
        from .config import DataError

        raise DataError(f"month '{month}' is not in the form YYYY-MM") from None
    return p.to_timestamp(how="end").normalize()


def latest_date(ledger: pd.DataFrame) -> pd.Timestamp:
    """The latest invoice or payment date in the data: the default as-of date."""
    dates = [ledger["invoice_date"].max(), ledger["paid_date"].max()]
    return pd.Timestamp(max(d for d in dates if pd.notna(d)))


def latest_complete_month(ledger: pd.DataFrame) -> str:
    """The last calendar month that ends on or before the latest date in the data."""
    last = latest_date(ledger)
    p = pd.Period(last, freq="M")
    if last < p.to_timestamp(how="end").normalize():
        p = p - 1
    return str(p)


def as_of_of(ledger: pd.DataFrame) -> pd.Timestamp:
    """The as-of date a prepared ledger carries."""
    try:
        return pd.Timestamp(ledger.attrs["as_of"])
    except KeyError:
        raise ValueError("ledger has no as-of date; call prepare_ledger(clean, as_of) first") from None


def prepare_ledger(clean: pd.DataFrame, as_of) -> pd.DataFrame:
    """Cut a validated ledger at ``as_of`` and add the derived columns.

    Invoices dated after ``as_of`` are left out; payments, dispute openings and
    resolutions after it are treated as not yet happened.

    Parameters
    ----------
    clean : DataFrame
        Validated invoices (:func:`arresearch.validate.validate_invoices`).
    as_of : date-like

    Returns
    -------
    DataFrame
        A new frame with ``attrs["as_of"]`` set.
    """
    as_of = pd.Timestamp(as_of).normalize()
    df = clean[clean["invoice_date"] <= as_of].copy()
    df.loc[df["paid_date"] > as_of, "paid_date"] = pd.NaT
    df.loc[df["dispute_resolved_date"] > as_of, "dispute_resolved_date"] = pd.NaT
    later_dispute = df["dispute_opened_date"] > as_of
    df.loc[later_dispute, ["dispute_opened_date"]] = pd.NaT
    df.loc[later_dispute, "disputed"] = False
    df.loc[later_dispute, "dispute_reason"] = pd.NA

    df["terms_days"] = (df["due_date"] - df["invoice_date"]).dt.days.astype("int64")
    df["is_open"] = df["paid_date"].isna()
    df["days_to_pay"] = (df["paid_date"] - df["invoice_date"]).dt.days.astype("Float64")
    df["days_late"] = (df["paid_date"] - df["due_date"]).dt.days.astype("Float64")
    df["age_days"] = (as_of - df["invoice_date"]).dt.days.astype("int64")
    df["days_past_due"] = np.where(df["is_open"], (as_of - df["due_date"]).dt.days, np.nan)
    df["discount_offered"] = (df["discount_pct"] > 0) & (df["discount_days"] > 0)
    df["month"] = df["invoice_date"].dt.month.astype("int64")
    for c in ("payment_method", "billing_channel"):
        df[c] = df[c].fillna("unknown")
    df = df.sort_values(["invoice_date", "invoice_id"]).reset_index(drop=True)
    df.attrs["as_of"] = str(as_of.date())
    return df
