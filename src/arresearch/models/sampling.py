"""Sampling with nutpie, a disk cache keyed by data and settings, and convergence checks.

A fit is cached under ``.cache/fits/<key>.nc`` where the key hashes the data
the model sees, the as-of date, the model's name and version and the sampler
settings; re-running a notebook or the report reuses it.

Convergence is checked, not assumed: every reported quantity must have
R-hat <= 1.01 and bulk ESS >= 400, and there must be no divergences. A fit
that fails raises :class:`ConvergenceError` unless the caller allows it, in
which case the diagnostics carry ``ok = False`` and a message that every
output shows.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.base import array_stats

from ..config import CACHE_DIR

__all__ = ["FitSettings", "ConvergenceError", "Diagnostics", "check_convergence", "data_hash",
           "cache_key", "compile_pymc", "sample_cached"]

RHAT_MAX = 1.01
ESS_MIN = 400


class ConvergenceError(RuntimeError):
    """A fit failed its convergence checks."""


@dataclass(frozen=True)
class FitSettings:
    """Sampler settings. Defaults are good enough for the monthly report."""

    draws: int = 1500
    tune: int = 500
    chains: int = 4
    seed: int = 20261204
    target_accept: float = 0.85

    def __post_init__(self):
        for name in ("draws", "tune", "chains"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Diagnostics:
    """Convergence diagnostics of one fit."""

    max_rhat: float
    min_ess_bulk: float
    divergences: int
    worst: dict = field(default_factory=dict)
    rhat_max: float = RHAT_MAX
    ess_min: float = ESS_MIN
    sampling_seconds: float = float("nan")
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.max_rhat <= self.rhat_max and self.min_ess_bulk >= self.ess_min and self.divergences == 0

    def message(self) -> str:
        status = "converged" if self.ok else "NOT CONVERGED"
        return (f"{status}: max R-hat {self.max_rhat:.3f} (limit {self.rhat_max}), min bulk ESS "
                f"{self.min_ess_bulk:.0f} (limit {self.ess_min}), divergences {self.divergences}"
                + ("" if self.ok else f"; worst: {self.worst}"))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["message"] = self.message()
        return d


def check_convergence(quantities: dict[str, xr.DataArray], sample_stats: xr.Dataset | None,
                      rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN) -> Diagnostics:
    """R-hat, bulk ESS and divergences over the given reported quantities.

    Parameters
    ----------
    quantities : dict of name -> DataArray with ``chain`` and ``draw`` dims
        Every quantity a table reports (derived quantities included).
    sample_stats : Dataset, optional
        With a ``diverging`` variable.
    """
    max_rhat, min_ess, worst = 0.0, np.inf, {}
    for name, da in quantities.items():
        da = da.transpose("chain", "draw", ...)
        arr = da.values.reshape(da.sizes["chain"], da.sizes["draw"], -1)
        # constant quantities (e.g. a p_late of exactly 0) have undefined R-hat: skip them
        var = arr.reshape(-1, arr.shape[-1]).std(axis=0)
        arr = arr[..., var > 1e-12]
        if arr.shape[-1] == 0:
            continue
        rh = array_stats.rhat(arr, chain_axis=0, draw_axis=1)
        es = array_stats.ess(arr, chain_axis=0, draw_axis=1, method="bulk")
        if np.nanmax(rh) > max_rhat:
            max_rhat = float(np.nanmax(rh))
            worst["rhat"] = name
        if np.nanmin(es) < min_ess:
            min_ess = float(np.nanmin(es))
            worst["ess_bulk"] = name
    div = 0
    if sample_stats is not None and "diverging" in sample_stats:
        div = int(sample_stats["diverging"].sum())
    return Diagnostics(max_rhat=max_rhat, min_ess_bulk=min_ess if np.isfinite(min_ess) else float("nan"),
                       divergences=div, worst=worst, rhat_max=rhat_max, ess_min=ess_min)


def data_hash(*frames: pd.DataFrame | np.ndarray) -> str:
    """A short, stable hash of the data a model sees."""
    h = hashlib.sha256()
    for f in frames:
        if isinstance(f, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(f, index=False).values.tobytes())
            h.update(",".join(map(str, f.columns)).encode())
        else:
            h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()[:16]


def cache_key(model_name: str, model_version: str, data_digest: str, as_of: str,
              settings: FitSettings, extra: dict | None = None) -> str:
    payload = json.dumps({"model": model_name, "version": model_version, "data": data_digest,
                          "as_of": as_of, "settings": asdict(settings), "extra": extra or {}}, sort_keys=True)
    return f"{model_name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


def compile_pymc(model):
    """The PyMC ``model`` compiled by nutpie (for :func:`sample_cached`)."""
    import nutpie

    return nutpie.compile_pymc_model(model)


def sample_cached(compile_model, key: str, settings: FitSettings, cache_dir: Path | None = CACHE_DIR,
                  progress: bool = True, *, complete_posterior=None) -> tuple[xr.DataTree, float, bool]:
    """Sample the nutpie model ``compile_model()`` returns, or load the cached posterior under ``key``.

    The model is only built and compiled when it is sampled (building the payment-delay model takes
    seconds, and every notebook of a report loads the same cached fit): pass a callable, e.g.
    ``lambda: compile_pymc(build_model())`` for a PyMC model. ``complete_posterior(posterior)``, when
    given, adds what the sampler does not store (deterministic values) before the fit is cached.

    Returns
    -------
    (idata, seconds, cached)
        ``idata`` has ``posterior`` and ``sample_stats`` groups.
    """
    import nutpie

    path = None if cache_dir is None else Path(cache_dir) / f"{key}.nc"
    if path is not None and path.exists():
        t0 = time.perf_counter()
        idata = xr.open_datatree(path, engine="h5netcdf").load()
        return idata, time.perf_counter() - t0, True
    t0 = time.perf_counter()
    compiled = compile_model()
    t1 = time.perf_counter()
    idata = nutpie.sample(compiled, draws=settings.draws, tune=settings.tune, chains=settings.chains,
                          seed=settings.seed, target_accept=settings.target_accept, progress_bar=progress,
                          cores=min(settings.chains, 2))
    seconds = time.perf_counter() - t1
    keep = xr.DataTree.from_dict({g: idata[g].dataset for g in ("posterior", "sample_stats")
                                  if g in idata.children})
    if complete_posterior is not None:
        keep["posterior"] = xr.DataTree(complete_posterior(keep["posterior"].dataset))
    ss = keep["sample_stats"].dataset
    drop = [v for v in ss.data_vars if ss[v].dtype == object]
    if drop:
        keep["sample_stats"] = xr.DataTree(ss.drop_vars(drop))
    keep.attrs["sampling_seconds"] = seconds
    keep.attrs["compile_seconds"] = t1 - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.nc")
        keep.to_netcdf(tmp, engine="h5netcdf")
        tmp.replace(path)
    return keep, seconds, False
