"""Plots shared by the notebooks and the report (matplotlib/seaborn; no I/O)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["kpi_trend_plot", "aging_plot", "forecast_plot", "risk_plot", "interval_plot", "model_graph_plot", "to_data_uri"]


def kpi_trend_plot(trend: pd.DataFrame):
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].plot(trend["month"], trend["dso"], marker="o", label="DSO")
    ax[0].plot(trend["month"], trend["best_possible_dso"], marker="o", label="best possible DSO")
    ax[0].set_ylabel("days")
    ax[0].legend()
    ax[1].plot(trend["month"], trend["cei"], marker="o", color="C2")
    ax[1].set_ylabel("CEI (%)")
    for a in ax:
        a.tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    return fig


def aging_plot(ag: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(ag["bucket"], ag["amount"], color=["C2", "C0", "C1", "C3", "C3"])
    ax.set_ylabel("open amount")
    ax.set_xlabel("days past due")
    fig.tight_layout()
    return fig


def forecast_plot(fc: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(fc["week"], fc["expected"], color="C0", alpha=0.7, label="expected")
    ax.errorbar(fc["week"], fc["expected"], yerr=[fc["expected"] - fc["lower"], fc["upper"] - fc["expected"]],
                fmt="none", color="k", capsize=3, label="80% interval")
    ax.set_xlabel("week after the as-of date")
    ax.set_ylabel("collections")
    ax.legend()
    fig.tight_layout()
    return fig


def risk_plot(risk: pd.DataFrame, top: int = 25):
    r = risk.sort_values("p_late", ascending=False).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(r) + 1))
    ax.errorbar(r["p_late"], range(len(r)), xerr=[r["p_late"] - r["p_late_q05"], r["p_late_q95"] - r["p_late"]],
                fmt="o", color="C3")
    ax.set_yticks(range(len(r)), r["customer_id"].astype(str), fontsize=7)
    ax.set_xlabel("P(next invoice paid late), 90% interval")
    ax.axvline(0.5, color="grey", ls=":")
    fig.tight_layout()
    return fig


def interval_plot(df: pd.DataFrame, label: str, est: str, lo: str, hi: str, xlabel: str, ref: float | None = 0.0,
                  extra: dict[str, str] | None = None):
    """Horizontal interval ("forest") plot: one row per ``df[label]``, point ``est`` and bar [lo, hi].

    ``extra`` maps further columns to legend labels, drawn as open markers (e.g. a naive estimate).
    Rows with a missing estimate are labelled "no estimate".
    """
    d = df.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(d) + 1.2))
    y = range(len(d))
    ok = d[est].notna()
    ax.errorbar(d.loc[ok, est], [i for i in y if ok[i]], xerr=[d.loc[ok, est] - d.loc[ok, lo], d.loc[ok, hi] - d.loc[ok, est]],
                fmt="o", color="C0", capsize=3, label="estimate, interval")
    for k, (col, name) in enumerate((extra or {}).items()):
        ax.scatter(d[col], list(y), marker="x", color=f"C{k + 1}", label=name, zorder=3)
    for i in y:
        if not ok[i]:
            ax.text(0.02, i, "no estimate", transform=ax.get_yaxis_transform(), va="center", color="grey")
    if ref is not None:
        ax.axvline(ref, color="grey", lw=0.8, ls="--")
    ax.set_yticks(list(y))
    ax.set_yticklabels(d[label].astype(str))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def model_graph_plot(model, figsize=(14, 5.5)):
    """The model's graph (free variables, deterministics, likelihood terms) drawn with matplotlib.

    Variables are placed in layers by their depth in the graph (parents above children).
    A stand-in for ``pm.model_to_graphviz`` that needs no Graphviz install and no script.
    """
    from pymc.model_graph import ModelGraph

    g = ModelGraph(model).make_compute_graph()  # child -> parents
    names = [n for n in g if not n.endswith(("_z", "_centred"))]
    parents = {n: {p for p in g[n] if p in names} for n in names}
    depth: dict[str, int] = {}

    def d(n, seen=()):
        if n not in depth:
            depth[n] = 0 if not parents[n] or n in seen else 1 + max(d(p, (*seen, n)) for p in parents[n])
        return depth[n]

    for n in names:
        d(n)
    layers: dict[int, list[str]] = {}
    for n in sorted(names):
        layers.setdefault(depth[n], []).append(n)
    pos = {}
    for lv, ns in layers.items():
        for k, n in enumerate(ns):
            stagger = 0.05 * (k % 2) if len(ns) > 8 else 0.0  # crowded layers alternate up and down
            pos[n] = ((k + 1) / (len(ns) + 1), 1 - lv / max(len(layers), 2) - stagger)
    fig, ax = plt.subplots(figsize=figsize)
    for n in names:
        for p in parents[n]:
            ax.annotate("", xy=pos[n], xytext=pos[p], arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.7})
    free = {v.name for v in model.free_RVs}
    for n, (x, y) in pos.items():
        kind = "C0" if n in free or f"{n}_z" in g or f"{n}_centred" in g else "C2"
        ax.text(x, y, n, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": "white", "ec": kind})
    ax.set_axis_off()
    ax.set_title("blue: parameters, green: derived quantities and likelihood terms", fontsize=8)
    fig.tight_layout()
    return fig


def to_data_uri(fig) -> str:
    """A PNG data URI, so that the page needs no other file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
