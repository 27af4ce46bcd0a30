"""Validate an export against the data contract.

Fatal problems raise :class:`~arresearch.config.DataError` with one readable
line. Row problems never stop the run: the row goes to quarantine with its
original values and a reason. Counts and amounts reconcile exactly::

    rows_in   = rows_accepted + rows_quarantined + rows_collapsed
    amount_in = amount_accepted + amount_quarantined + amount_collapsed

where amounts are summed over rows whose amount parses (an unparseable
amount counts as 0 and is counted in ``rows_amount_unparsed``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import contract
from .config import DataError
from .io import Mapping, apply_mapping, load_mapping, read_table

__all__ = ["ValidationResult", "validate_invoices", "validate_files", "write_validation"]

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


@dataclass
class ValidationResult:
    """Accepted rows (typed), quarantined rows (original text + reason) and counts."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    report: dict = field(default_factory=dict)

    def summary(self) -> str:
        r = self.report
        lines = [
            f"rows in {r['rows_in']:,}: accepted {r['rows_accepted']:,}, "
            f"quarantined {r['rows_quarantined']:,}, identical copies collapsed {r['rows_collapsed']:,}",
            f"amount in {r['amount_in']:,.2f}: accepted {r['amount_accepted']:,.2f}, "
            f"quarantined {r['amount_quarantined']:,.2f}, collapsed {r['amount_collapsed']:,.2f}",
        ]
        if r.get("rows_after_as_of"):
            lines.append(f"{r['rows_after_as_of']:,} accepted invoices are dated after the as-of date "
                         f"{r['as_of']} and are left out of the analysis")
        for reason, n in r["reasons"].items():
            lines.append(f"  quarantined: {n:,} x {reason}")
        return "\n".join(lines)


def _parse_dates(s: pd.Series, fmt: str | None) -> pd.Series:
    if fmt:
        out = pd.to_datetime(s, format=fmt, errors="coerce")
    else:
        out = pd.to_datetime(s, format="ISO8601", errors="coerce")
    return out.dt.normalize().astype("datetime64[s]")


def _parse_number(s: pd.Series) -> pd.Series:
    cleaned = s.str.replace(r"[,\s$€£]", "", regex=True)
    return pd.to_numeric(cleaned, errors="coerce").astype("float64")


def _parse_bool(s: pd.Series) -> pd.Series:
    low = s.str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[low.isin(_TRUE)] = True
    out[low.isin(_FALSE)] = False
    return out


class _Reasons:
    """Collects row reasons: one list of strings per row."""

    def __init__(self, index: pd.Index):
        self.reasons = pd.Series("", index=index, dtype=object)

    def add(self, mask: pd.Series, text: str | pd.Series) -> None:
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            return
        add = text[mask] if isinstance(text, pd.Series) else text
        cur = self.reasons[mask]
        self.reasons[mask] = np.where(cur == "", add, cur + "; " + add)

    @property
    def bad(self) -> pd.Series:
        return self.reasons != ""


def _check_required(df: pd.DataFrame, cols: list[str], path, what: str) -> None:
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise DataError(
            f"{path}: required {what} column(s) {absent} missing; the file has (after mapping): "
            f"{', '.join(df.columns) or 'no columns'}"
        )


def _typed_invoices(df: pd.DataFrame, fmt: str | None, reasons: _Reasons) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in ("invoice_id", "customer_id"):
        out[c] = df[c].astype("string")
        reasons.add(out[c].isna(), f"missing {c}")
    for c in contract.DATE_COLUMNS:
        if c in df.columns:
            parsed = _parse_dates(df[c], fmt)
            bad = df[c].notna() & parsed.isna()
            reasons.add(bad, "unparseable " + c + " '" + df[c].fillna("") + "'")
            out[c] = parsed
        else:
            out[c] = pd.Series(pd.NaT, index=df.index, dtype="datetime64[s]")
    for c in ("invoice_date", "due_date"):
        reasons.add(df[c].isna(), f"missing {c}")
    amount = _parse_number(df["amount"])
    reasons.add(df["amount"].isna(), "missing amount")
    reasons.add(df["amount"].notna() & amount.isna(), "unparseable amount '" + df["amount"].fillna("") + "'")
    reasons.add(amount <= 0, "amount <= 0")
    out["amount"] = amount

    out["segment"] = df["segment"].astype("string") if "segment" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    if "discount_pct" in df:
        pct = _parse_number(df["discount_pct"])
        reasons.add(df["discount_pct"].notna() & pct.isna(), "unparseable discount_pct '" + df["discount_pct"].fillna("") + "'")
        reasons.add((pct < 0) | (pct > contract.MAX_DISCOUNT_PCT), f"discount_pct outside [0, {contract.MAX_DISCOUNT_PCT}]")
        out["discount_pct"] = pct.fillna(0.0)
    else:
        out["discount_pct"] = 0.0
    if "discount_days" in df:
        dd = _parse_number(df["discount_days"])
        reasons.add(df["discount_days"].notna() & dd.isna(), "unparseable discount_days '" + df["discount_days"].fillna("") + "'")
        reasons.add((dd < 0) | (dd.notna() & (dd != dd.round())), "discount_days not a whole number >= 0")
        out["discount_days"] = dd.fillna(0).clip(lower=0).round().astype("int64")
    else:
        out["discount_days"] = 0
    for c in ("payment_method", "billing_channel", "dispute_reason"):
        out[c] = df[c].str.lower().astype("string") if c in df and c != "dispute_reason" else (
            df[c].astype("string") if c in df else pd.Series(pd.NA, index=df.index, dtype="string"))
    if "disputed" in df:
        flag = _parse_bool(df["disputed"])
        reasons.add(df["disputed"].notna() & flag.isna(), "unparseable disputed '" + df["disputed"].fillna("") + "'")
        out["disputed"] = flag.fillna(False).astype(bool)
    else:
        out["disputed"] = out["dispute_opened_date"].notna()
    out["disputed"] = out["disputed"] | out["dispute_opened_date"].notna()

    reasons.add(out["due_date"] < out["invoice_date"], "due_date before invoice_date")
    reasons.add(out["paid_date"] < out["invoice_date"], "paid_date before invoice_date")
    reasons.add(out["dispute_resolved_date"] < out["dispute_opened_date"], "dispute resolved before opened")
    reasons.add(out["dispute_resolved_date"].notna() & out["dispute_opened_date"].isna(),
                "dispute_resolved_date without dispute_opened_date")
    return out


def validate_invoices(raw: pd.DataFrame, *, path: str | Path = "invoices", mapping: Mapping | None = None,
                      customers: pd.DataFrame | None = None, as_of=None) -> ValidationResult:
    """Validate a raw invoice table (all text) against the contract.

    Parameters
    ----------
    raw : DataFrame
        As read by :func:`arresearch.io.read_table`; never modified.
    path : str or Path
        Named in messages.
    mapping : Mapping, optional
        Column and value mapping; identity by default.
    customers : DataFrame, optional
        A validated customers table (``customer_id``, ``segment``, ...).
    as_of : date-like, optional
        Accepted invoices dated after it are counted and left out of ``clean``.

    Returns
    -------
    ValidationResult
    """
    mapping = mapping or Mapping()
    df = apply_mapping(raw, mapping, path, contract.names(contract.INVOICE_COLUMNS))
    _check_required(df, contract.required(contract.INVOICE_COLUMNS), path, "invoice")
    df = df.reset_index(drop=True)
    raw_view = raw.reset_index(drop=True)
    reasons = _Reasons(df.index)
    typed = _typed_invoices(df, mapping.date_format, reasons)
    amount_parsed = typed["amount"].fillna(0.0)

    # duplicated invoice_id: identical copies collapse, conflicting copies are all quarantined
    collapsed = pd.Series(False, index=df.index)
    ids = typed["invoice_id"]
    dup_any = ids.notna() & ids.duplicated(keep=False)
    if dup_any.any():
        sub = df[dup_any].fillna("\x00")
        n_distinct = sub.groupby(ids[dup_any]).transform(lambda g: g.nunique()).max(axis=1)
        identical = n_distinct <= 1
        first = ~sub.duplicated(keep="first")
        collapsed.loc[sub.index[identical & ~first]] = True
        conflict_idx = sub.index[~identical]
        reasons.add(pd.Series(df.index.isin(conflict_idx), index=df.index),
                    "duplicated invoice_id with conflicting values")
    bad = reasons.bad & ~collapsed

    quarantine = raw_view[bad].copy()
    quarantine.insert(0, "source_row", quarantine.index + 2)  # 1-based with header line
    quarantine["reason"] = reasons.reasons[bad].astype("string")
    clean = typed[~bad & ~collapsed].copy()

    # segment: invoice, else customers file, else "all"
    if customers is not None and "segment" in customers:
        seg = clean["customer_id"].map(customers.set_index("customer_id")["segment"])
        clean["segment"] = clean["segment"].fillna(seg)
    clean["segment"] = clean["segment"].fillna("all").astype("string")

    rows_after = 0
    if as_of is not None:
        as_of_ts = pd.Timestamp(as_of)
        after = clean["invoice_date"] > as_of_ts
        rows_after = int(after.sum())
        clean = clean[~after]
    clean = clean.reset_index(drop=True)

    reason_counts: dict[str, int] = {}
    for text in quarantine["reason"]:
        for part in str(text).split("; "):
            key = part.split(" '")[0]
            reason_counts[key] = reason_counts.get(key, 0) + 1
    report = {
        "source": str(path),
        "mapping": mapping.source,
        "as_of": None if as_of is None else str(pd.Timestamp(as_of).date()),
        "rows_in": int(len(df)),
        "rows_accepted": int((~bad & ~collapsed).sum()),
        "rows_quarantined": int(bad.sum()),
        "rows_collapsed": int(collapsed.sum()),
        "rows_after_as_of": rows_after,
        "rows_amount_unparsed": int(typed["amount"].isna().sum()),
        "amount_in": round(float(amount_parsed.sum()), 2),
        "amount_accepted": round(float(amount_parsed[~bad & ~collapsed].sum()), 2),
        "amount_quarantined": round(float(amount_parsed[bad].sum()), 2),
        "amount_collapsed": round(float(amount_parsed[collapsed].sum()), 2),
        "reasons": dict(sorted(reason_counts.items(), key=lambda kv: -kv[1])),
    }
    return ValidationResult(clean=clean, quarantine=quarantine.reset_index(drop=True), report=report)


def validate_customers(raw: pd.DataFrame, *, path: str | Path = "customers",
                       mapping: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a customers table; returns (clean, quarantine)."""
    names = contract.names(contract.CUSTOMER_COLUMNS)
    cmap = Mapping(columns={k: v for k, v in (mapping or Mapping()).columns.items() if k in names},
                   values={k: v for k, v in (mapping or Mapping()).values.items() if k in names},
                   source=(mapping or Mapping()).source)
    df = apply_mapping(raw, cmap, path, names).reset_index(drop=True)
    _check_required(df, contract.required(contract.CUSTOMER_COLUMNS), path, "customer")
    reasons = _Reasons(df.index)
    reasons.add(df["customer_id"].isna(), "missing customer_id")
    if "credit_limit" in df:
        lim = _parse_number(df["credit_limit"])
        reasons.add(df["credit_limit"].notna() & lim.isna(), "unparseable credit_limit")
        reasons.add(lim < 0, "credit_limit < 0")
        df["credit_limit"] = lim
    dup = df["customer_id"].notna() & df["customer_id"].duplicated(keep=False)
    exact = df.fillna("\x00").duplicated(keep="first")
    reasons.add(dup & ~df.fillna("\x00").duplicated(keep=False), "duplicated customer_id with conflicting values")
    bad = reasons.bad
    q = raw.reset_index(drop=True)[bad].copy()
    q["reason"] = reasons.reasons[bad]
    clean = df[~bad & ~exact].reset_index(drop=True)
    for c in names:
        if c not in clean:
            clean[c] = pd.NA
    return clean[names], q


def validate_files(invoices: str | Path, customers: str | Path | None = None,
                   mapping: str | Path | Mapping | None = None, as_of=None) -> ValidationResult:
    """Read and validate invoice (and optional customer) files.

    The result's ``clean`` ledger carries the customers' columns (name, region,
    credit limit) where a customers file is given.
    """
    m = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    cust = None
    cust_q = None
    if customers is not None:
        cust, cust_q = validate_customers(read_table(customers, "customers"), path=customers, mapping=m)
    raw = read_table(invoices, "invoices")
    result = validate_invoices(raw, path=invoices, mapping=m, customers=cust, as_of=as_of)
    if cust is not None:
        extra = cust.drop(columns=["segment"]).set_index("customer_id")
        result.clean = result.clean.join(extra, on="customer_id")
        result.report["customers_in"] = int(len(cust) + len(cust_q))
        result.report["customers_quarantined"] = int(len(cust_q))
        result.customers = cust
    else:
        result.customers = None
    return result


def write_validation(result: ValidationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write clean.parquet, quarantine.csv and validation.json into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"clean": out / "clean.parquet", "quarantine": out / "quarantine.csv",
             "report": out / "validation.json"}
    result.clean.to_parquet(paths["clean"], index=False)
    from .outputs import write_csv

    write_csv(result.quarantine, paths["quarantine"])
    paths["report"].write_text(json.dumps(result.report, indent=2))
    return paths
