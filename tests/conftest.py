"""Shared fixtures: small seeded ledgers and hand-made bad inputs."""

from __future__ import annotations

import pandas as pd
import pytest

GOOD = {
    "invoice_id": ["0001", "0002", "0003"],
    "customer_id": ["007", "007", "010"],
    "invoice_date": ["2025-01-01", "2025-01-05", "2025-02-01"],
    "due_date": ["2025-01-31", "2025-02-04", "2025-03-03"],
    "amount": ["100.00", "250.50", "80"],
    "paid_date": ["2025-01-30", "", "2025-03-10"],
}


@pytest.fixture
def write_csv(tmp_path):
    """Write a dict of columns (text) as CSV and return its path."""

    def _write(cols: dict, name: str = "invoices.csv"):
        path = tmp_path / name
        pd.DataFrame(cols).to_csv(path, index=False)
        return path

    return _write


@pytest.fixture
def good_cols():
    return {k: list(v) for k, v in GOOD.items()}
