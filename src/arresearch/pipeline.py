"""Shared steps of the CLI, the notebooks and the report: load, cut, fit, write.

The notebooks and the CLI call these same functions, so a number in the
report is the number the CLI writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import DataError, load_assumptions
from .ledger import latest_date, prepare_ledger
from .models.sampling import FitSettings
from .outputs import write_csv
from .validate import ValidationResult, validate_files

__all__ = ["Loaded", "load", "fit_delay_outputs", "run_fit"]


@dataclass
class Loaded:
    """A validated ledger cut at its as-of date, with the validation result."""

    ledger: pd.DataFrame
    validation: ValidationResult
    as_of: pd.Timestamp


def load(invoices, customers=None, mapping=None, as_of=None) -> Loaded:
    """Validate the files and cut the ledger at ``as_of`` (default: the latest date in the data)."""
    res = validate_files(invoices, customers, mapping, as_of=as_of)
    if res.clean.empty:
        raise DataError(f"{invoices}: no valid invoices on or before the as-of date {as_of}")
    as_of = latest_date(res.clean) if as_of is None else pd.Timestamp(as_of)
    return Loaded(ledger=prepare_ledger(res.clean, as_of), validation=res, as_of=as_of)


def fit_delay_outputs(loaded: Loaded, out_dir, settings: FitSettings, allow_unconverged: bool = False,
                      config=None, progress: bool = True):
    """Fit the payment-delay model and write its tables, posterior and summary into ``out_dir``."""
    from .models.delay import customer_risk, fit_delay, open_invoice_forecast, seasonal_payers

    a = load_assumptions(config)
    rl = a["routinely_late"]
    fit = fit_delay(loaded.ledger, settings, allow_unconverged=allow_unconverged, progress=progress,
                    stopped_paying_days=a["stopped_paying_days"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    risk = customer_risk(fit, rl["late_threshold"], rl["late_confidence"], a["interval_prob"])
    if "customer_name" in loaded.ledger:
        names = loaded.ledger.drop_duplicates("customer_id").set_index("customer_id")["customer_name"]
        risk.insert(1, "customer_name", risk["customer_id"].map(names))
    fc = open_invoice_forecast(fit)
    seas = seasonal_payers(fit)
    write_csv(risk, out / "customer_risk.csv", float_format="%.4f")
    write_csv(fc, out / "open_invoice_forecast.csv", float_format="%.4f")
    write_csv(seas, out / "seasonal_payers.csv", float_format="%.4f")
    fit.idata.to_netcdf(out / "delay_posterior.nc", engine="h5netcdf")
    summary = fit.summary()
    summary["assumptions"] = a.flat()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return fit, {"customer_risk": risk, "open_invoice_forecast": fc, "seasonal_payers": seas}


def run_fit(model: str, invoices, customers, mapping, as_of, out_dir, args, config=None) -> int:
    from .progress import step

    if model != "delay":
        raise DataError(f"'arresearch fit {model}' is not implemented yet; available: delay")
    with step("validating and cutting the ledger"):
        loaded = load(invoices, customers, mapping, as_of)
    print(f"  as-of {loaded.as_of.date()}: {len(loaded.ledger):,} invoices, "
          f"{loaded.ledger['customer_id'].nunique():,} customers, {int(loaded.ledger['is_open'].sum()):,} open")
    settings = FitSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                           **({"seed": args.seed} if args.seed is not None else {}))
    with step("fitting the payment-delay model (cached fits are reused)"):
        fit, tables = fit_delay_outputs(loaded, out_dir, settings, args.allow_unconverged, config)
    print(f"  {fit.diagnostics.message()}{' (from cache)' if fit.diagnostics.cached else ''}")
    r = tables["customer_risk"]
    print(f"  {int(r['routinely_late'].sum())} routinely late customers, "
          f"{int(r['stopped_paying'].sum())} stopped paying; wrote {out_dir}/customer_risk.csv, "
          "open_invoice_forecast.csv, seasonal_payers.csv, delay_posterior.nc, summary.json")
    return 0
