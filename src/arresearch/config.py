"""Paths and business assumptions, defined in one place.

Paths start from ``PROJ_ROOT`` (the checkout holding ``pyproject.toml``).
Business assumptions (cost of capital, fees, collection costs, late
thresholds) have documented defaults in ``assumptions.yaml`` beside this
module; a user's YAML file overrides any subset of them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROJ_ROOT = PACKAGE_DIR.parents[1]
DATA_DIR = PROJ_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
DEMO_DIR = RAW_DIR / "demo"
INTERIM_DIR = DATA_DIR / "interim"
REPORTS_DIR = PROJ_ROOT / "reports"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
# fitted posteriors, keyed by data, as-of date, model code and sampler settings; ARRESEARCH_CACHE moves it
CACHE_DIR = Path(os.environ.get("ARRESEARCH_CACHE") or PROJ_ROOT / ".cache" / "fits")
DEFAULT_ASSUMPTIONS = PACKAGE_DIR / "assumptions.yaml"

RANDOM_SEED = 20261204


class DataError(Exception):
    """A fatal, user-facing problem with input data or arguments.

    The CLI prints the message on one line and exits with code 2.
    """


def _deep_update(base: dict, override: dict, where: str = "") -> dict:
    for key, value in override.items():
        if key not in base and where != "fees.":  # new payment methods may bring their own fees
            raise DataError(
                f"unknown assumption '{where}{key}'; known: {', '.join(sorted(base))}"
            )
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _deep_update(base[key], value, where=f"{where}{key}.")
        else:
            base[key] = value
    return base


@dataclass(frozen=True)
class Assumptions:
    """Business assumptions used to value incentives and actions.

    Read with :func:`load_assumptions`; ``as_dict`` returns the nested values
    so that every page that uses them can print them.
    """

    values: dict[str, Any]
    source: str

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.values)

    def flat(self) -> dict[str, Any]:
        """Flatten to ``{"fees.card_pct": 0.025, ...}`` for tables."""
        out: dict[str, Any] = {}

        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")
                else:
                    out[f"{prefix}{k}"] = v

        walk(self.values, "")
        return out


def load_assumptions(path: str | Path | None = None) -> Assumptions:
    """Load the default assumptions, overridden by the YAML file at ``path``.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with any subset of the keys in ``assumptions.yaml``.

    Returns
    -------
    Assumptions

    Raises
    ------
    DataError
        If the file is missing, not YAML, or names an unknown key.
    """
    with open(DEFAULT_ASSUMPTIONS) as fh:
        values = yaml.safe_load(fh)
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: config file not found")
        try:
            override = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(override, dict):
            raise DataError(f"{path}: expected a mapping of assumption names to values")
        _deep_update(values, override)
        source = str(path)
    return Assumptions(values=values, source=source)
