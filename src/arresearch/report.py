"""The monthly report: validate, fit (or reuse), run the notebooks, render, assemble.

Everything is built in a temporary folder beside ``reports/YYYY-MM`` and moved
into place at the end, so a failing step leaves the previous report untouched.
Every string that comes from the data is escaped with :func:`html.escape`; the
pages load nothing from the internet (figures are embedded as data URIs and
remote script tags that nbconvert templates carry are removed).
"""

from __future__ import annotations

import html
import json
import platform
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pandas as pd

from . import kpi, plots
from .config import NOTEBOOKS_DIR, REPORTS_DIR, DataError, load_assumptions
from .ledger import latest_complete_month, month_end
from .models.sampling import FitSettings
from .outputs import write_csv, write_xlsx
from .pipeline import dispute_tables, fit_delay_outputs, incentive_tables, load, method_tables
from .progress import step

__all__ = ["build_report", "NOTEBOOKS", "strip_remote_scripts"]

NOTEBOOKS = ["01_overview.ipynb", "02_payment_delay.ipynb", "03_incentives.ipynb", "04_payment_methods.ipynb",
             "05_disputes.ipynb"]
NOTEBOOK_WORKERS = 2  # notebooks run side by side, one kernel each (the machines have 2 cores)
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://.*?</script>|<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>",
                            re.S | re.I)
_REMOTE_LINK = re.compile(r"<link\b[^>]*href=[\"']https?://[^>]*>", re.I)


class StepError(RuntimeError):
    """A report step failed; the message names the step."""


def strip_remote_scripts(page: str) -> str:
    """Remove script and stylesheet tags that would fetch anything from the internet."""
    page = _REMOTE_SCRIPT.sub("", page)
    return _REMOTE_LINK.sub("", page)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("arresearch", "pymc", "nutpie", "arviz", "pandas", "numpy", "papermill", "nbconvert"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _run_notebook(name: str, out_dir: Path, params: dict) -> Path:
    import papermill as pm

    src = NOTEBOOKS_DIR / name
    dst = out_dir / "notebooks" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, progress_bar=False, cwd=str(NOTEBOOKS_DIR),
                            kernel_name="python3")
    except pm.PapermillExecutionError as exc:
        raise StepError(f"notebook {name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}") from None
    return dst


def _run_and_render(name: str, out_dir: Path, params: dict) -> dict[str, Path]:
    t0 = time.perf_counter()
    executed = _run_notebook(name, out_dir, params)
    t1 = time.perf_counter()
    pages = _render(executed, out_dir)
    print(f"  {name}: executed in {t1 - t0:.0f}s, rendered in {time.perf_counter() - t1:.0f}s", flush=True)
    return pages


def _render(nb_path: Path, out_dir: Path) -> dict[str, Path]:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(nb_path, as_version=4)
    paths = {}
    for kind, exclude in (("business", True), ("code", False)):
        exp = HTMLExporter(template_name="lab", exclude_input=exclude, exclude_input_prompt=exclude,
                           exclude_output_prompt=exclude, embed_images=True)
        body, _ = exp.from_notebook_node(nb)
        suffix = "" if kind == "business" else ".code"
        p = out_dir / f"{nb_path.stem}{suffix}.html"
        p.write_text(strip_remote_scripts(body))
        paths[kind] = p
    return paths


def _table(df: pd.DataFrame, floats: str = "{:,.2f}") -> str:
    """An HTML table with every cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for v in r:
            if isinstance(v, float):
                s = "" if pd.isna(v) else floats.format(v)
            elif isinstance(v, pd.Timestamp):
                s = "" if pd.isna(v) else str(v.date())
            else:
                s = "" if v is None or (not isinstance(v, str | bool) and pd.isna(v)) else str(v)
            cells.append(f"<td>{html.escape(s)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}.warn{background:#fff3cd;border:1px solid #e0b000;padding:.7em}.kpi{display:inline-block;margin:0 1.5em 1em 0}
.kpi b{font-size:1.6em;display:block}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def worklist(risk: pd.DataFrame, forecast: pd.DataFrame) -> pd.DataFrame:
    """Who to call first: customers with open past-due amounts, ranked by expected exposure.

    Priority score = open past-due amount x P(next invoice late), stopped payers first.
    """
    nxt = forecast.groupby("customer_id").agg(expected_payment_date=("paid_date_q50", "min"),
                                              open_invoices=("invoice_id", "size"))
    w = risk[risk["open_amount"] > 0].join(nxt, on="customer_id")
    w["priority_score"] = w["open_past_due_amount"] * w["p_late"]
    w["why"] = [
        "stopped paying" if s else ("routinely late" if rl else ("past due" if pdm > 0 else "open, not yet due"))
        for s, rl, pdm in zip(w["stopped_paying"], w["routinely_late"], w["open_past_due_amount"], strict=True)
    ]
    w = w.sort_values(["stopped_paying", "priority_score"], ascending=False)
    cols = ["customer_id"] + (["customer_name"] if "customer_name" in w else []) + [
        "segment", "why", "open_amount", "open_past_due_amount", "open_invoices", "p_late", "expected_payment_date",
        "priority_score"]
    return w[cols].reset_index(drop=True)


def build_report(month=None, invoices=None, customers=None, mapping=None, config=None, out_root=None,
                 draws=1500, tune=500, chains=4, seed=None, allow_unconverged=False) -> Path:
    """Build ``reports/YYYY-MM/`` (see the module docstring). Returns the report folder."""
    t_start = time.perf_counter()
    out_root = Path(out_root or REPORTS_DIR)
    assumptions = load_assumptions(config)
    if month is None:
        with step("finding the latest complete month in the data"):
            month = latest_complete_month(load(invoices, customers, mapping).ledger)
    as_of = month_end(month)
    final = out_root / month
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{month}-", dir=out_root))
    data_dir = tmp / "data"
    data_dir.mkdir()
    current = "start"
    try:
        current = "validate"
        with step(f"validating the data as of {as_of.date()}"):
            loaded = load(invoices, customers, mapping, as_of)
            write_csv(loaded.validation.quarantine, data_dir / "quarantine.csv")
            (data_dir / "validation.json").write_text(json.dumps(loaded.validation.report, indent=2))
        current = "fit payment-delay model"
        settings = FitSettings(draws=draws, tune=tune, chains=chains, **({"seed": seed} if seed is not None else {}))
        with step("fitting the payment-delay model (or reusing the cached fit)"):
            fit, tables = fit_delay_outputs(loaded, data_dir, settings, allow_unconverged=True, config=config,
                                            progress=False)
            print(f"  {fit.diagnostics.message()}{' (from cache)' if fit.diagnostics.cached else ''}")
            if not fit.diagnostics.ok and not allow_unconverged:
                raise StepError(f"payment-delay fit {fit.diagnostics.message()}; pass --allow-unconverged "
                                "to publish it with a warning")
        current = "incentives"
        with step("estimating discount effects and recommendations per segment"):
            inc = incentive_tables(fit, data_dir, config)
        current = "payment methods"
        with step("estimating payment-method effects, costs and switch candidates"):
            meth = method_tables(fit, data_dir, config)
        current = "disputes"
        with step("fitting the dispute model (or reusing the cached fit)"):
            dfit, disp = dispute_tables(fit, loaded, data_dir, settings, allow_unconverged=True, config=config,
                                        progress=False)
            print(f"  {dfit.diagnostics.message()}{' (from cache)' if dfit.diagnostics.cached else ''}")
            if not dfit.diagnostics.ok and not allow_unconverged:
                raise StepError(f"dispute fit {dfit.diagnostics.message()}; pass --allow-unconverged "
                                "to publish it with a warning")
        current = "KPIs and forecast"
        with step("computing KPIs, aging and the 13-week collections forecast"):
            from .forecast import collections_forecast

            trend = kpi.kpi_trend(loaded.ledger, month, 12)
            ag = kpi.aging(loaded.ledger, as_of)
            fc = collections_forecast(fit)
            write_csv(trend, data_dir / "kpi_trend.csv", float_format="%.4f")
            write_csv(ag, data_dir / "aging.csv", float_format="%.4f")
            write_csv(fc, data_dir / "collections_forecast.csv", float_format="%.2f")
        current = "worklist"
        with step("writing the collector worklist (worklist.xlsx)"):
            wl = worklist(tables["customer_risk"], tables["open_invoice_forecast"])
            write_xlsx({"call first": wl, "open invoices": tables["open_invoice_forecast"]}, tmp / "worklist.xlsx")
            write_csv(wl, data_dir / "worklist.csv", float_format="%.2f")
        params = {"invoices": str(Path(invoices).resolve()), "customers": None if customers is None else
                  str(Path(customers).resolve()), "mapping": None if mapping is None else str(Path(mapping).resolve()),
                  "config": None if config is None else str(Path(config).resolve()), "as_of": str(as_of.date()),
                  "month": month, "draws": draws, "tune": tune, "chains": chains, "seed": settings.seed,
                  "out_dir": str((tmp / "notebooks" / "data").resolve())}
        pages = {}
        with step(f"running {len(NOTEBOOKS)} notebooks with papermill and rendering each without and with code, "
                  f"{NOTEBOOK_WORKERS} at a time"):
            with ThreadPoolExecutor(max_workers=NOTEBOOK_WORKERS) as pool:  # each runs in its own kernel process
                futures = {name: pool.submit(_run_and_render, name, tmp, params) for name in NOTEBOOKS}
                for name in NOTEBOOKS:
                    current = f"notebook {name}"
                    pages[name] = futures[name].result()
        current = "index.html"
        with step("writing index.html"):
            # the notebooks ran in the staging folder; the page names where their data will be once published
            shown = {**params, "out_dir": str((final / "notebooks" / "data").resolve())}
            _write_index(tmp, month, loaded, fit, {**tables, **inc, **meth, **disp}, trend, ag, fc, wl, pages,
                         assumptions, shown, dfit.diagnostics, time.perf_counter() - t_start)
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - name the step, keep the previous report
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"report step '{current}' failed: {exc}; the previous report for {month} is untouched") from None
    if final.exists():
        old = out_root / f".{month}-old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    print(f"[arresearch] report ready: {final / 'index.html'} ({time.perf_counter() - t_start:.0f}s in all)")
    return final


def _interval(r, a: str, lo: str, hi: str, fmt: str) -> str:
    """``value [lo, hi]`` from the columns ``a``, ``lo``, ``hi`` of row ``r``; empty where the value is missing."""
    return "" if pd.isna(r[a]) else f"{fmt.format(r[a])} [{fmt.format(r[lo])}, {fmt.format(r[hi])}]"


def _discount_section(seg: pd.DataFrame, assumptions) -> str:
    """The executive summary's discount table: one line per segment, with its evidence and probability."""
    rows = pd.DataFrame({
        "segment": seg["segment"], "recommendation": seg["recommendation"].str.upper(),
        "P(net value > 0)": seg["p_net_positive"].round(2), "evidence": seg["evidence"],
        "effect on days to pay [90%]": [_interval(r, "effect_days", "effect_days_q05", "effect_days_q95", "{:+.1f}")
                                        for _, r in seg.iterrows()],
        "take-up [90%]": [_interval(r, "uptake", "uptake_q05", "uptake_q95", "{:.0%}") for _, r in seg.iterrows()],
        "net value per 1,000 invoiced [90%]": [_interval(r, "net_value_per_1000", "net_value_q05", "net_value_q95", "{:+.2f}")
                                               for _, r in seg.iterrows()],
    })
    cost = seg["annualised_discount_cost"].iloc[0] if len(seg) else float("nan")
    return (f"{_table(rows)}<p>Net value = financing at a cost of capital of {assumptions['cost_of_capital']:.1%} "
            f"+ collection and bad-debt costs avoided − discount paid. The discount's textbook annualised cost is "
            f"{cost:.1%}. TEST means the evidence does not settle it (or the segment was never offered the "
            "discount): see the pilot plan in the incentives analysis.</p>")


def _methods_section(pm_: pd.DataFrame, sc: pd.DataFrame) -> str:
    """Effect and value of each method against the reference, averaged over segments; top switch candidates."""
    nonref = pm_[pm_["evidence"] != "reference"]
    if nonref.empty:
        return "<p>The data hold a single payment method: nothing to compare.</p>"
    agg = nonref.groupby("method").apply(lambda g: pd.Series({
        "invoices (12 months)": int(g["n_invoices"].sum()),
        "effect on days to pay (segment range)": f"{g['effect_days'].min():+.1f} to {g['effect_days'].max():+.1f}",
        "cost per 1,000": g["cost_per_1000"].mean(),
        "net value per 1,000 (segment range)": f"{g['net_value_per_1000'].min():+.2f} to "
                                               f"{g['net_value_per_1000'].max():+.2f}",
        "evidence": g["evidence"].iloc[0]}), include_groups=False).reset_index()
    top = sc.head(5)[["customer_id", "segment", "usual_method", "switch_to", "annual_net_value", "p_positive"]] \
        if len(sc) else pd.DataFrame()
    ref = str(pm_["reference"].iloc[0])
    return (f"<p>Against {html.escape(ref)}; details per segment in the payment-methods analysis.</p>{_table(agg)}"
            f"<p>Customers where a switch of payment method is worth most per year:</p>{_table(top)}")


def _aging_display(ag: pd.DataFrame) -> pd.DataFrame:
    """The aging table as a manager reads it: the share of the amount as a percentage."""
    out = ag.copy()
    if "share_of_amount" in out:
        out["share_of_amount"] = [f"{v:.1%}" for v in out["share_of_amount"]]
    return out


def _disputes_section(seg: pd.DataFrame, od: pd.DataFrame) -> str:
    """Dispute rate per segment with its interval, open disputes, and what a dispute does to payment."""
    rows = pd.DataFrame({
        "segment": seg["segment"],
        "dispute rate [90%]": [_interval(r, "dispute_rate", "dispute_rate_q05", "dispute_rate_q95", "{:.1%}")
                               for _, r in seg.iterrows()],
        "open disputes": seg["open_disputes"].astype(int),
        "open amount": [f"{v:,.0f}" for v in seg["open_dispute_amount"]],
    })
    if "dispute_effect_days" in seg:
        rows["days a dispute adds"] = [f"{v:+.1f}" if pd.notna(v) else "" for v in seg["dispute_effect_days"]]
    oldest = od.head(5)[["invoice_id", "customer_id", "dispute_reason", "amount", "dispute_opened_date",
                         "expected_resolution_date"]] if len(od) else pd.DataFrame()
    return (f"{_table(rows)}<p>{len(od):,} disputes open, {od['amount'].sum():,.0f} in open amount. "
            f"Oldest:</p>{_table(oldest)}")


def _backtest_section(path: Path) -> str:
    """The latest backtest table (written by ``make backtest``), or how to produce one."""
    if not path.is_file():
        return ("<p>No backtest has been run for this data yet: <code>make backtest</code> fits the model at past "
                "origins and scores its predictions against baselines; the table then appears here.</p>")
    m = pd.read_csv(path)
    cols = [c for c in ("origin", "model", "n", "auc", "brier", "mae_days", "coverage_80") if c in m]
    when = time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime))
    return f"<p>From {html.escape(str(path.name))}, written {when}.</p>{_table(m[cols], '{:,.3f}')}"


def _write_index(out: Path, month, loaded, fit, tables, trend, ag, fc, wl, pages, assumptions, params, ddiag,
                 seconds):
    from .models.sampling import data_hash

    esc = html.escape
    cur = trend.iloc[-1]
    prev = trend.iloc[-2] if len(trend) > 1 else None

    def kpi_box(label, key, fmt="{:,.1f}"):
        v = cur[key]
        delta = "" if prev is None else f" ({'+' if v - prev[key] >= 0 else ''}{fmt.format(v - prev[key])} vs previous month)"
        return f'<div class="kpi">{esc(label)}<b>{esc(fmt.format(v))}</b><small>{esc(delta)}</small></div>'

    diag = fit.diagnostics
    warn = "".join(
        f'<p class="warn"><b>Convergence warning ({esc(name)}).</b> {esc(dg.message())}. Treat the numbers '
        'that come from this model with care.</p>'
        for name, dg in (("payment-delay model", diag), ("dispute model", ddiag)) if not dg.ok)
    v = loaded.validation.report
    links = "".join(
        f'<li>{esc(n)}: <a href="{esc(p["business"].name)}">report</a> · <a href="{esc(p["code"].name)}">with code</a></li>'
        for n, p in pages.items())
    top = wl.head(10).copy()
    top["p_late"] = top["p_late"].round(2)
    fc_show = fc.assign(week_start=fc["week_start"].dt.date.astype(str)).drop(columns="week_end")
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>AR report {esc(month)}</title>
<style>{_CSS}</style></head><body>
<h1>Accounts receivable report — {esc(month)}</h1>
<p>As of {esc(str(loaded.as_of.date()))}. {len(loaded.ledger):,} invoices, {loaded.ledger['customer_id'].nunique():,} customers.</p>
{warn}
<h2>Executive summary</h2>
{kpi_box('DSO (days)', 'dso')}{kpi_box('Count-back DSO', 'dso_count_back')}{kpi_box('Best possible DSO', 'best_possible_dso')}
{kpi_box('Avg days delinquent', 'average_days_delinquent')}{kpi_box('CEI (%)', 'cei')}{kpi_box('AR at month end', 'ar_end', '{:,.0f}')}
<h3>Call first</h3>{_table(top)}
<p>The full list is in <a href="worklist.xlsx">worklist.xlsx</a>.</p>
<h3>Collections forecast, next 13 weeks (80% intervals)</h3>
<img alt="collections forecast" src="{plots.to_data_uri(plots.forecast_plot(fc))}">
{_table(fc_show, '{:,.0f}')}
<h3>Discount recommendation per segment</h3>
{_discount_section(tables['segment_incentives'], assumptions)}
<h3>Data quality</h3>
<p>{v['rows_in']:,} rows in: {v['rows_accepted']:,} accepted, {v['rows_quarantined']:,} quarantined,
{v['rows_collapsed']:,} identical copies collapsed; {v.get('rows_after_as_of', 0):,} dated after the as-of date.
Quarantined rows with their reasons: <a href="data/quarantine.csv">data/quarantine.csv</a>.</p>
{_table(pd.DataFrame({'reason': list(v['reasons']), 'rows': list(v['reasons'].values())}))}
<h3>Payment methods</h3>{_methods_section(tables['payment_methods'], tables['switch_candidates'])}
<h3>Disputes</h3>{_disputes_section(tables['disputes_by_segment'], tables['open_disputes'])}
<h2>KPI trend</h2><img alt="KPI trend" src="{plots.to_data_uri(plots.kpi_trend_plot(trend))}">
<h2>Aging at month end</h2><img alt="aging" src="{plots.to_data_uri(plots.aging_plot(ag))}">{_table(_aging_display(ag))}
<h2>Routinely late customers</h2><img alt="late risk" src="{plots.to_data_uri(plots.risk_plot(tables['customer_risk']))}">
<h2>Analyses</h2><ul>{links}</ul>
<h2>Appendix</h2>
<h3>Model diagnostics</h3><p>Payment-delay model: {esc(diag.message())}; sampling {diag.sampling_seconds:.1f}s{' (cached fit)' if diag.cached else ''}.<br>
Dispute model: {esc(ddiag.message())}{' (cached fit)' if ddiag.cached else ''}.</p>
<h3>Backtest (latest <code>make backtest</code>)</h3>{_backtest_section(out.parent / "backtest" / "backtest_metrics.csv")}
<h3>Run parameters</h3>{_table(pd.DataFrame({'parameter': list(params), 'value': [str(x) for x in params.values()]}))}
<h3>Assumptions</h3>{_table(pd.DataFrame({'assumption': list(assumptions.flat()), 'value': [str(x) for x in assumptions.flat().values()]}))}
<h3>Data hash and versions</h3><p>ledger hash {esc(data_hash(loaded.ledger.drop(columns=[c for c in loaded.ledger if loaded.ledger[c].dtype == object])))}; built in {seconds:.0f}s on {esc(sys.platform)}.</p>
{_table(pd.DataFrame(list(_versions().items()), columns=['package', 'version']))}
</body></html>"""
    (out / "index.html").write_text(page)
