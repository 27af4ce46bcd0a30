"""Writers for output tables: CSV and Excel, with one guard against formula injection.

A cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return is
run as a formula by spreadsheet programs. Text cells that do are prefixed with
a single quote (OWASP's advice) so a customer name cannot become a formula.
Numbers are left alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["guard_formulas", "write_csv", "write_xlsx"]

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _guard_cell(v):
    if isinstance(v, str) and v.startswith(_DANGEROUS):
        return "'" + v
    return v


def guard_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy in which text cells cannot be read as spreadsheet formulas."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(_guard_cell, na_action="ignore")
    return out


def _dates_to_iso(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col].dtype):
            out[col] = out[col].dt.strftime("%Y-%m-%d").astype("string")
    return out


def write_csv(df: pd.DataFrame, path: str | Path, float_format: str | None = None) -> Path:
    """Write a table as CSV with ISO dates and the formula guard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    guard_formulas(_dates_to_iso(df)).to_csv(path, index=False, float_format=float_format)
    return path


def write_xlsx(sheets: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Write several tables into one workbook (one sheet each) with xlsxwriter.

    Strings are written as strings (never formulas or URLs), columns are sized
    to their content and the header row is frozen.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="xlsxwriter",
                        engine_kwargs={"options": {"strings_to_formulas": False,
                                                   "strings_to_urls": False}}) as xw:
        for name, df in sheets.items():
            frame = guard_formulas(_dates_to_iso(df))
            frame.to_excel(xw, sheet_name=name[:31], index=False)
            ws = xw.sheets[name[:31]]
            ws.freeze_panes(1, 0)
            for i, col in enumerate(frame.columns):
                width = max([len(str(col))] + [len(str(v)) for v in frame[col].head(200)])
                ws.set_column(i, i, min(width + 2, 60))
    return path
