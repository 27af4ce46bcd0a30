"""The ``arresearch`` command line.

Every command prints what it does and how long each step took; a bad input
ends with one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DEMO_DIR, DataError
from .pipeline import MODELS
from .progress import step

__all__ = ["main"]


def _data_args(p: argparse.ArgumentParser, as_of_required: bool = False) -> None:
    p.add_argument("--invoices", type=Path, default=None,
                   help=f"invoice export (CSV, Parquet, Excel); default the demo ledger in {DEMO_DIR}")
    p.add_argument("--customers", type=Path, default=None, help="optional customers file")
    p.add_argument("--mapping", type=Path, default=None, help="YAML mapping of the export onto the contract")
    p.add_argument("--as-of", dest="as_of", default=None, required=as_of_required,
                   help="as-of date (YYYY-MM-DD); default the latest date in the data")


def _sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draws", type=int, default=1500)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--allow-unconverged", action="store_true",
                   help="write results even when convergence checks fail (they carry a warning)")
    p.add_argument("--no-cache", action="store_true", help="refit even when a cached fit exists")


def resolve_inputs(args) -> tuple[Path, Path | None]:
    """Default to the demo ledger (generating it if absent) when no invoices are given."""
    if args.invoices is not None:
        return args.invoices, args.customers
    inv = DEMO_DIR / "invoices.csv"
    if not inv.exists():
        from .synth import write_synthetic

        with step(f"no --invoices given and no demo ledger yet: writing it to {DEMO_DIR}"):
            write_synthetic(DEMO_DIR)
    cust = args.customers if args.customers is not None else DEMO_DIR / "customers.csv"
    return inv, cust


def cmd_synth(args) -> int:
    from .synth import write_synthetic

    with step(f"simulating {args.customers:,} customers over {args.months} months (seed {args.seed})"):
        paths = write_synthetic(args.out, seed=args.seed, n_customers=args.customers, months=args.months,
                                as_of=args.as_of, dirty_rows=args.dirty_rows)
    for k, p in paths.items():
        print(f"  wrote {k}: {p}")
    return 0


def cmd_validate(args) -> int:
    from .validate import validate_files, write_validation

    inv, cust = resolve_inputs(args)
    with step(f"validating {inv}"):
        res = validate_files(inv, cust, args.mapping, as_of=args.as_of)
        paths = write_validation(res, args.out)
    print(res.summary())
    for k, p in paths.items():
        print(f"  wrote {k}: {p}")
    return 0


def cmd_fit(args) -> int:
    from . import pipeline
    from .models import ConvergenceError

    inv, cust = resolve_inputs(args)
    try:
        return pipeline.run_fit(args.model, inv, cust, args.mapping, args.as_of, args.out, args,
                                config=getattr(args, "config", None))
    except ConvergenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def cmd_report(args) -> int:
    from .report import build_report

    inv, cust = resolve_inputs(args)
    build_report(month=args.month, invoices=inv, customers=cust, mapping=args.mapping, config=args.config,
                 out_root=args.out, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed,
                 allow_unconverged=args.allow_unconverged)
    return 0


def cmd_backtest(args) -> int:
    from .models.sampling import FitSettings
    from .pipeline import run_backtest_outputs

    inv, cust = resolve_inputs(args)
    origins = [o.strip() for o in args.origins.split(",") if o.strip()] if args.origins else None
    settings = FitSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                           **({"seed": args.seed} if args.seed is not None else {}))
    m = run_backtest_outputs(inv, cust, args.mapping, origins, args.out, settings, args.horizon)
    cols = ["origin", "model", "n", "auc", "brier", "mae_days", "coverage_80"]
    print(m[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    mean = m.groupby("model")[["auc", "brier", "mae_days", "coverage_80"]].mean()
    print("mean over origins:\n" + mean.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"  wrote {args.out}/backtest_metrics.csv, backtest_calibration.csv, backtest_predictions.parquet")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="arresearch", description="Accounts-receivable research tools.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic ledger with known truth")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--as-of", dest="as_of", default=None)
    p.add_argument("--dirty-rows", dest="dirty_rows", type=int, default=30,
                   help="rows broken on purpose so validation has something to show (0 for none)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("validate", help="validate an export against the data contract")
    _data_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("fit", help="fit a model and write its tables")
    p.add_argument("model", choices=list(MODELS),
                   help="delay: who pays late and when open invoices will be paid; incentives: discounts and "
                        "terms; methods: payment methods and billing channels; disputes: rates and resolution")
    _data_args(p)
    p.add_argument("--config", type=Path, default=None, help="YAML business assumptions")
    p.add_argument("--out", type=Path, required=True)
    _sampler_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("backtest", help="fit at past origins and score predictions against what happened")
    _data_args(p)
    p.add_argument("--origins", default=None,
                   help="comma-separated dates (default: four quarter-ends before the last 3 months of data)")
    p.add_argument("--horizon", type=int, default=3, help="months of new invoices to predict after each origin")
    p.add_argument("--out", type=Path, default=Path("reports/backtest"))
    _sampler_args(p)
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("report", help="build the monthly HTML report")
    _data_args(p)
    p.add_argument("--month", default=None, help="YYYY-MM; default the latest complete month in the data")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="reports folder (default reports/)")
    _sampler_args(p)
    p.set_defaults(func=cmd_report)

    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
