"""The AR data contract: which columns an invoice ledger has and what they mean.

See ``docs/data_contract.md`` for the prose version. This module is the one
place that names the columns; readers, validation and models import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Column", "INVOICE_COLUMNS", "CUSTOMER_COLUMNS", "required", "DATE_COLUMNS"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "string", "date", "number", "integer", "boolean"
    required: bool
    meaning: str


INVOICE_COLUMNS: tuple[Column, ...] = (
    Column("invoice_id", "string", True, "unique; read as text, leading zeros kept"),
    Column("customer_id", "string", True, "read as text"),
    Column("invoice_date", "date", True, "date the invoice was issued"),
    Column("due_date", "date", True, "on or after invoice_date"),
    Column("amount", "number", True, "> 0, in the reporting currency"),
    Column("paid_date", "date", False, "empty = still open"),
    Column("segment", "string", False, 'else from the customers file, else "all"'),
    Column("discount_pct", "number", False, "early-payment discount offered, in [0, 0.2]"),
    Column("discount_days", "integer", False, "days from invoice_date the discount applies"),
    Column("payment_method", "string", False, "check, ach, wire, card, eft, ..."),
    Column("billing_channel", "string", False, "paper, electronic, ..."),
    Column("disputed", "boolean", False, "default false"),
    Column("dispute_opened_date", "date", False, ""),
    Column("dispute_resolved_date", "date", False, "empty = unresolved"),
    Column("dispute_reason", "string", False, ""),
)

CUSTOMER_COLUMNS: tuple[Column, ...] = (
    Column("customer_id", "string", True, "read as text"),
    Column("segment", "string", False, "customer segment"),
    Column("customer_name", "string", False, ""),
    Column("region", "string", False, ""),
    Column("credit_limit", "number", False, ">= 0"),
)

DATE_COLUMNS = tuple(c.name for c in INVOICE_COLUMNS if c.kind == "date")
MAX_DISCOUNT_PCT = 0.2


def required(columns: tuple[Column, ...]) -> list[str]:
    """Names of the required columns."""
    return [c.name for c in columns if c.required]


def names(columns: tuple[Column, ...]) -> list[str]:
    """Names of all columns, in contract order."""
    return [c.name for c in columns]
