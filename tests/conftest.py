"""Shared fixtures: small seeded ledgers and hand-made bad inputs."""

from __future__ import annotations

import pandas as pd
import pytest

from arresearch.ledger import prepare_ledger
from arresearch.models.delay import fit_delay
from arresearch.models.sampling import FitSettings
from arresearch.synth import generate

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


# ---- small synthetic ledgers and their payment-delay fits (session-scoped: fitted once) ----
SMALL = {"n_customers": 150, "months": 18}


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def fit_cache(tmp_path_factory, monkeypatch_session):
    """Fits go to a private cache folder, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch_session.setattr("arresearch.config.CACHE_DIR", path)
    monkeypatch_session.setenv("ARRESEARCH_CACHE", str(path))  # notebook kernels started by the tests too
    return path


@pytest.fixture(scope="session")
def small_fit(fit_cache):
    """``small_fit(seed)`` -> (SynthLedger, prepared ledger, DelayFit), each seed fitted once per session."""
    memo = {}

    def get(seed: int):
        if seed not in memo:
            s = generate(seed=seed, **SMALL)
            led = prepare_ledger(s.observed(), s.as_of)
            memo[seed] = (s, led, fit_delay(led, FitSettings(seed=3), progress=False))
        return memo[seed]

    return get


@pytest.fixture(scope="session")
def synth_small():
    return generate(seed=11, **SMALL)


@pytest.fixture(scope="session")
def ledger_small(synth_small):
    return prepare_ledger(synth_small.observed(), synth_small.as_of)


@pytest.fixture(scope="session")
def delay_fit(small_fit):
    return small_fit(11)[2]
