"""An ERP-style export maps onto the contract through a YAML file alone."""

from __future__ import annotations

import pandas as pd
import pytest

from arresearch.cli import main
from arresearch.config import DataError
from arresearch.validate import validate_files

MAPPING = """
date_format: "%m/%d/%Y"
columns:
  invoice_id: invoiceNumber
  customer_id: customerID
  invoice_date: DocDate
  due_date: DueDate
  amount: InvoiceAmount
  segment: countryCode
  paid_date: SettledDate
  disputed: Disputed
values:
  disputed: {"Yes": true, "No": false}
"""


@pytest.fixture
def erp_export(tmp_path):
    path = tmp_path / "erp.csv"
    path.write_text(
        "invoiceNumber,customerID,DocDate,DueDate,InvoiceAmount,countryCode,SettledDate,Disputed,Notes\n"
        "000123,0042,01/15/2025,02/14/2025,\"1,200.50\",US,02/20/2025,No,first\n"
        "000124,0042,02/01/2025,03/03/2025,300,US,,Yes,open\n"
        "000125,0099,13/01/2025,02/14/2025,50,CA,,No,bad date\n"
    )
    mapping = tmp_path / "erp.yaml"
    mapping.write_text(MAPPING)
    return path, mapping


def test_erp_export_maps_and_validates(erp_export):
    path, mapping = erp_export
    res = validate_files(path, mapping=mapping)
    clean = res.clean
    assert list(clean["invoice_id"]) == ["000123", "000124"]  # leading zeros kept
    assert list(clean["customer_id"]) == ["0042", "0042"]
    assert clean["invoice_date"].iloc[0] == pd.Timestamp("2025-01-15")  # US dates
    assert clean["amount"].iloc[0] == pytest.approx(1200.50)
    assert list(clean["disputed"]) == [False, True]  # Yes/No flags
    assert list(clean["segment"]) == ["US", "US"]
    assert "Notes" not in clean.columns  # unmapped columns ignored
    assert res.report["rows_quarantined"] == 1
    assert "unparseable invoice_date '13/01/2025'" in res.quarantine["reason"].iloc[0]


def test_mapped_column_missing_is_clear_error(erp_export, tmp_path, capsys):
    path, mapping = erp_export
    bad = tmp_path / "bad.yaml"
    bad.write_text(MAPPING.replace("SettledDate", "PaidOn"))
    with pytest.raises(DataError, match=r"names column\(s\) \['PaidOn'\] that the file lacks"):
        validate_files(path, mapping=bad)
    rc = main(["validate", "--invoices", str(path), "--mapping", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "invoiceNumber" in capsys.readouterr().err  # lists the columns that are there


def test_mapping_with_unknown_keys_is_rejected(tmp_path, erp_export):
    path, _ = erp_export
    m = tmp_path / "m.yaml"
    m.write_text("colums:\n  invoice_id: invoiceNumber\n")
    with pytest.raises(DataError, match="unknown mapping keys"):
        validate_files(path, mapping=m)
