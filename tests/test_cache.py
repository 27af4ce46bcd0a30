"""Tables derived from fits are cached under their inputs and the code, and reused."""

from __future__ import annotations

import pandas as pd

from arresearch.cache import cached_tables


def test_cached_tables_reuse_and_invalidate(fit_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"t": pd.DataFrame({"a": [1, 2], "s": pd.array(["x", "y"], dtype="string")})}

    first = cached_tables("unit", {"fit": "k1"}, compute)
    again = cached_tables("unit", {"fit": "k1"}, compute)
    assert len(calls) == 1  # read back, not recomputed
    pd.testing.assert_frame_equal(first["t"], again["t"])
    cached_tables("unit", {"fit": "k2"}, compute)  # another fit: recomputed
    assert len(calls) == 2
    assert len(list((fit_cache / "tables").glob("unit-*"))) == 2
