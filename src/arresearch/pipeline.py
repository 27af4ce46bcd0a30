"""Shared steps of the CLI, the notebooks and the report: load, cut, fit, write.

The notebooks and the CLI call these same functions, so a number in the
report is the number the CLI writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cache import cached_tables
from .config import DataError, load_assumptions
from .ledger import latest_date, prepare_ledger
from .models.sampling import FitSettings
from .outputs import write_csv
from .validate import ValidationResult, validate_files

__all__ = ["Loaded", "load", "notebook_inputs", "fit_delay_cached", "delay_tables", "fit_delay_outputs", "incentive_tables", "run_fit",
           "method_tables", "dispute_tables", "run_backtest_outputs", "MODELS"]


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


def notebook_inputs(invoices=None, customers=None, mapping=None, config=None, as_of=None, month=None,
                    out_dir=None):
    """What every analysis notebook starts with: the loaded ledger, the report month, the assumptions.

    ``invoices=None`` means the bundled demo ledger (written first if absent). Prints one line
    describing the data so that each notebook says what it ran on.
    """
    from .config import DEMO_DIR

    if invoices is None:
        if not (DEMO_DIR / "invoices.csv").exists():
            from .synth import write_synthetic

            write_synthetic(DEMO_DIR)
        invoices, customers = DEMO_DIR / "invoices.csv", customers or DEMO_DIR / "customers.csv"
    loaded = load(invoices, customers, mapping, as_of)
    month = month or str(pd.Period(loaded.as_of, freq="M"))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    led = loaded.ledger
    print(f"as-of {loaded.as_of.date()}, month {month}: {len(led):,} invoices, {led['customer_id'].nunique():,} "
          f"customers, {int(led['is_open'].sum()):,} open; {loaded.validation.report['rows_quarantined']:,} rows "
          "quarantined by validation")
    return loaded, month, load_assumptions(config)


def fit_delay_cached(loaded: Loaded, settings: FitSettings, allow_unconverged: bool = False, config=None,
                     progress: bool = True):
    """The payment-delay fit every analysis builds on (reused from the on-disk cache when it exists)."""
    from .models.delay import fit_delay

    a = load_assumptions(config)
    return fit_delay(loaded.ledger, settings, allow_unconverged=allow_unconverged, progress=progress,
                     stopped_paying_days=a["stopped_paying_days"])


def delay_tables(fit, loaded: Loaded, out_dir, config=None) -> dict[str, pd.DataFrame]:
    """Write the payment-delay tables, posterior and summary into ``out_dir``."""
    from .history import payment_trend
    from .models.delay import customer_risk, open_invoice_forecast, seasonal_payers

    a = load_assumptions(config)
    rl = a["routinely_late"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def compute():
        risk = customer_risk(fit, rl["late_threshold"], rl["late_confidence"], a["interval_prob"])
        if "customer_name" in loaded.ledger:
            names = loaded.ledger.drop_duplicates("customer_id").set_index("customer_id")["customer_name"]
            risk.insert(1, "customer_name", risk["customer_id"].map(names))
        return {"customer_risk": risk, "open_invoice_forecast": open_invoice_forecast(fit),
                "seasonal_payers": seasonal_payers(fit), "payment_trend": payment_trend(fit, prob=a["interval_prob"])}

    tables = cached_tables("delay", {"fit": fit.key, "assumptions": a.flat()}, compute)
    risk, fc, seas, trend = (tables[k] for k in ("customer_risk", "open_invoice_forecast", "seasonal_payers",
                                                  "payment_trend"))
    write_csv(trend, out / "payment_trend.csv", float_format="%.4f")
    write_csv(risk, out / "customer_risk.csv", float_format="%.4f")
    write_csv(fc, out / "open_invoice_forecast.csv", float_format="%.4f")
    write_csv(seas, out / "seasonal_payers.csv", float_format="%.4f")
    fit.idata.to_netcdf(out / "delay_posterior.nc", engine="h5netcdf")
    summary = fit.summary()
    summary["assumptions"] = a.flat()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return tables


def fit_delay_outputs(loaded: Loaded, out_dir, settings: FitSettings, allow_unconverged: bool = False,
                      config=None, progress: bool = True):
    """Fit the payment-delay model and write its tables, posterior and summary into ``out_dir``."""
    fit = fit_delay_cached(loaded, settings, allow_unconverged, config, progress)
    return fit, delay_tables(fit, loaded, out_dir, config)


def incentive_tables(fit, out_dir, config=None) -> dict[str, pd.DataFrame]:
    """Write segment_incentives.csv, terms_incentives.csv and pilot_plan.csv into ``out_dir``."""
    from .incentives import incentive_draws, pilot_plan, segment_incentives, terms_incentives

    a = load_assumptions(config)
    inc = a["incentives"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def compute():
        draws = incentive_draws(fit, a)
        seg = segment_incentives(fit, a, inc["randomized_segments"] or None, inc["decision_confidence"], draws=draws)
        return {"segment_incentives": seg, "terms_incentives": terms_incentives(fit, a, inc["shorter_terms_target_days"]),
                "pilot_plan": pilot_plan(draws, seg, confidence=inc["decision_confidence"])}

    tables = cached_tables("incentives", {"fit": fit.key, "assumptions": a.flat()}, compute)
    for name, t in tables.items():
        write_csv(t, out / f"{name}.csv", float_format="%.4f")
    return tables


def method_tables(fit, out_dir, config=None) -> dict[str, pd.DataFrame]:
    """Write payment_methods.csv, billing_channels.csv and switch_candidates.csv into ``out_dir``."""
    from .methods import channel_effects, method_effects, switch_candidates

    a = load_assumptions(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = cached_tables("methods", {"fit": fit.key, "assumptions": a.flat()}, lambda: {
        "payment_methods": method_effects(fit, a), "billing_channels": channel_effects(fit, a),
        "switch_candidates": switch_candidates(fit, a)})
    for name, t in tables.items():
        write_csv(t, out / f"{name}.csv", float_format="%.4f")
    return tables


def dispute_tables(delay_fit, loaded: Loaded, out_dir, settings: FitSettings, allow_unconverged: bool = False,
                   config=None, progress: bool = True):
    """Fit (or reuse) the dispute model; write disputes_by_segment.csv, disputes_by_reason.csv,
    dispute_customers.csv and open_disputes.csv into ``out_dir``. Returns (dispute fit, tables)."""
    from .disputes import (
        dispute_customers,
        dispute_effect,
        disputes_by_reason,
        disputes_by_segment,
        fit_disputes,
        open_disputes,
    )

    a = load_assumptions(config)
    prob = a["interval_prob"]
    fit = fit_disputes(loaded.ledger, settings, allow_unconverged=allow_unconverged, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = cached_tables("disputes", {"fit": fit.key, "delay_fit": delay_fit.key, "assumptions": a.flat()}, lambda: {
        "disputes_by_segment": disputes_by_segment(fit, prob, dispute_effect(delay_fit, prob)),
        "disputes_by_reason": disputes_by_reason(fit, prob), "dispute_customers": dispute_customers(fit, prob),
        "open_disputes": open_disputes(fit)})
    for name, t in tables.items():
        write_csv(t, out / f"{name}.csv", float_format="%.4f")
    return fit, tables


def run_backtest_outputs(invoices, customers, mapping, origins, out_dir, settings: FitSettings,
                         horizon_months: int = 3) -> pd.DataFrame:
    """``arresearch backtest``: validate once, run every origin, write the metrics, calibration and predictions."""
    from .backtest import default_origins, run_backtest

    loaded = load(invoices, customers, mapping)
    clean = loaded.validation.clean
    end = loaded.as_of
    origins = [pd.Timestamp(o) for o in origins] if origins else default_origins(end, 4, horizon_months)
    late = [o for o in origins if o >= end]
    if late:
        raise DataError(f"backtest origin {late[0].date()} is not before the end of the data ({end.date()})")
    print(f"  data end {end.date()}; origins {', '.join(str(o.date()) for o in origins)}; "
          f"horizon {horizon_months} months")
    metrics, calib, preds = run_backtest(clean, origins, end, settings, horizon_months)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(metrics, out / "backtest_metrics.csv", float_format="%.4f")
    write_csv(calib, out / "backtest_calibration.csv", float_format="%.4f")
    preds.to_parquet(out / "backtest_predictions.parquet", index=False)
    return metrics


MODELS = ("delay", "incentives", "methods", "disputes")


def run_fit(model: str, invoices, customers, mapping, as_of, out_dir, args, config=None) -> int:
    """``arresearch fit MODEL``: validate, fit (or reuse) the payment-delay model, write the model's tables."""
    from .progress import step

    if model not in MODELS:
        raise DataError(f"'arresearch fit {model}' is not implemented; available: {', '.join(MODELS)}")
    with step("validating and cutting the ledger"):
        loaded = load(invoices, customers, mapping, as_of)
    print(f"  as-of {loaded.as_of.date()}: {len(loaded.ledger):,} invoices, "
          f"{loaded.ledger['customer_id'].nunique():,} customers, {int(loaded.ledger['is_open'].sum()):,} open")
    settings = FitSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                           **({"seed": args.seed} if args.seed is not None else {}))
    with step("fitting the payment-delay model (cached fits are reused)"):
        fit = fit_delay_cached(loaded, settings, args.allow_unconverged, config)
    print(f"  {fit.diagnostics.message()}{' (from cache)' if fit.diagnostics.cached else ''}")
    if model == "delay":
        with step("writing the payment-delay tables"):
            tables = delay_tables(fit, loaded, out_dir, config)
        r = tables["customer_risk"]
        print(f"  {int(r['routinely_late'].sum())} routinely late customers, "
              f"{int(r['stopped_paying'].sum())} stopped paying; wrote {out_dir}/customer_risk.csv, "
              "open_invoice_forecast.csv, seasonal_payers.csv, delay_posterior.nc, summary.json")
    elif model == "incentives":
        a = load_assumptions(config)
        print(f"  assumptions ({a.source}): cost of capital {a['cost_of_capital']:.1%}/year, "
              f"{a['collection_cost_per_contact']:.2f} per collection contact, "
              f"bad debt {a['bad_debt_rate_per_30_days_over_90']:.1%} per 30 days beyond 90 past due")
        with step("estimating discount and terms effects per segment, with the money and a pilot plan"):
            tables = incentive_tables(fit, out_dir, config)
        for r in tables["segment_incentives"].itertuples():
            eff = "no offers" if pd.isna(r.effect_days) else f"{r.effect_days:+.1f} days ({r.evidence})"
            print(f"  {r.segment}: {eff} -> {r.recommendation}")
        print(f"  wrote {out_dir}/segment_incentives.csv, terms_incentives.csv, pilot_plan.csv")
    elif model == "methods":
        with step("estimating payment-method and billing-channel effects, costs and switch candidates"):
            tables = method_tables(fit, out_dir, config)
        pm_ = tables["payment_methods"]
        avg = pm_[pm_["evidence"] != "reference"].groupby("method")["effect_days"].mean().sort_values()
        print("  mean effect on days to pay against " + str(pm_["reference"].iloc[0]) + ": "
              + ", ".join(f"{m} {v:+.1f}" for m, v in avg.items()))
        print(f"  wrote {out_dir}/payment_methods.csv, billing_channels.csv, switch_candidates.csv")
    elif model == "disputes":
        with step("fitting the dispute model (rates, resolution times; cached fits are reused)"):
            dfit, tables = dispute_tables(fit, loaded, out_dir, settings, args.allow_unconverged, config)
        print(f"  {dfit.diagnostics.message()}")
        seg = tables["disputes_by_segment"]
        print("  dispute rate: " + ", ".join(f"{r.segment} {r.dispute_rate:.1%}" for r in seg.itertuples())
              + f"; {len(tables['open_disputes'])} open disputes")
        print(f"  wrote {out_dir}/disputes_by_segment.csv, disputes_by_reason.csv, dispute_customers.csv, "
              "open_disputes.csv")
    return 0
