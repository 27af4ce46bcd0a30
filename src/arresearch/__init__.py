"""arresearch: data-driven accounts-receivable research.

The package turns an invoice ledger into estimates with honest uncertainty:
who pays late, what incentives and payment methods do to payment speed, how
disputes slow payment, and when open invoices will be paid.

Data flows one way: :mod:`arresearch.io` reads and maps an export,
:mod:`arresearch.validate` enforces the data contract, :mod:`arresearch.ledger`
applies the as-of cut and derives columns, :mod:`arresearch.models` fit, the
estimand functions turn posteriors into tables, :mod:`arresearch.outputs`
writes them and :mod:`arresearch.report` assembles the monthly report.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
