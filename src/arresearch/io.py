"""Read an export (CSV, Parquet or Excel) and map it onto the data contract.

Everything is read as text first so that IDs keep their leading zeros and a
bad value can be shown to the user exactly as it was in the file. The raw
file is only ever opened for reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from .config import DataError

__all__ = ["Mapping", "load_mapping", "read_table", "apply_mapping"]

_SUFFIXES = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel"}


@dataclass(frozen=True)
class Mapping:
    """How an export's columns and values map onto the contract.

    Attributes
    ----------
    columns : dict
        Contract name -> column name in the file.
    values : dict
        Contract name -> {value in file: contract value}.
    date_format : str or None
        A ``strftime`` format for every date column; ISO 8601 when None.
    source : str
        Where the mapping came from, for messages.
    """

    columns: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict] = field(default_factory=dict)
    date_format: str | None = None
    source: str = "identity"


def load_mapping(path: str | Path | None) -> Mapping:
    """Read a YAML mapping file; ``None`` gives the identity mapping.

    Raises
    ------
    DataError
        If the file is missing, is not YAML, or has keys other than
        ``columns``, ``values`` and ``date_format``.
    """
    if path is None:
        return Mapping()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mapping file not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: mapping is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: mapping must be a YAML mapping with 'columns', 'values', 'date_format'")
    unknown = set(doc) - {"columns", "values", "date_format"}
    if unknown:
        raise DataError(f"{path}: unknown mapping keys {sorted(unknown)}; allowed: columns, values, date_format")
    columns = doc.get("columns") or {}
    values = doc.get("values") or {}
    if not isinstance(columns, dict) or not isinstance(values, dict):
        raise DataError(f"{path}: 'columns' and 'values' must be mappings")
    values = {k: {str(a): b for a, b in (v or {}).items()} for k, v in values.items()}
    return Mapping(columns={str(k): str(v) for k, v in columns.items()}, values=values,
                   date_format=doc.get("date_format"), source=str(path))


def read_table(path: str | Path, what: str = "invoices") -> pd.DataFrame:
    """Read a CSV, Parquet or Excel file with every column as text.

    Empty cells become missing values (``pd.NA``). The file is never written.

    Raises
    ------
    DataError
        File missing, unknown format, unreadable, or empty.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use CSV, Parquet or Excel (.xlsx)")
    try:
        if kind == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                             skipinitialspace=True)
        elif kind == "parquet":
            df = pd.read_parquet(path)
            df = df.astype(object).where(df.notna(), None)
            df = df.map(lambda v: None if v is None else (v.date().isoformat() if isinstance(v, pd.Timestamp) and v == v.normalize() else str(v)))
            df = df.astype("string")
        else:
            df = pd.read_excel(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} file is empty") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a fatal, readable error
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DataError(f"{path}: cannot read {what} file ({msg})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise DataError(f"{path}: {what} file has a header but no rows")
    df = df.astype("string")
    for col in df.columns:
        df[col] = df[col].str.strip().replace("", pd.NA)
    return df


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, path: str | Path,
                  contract_names: list[str]) -> pd.DataFrame:
    """Rename mapped columns to contract names and apply value maps.

    Columns named in neither the mapping nor the contract are dropped.

    Raises
    ------
    DataError
        A mapped column is not in the file.
    """
    missing = [src for src in mapping.columns.values() if src not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: mapping {mapping.source} names column(s) {missing} that the file lacks; "
            f"the file has: {', '.join(map(str, raw.columns))}"
        )
    unknown = [k for k in mapping.columns if k not in contract_names]
    if unknown:
        raise DataError(f"{mapping.source}: {unknown} are not contract columns; known: {', '.join(contract_names)}")
    rename = {src: dst for dst, src in mapping.columns.items()}
    mapped_targets = set(mapping.columns)
    keep = {}
    for col in raw.columns:
        if col in rename:
            keep[col] = rename[col]
        elif col in contract_names and col not in mapped_targets:
            keep[col] = col
    out = raw[list(keep)].rename(columns=keep)
    for col, vmap in mapping.values.items():
        if col in out.columns:
            out[col] = out[col].map(lambda v, m=vmap: v if pd.isna(v) or v not in m else str(m[v]),
                                    na_action="ignore").astype("string")
    return out
