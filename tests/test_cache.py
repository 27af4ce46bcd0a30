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


def test_sample_cached_loads_without_building_the_model(tmp_path):
    """A cached fit is read back; the callable that builds and compiles the model is only called on a miss."""
    import numpy as np
    import pytest
    import xarray as xr

    from arresearch.models.sampling import FitSettings, sample_cached

    post = xr.Dataset({"mu": (("chain", "draw"), np.arange(6.0).reshape(2, 3))})
    xr.DataTree.from_dict({"posterior": post}).to_netcdf(tmp_path / "k.nc", engine="h5netcdf")

    def compile_model():
        pytest.fail("the model was built although its fit is cached")

    idata, _, cached = sample_cached(compile_model, "k", FitSettings(), tmp_path, progress=False)
    assert cached
    np.testing.assert_array_equal(idata["posterior"]["mu"].values, post["mu"].values)
    def on_miss():
        raise RuntimeError("called on a miss")

    with pytest.raises(RuntimeError, match="called on a miss"):  # no fit under "other": the model is built
        sample_cached(on_miss, "other", FitSettings(), tmp_path, progress=False)
