"""A cache of tables derived from fits, beside the fits (``ARRESEARCH_CACHE``, default ``.cache/fits``).

Fits are cached by :func:`arresearch.models.sampling.sample_cached`; what is computed from
them (the report's tables, the LOO comparison) is cached here, keyed by the fits' keys,
the inputs that matter and a hash of the package's code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from pathlib import Path

import pandas as pd

__all__ = ["cached_tables", "code_version"]


@functools.cache
def code_version() -> str:
    """A hash of the package's source (read once per process): a table cached by older code is never reused."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cached_tables(kind: str, inputs: dict, compute) -> dict[str, pd.DataFrame]:
    """Tables derived from fits, cached beside the fits under a hash of ``inputs`` and the code.

    The report computes the incentive, method, dispute and payment-delay tables, and each
    notebook the report runs asks for the same tables again: the second time they are read
    back instead of recomputed. ``inputs`` must name everything the tables depend on (the
    fits' cache keys, the assumptions).
    """
    import pickle

    from . import config

    payload = json.dumps({"kind": kind, "code": code_version(), **inputs}, sort_keys=True, default=str)
    folder = Path(config.CACHE_DIR) / "tables" / f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"
    path = folder / "tables.pkl"
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    tables = compute()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"tables.pkl.{os.getpid()}.{threading.get_ident()}.tmp"  # notebooks may write side by side
    with tmp.open("wb") as fh:
        pickle.dump(tables, fh)
    tmp.replace(path)
    return tables
