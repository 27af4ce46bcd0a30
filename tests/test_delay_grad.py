"""The hand-written log density and gradient equal those of the PyMC model they implement.

``arresearch.models.delay_grad`` is what the delay fit samples; ``build_delay_model`` is the
specification. Both are compared at random points for every shape the model takes, so an edit
to one that is not made to the other fails here. Tolerances: the log density agrees to 1e-9
relative (the two differ only by rounding of the same terms summed in another order, ~1e-6
absolute on ~2e4), the gradient to 1e-7 relative to its largest component.
"""

from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest
import xarray as xr
from scipy.special import erfc, erfcx

from arresearch.models.delay import (
    CENTRED_MIN_INVOICES,
    add_deterministics,
    build_delay_model,
    prepare_delay_data,
)
from arresearch.models.delay_grad import (
    SIGMA,
    _zero_if_finite,
    compile_for_nutpie,
    make_delay_logp,
    vexp,
    vlog,
    vlog1p_unit,
    vlog_erfc,
)


def _call_logp_c(compiled, x):
    """Call the compiled model's C log-density callback as nutpie does: (return code, log density, gradient)."""
    dbl = ctypes.POINTER(ctypes.c_double)
    x = np.ascontiguousarray(x, dtype=float)
    grad, lp = np.empty_like(x), np.zeros(1)
    rc = compiled.compiled_logp_func.ctypes(len(x), x.ctypes.data_as(dbl), grad.ctypes.data_as(dbl),
                                            lp.ctypes.data_as(dbl), ctypes.c_void_p(compiled.user_data.ctypes.data))
    return rc, lp[0], grad


def _call_c_callbacks(compiled, x):
    """Call the compiled model's C log-density and expand callbacks as nutpie does."""
    rc, lp, grad = _call_logp_c(compiled, x)
    assert rc == 0
    dbl = ctypes.POINTER(ctypes.c_double)
    x = np.ascontiguousarray(x, dtype=float)
    expanded = np.empty_like(x)
    rc = compiled.compiled_expand_func.ctypes(len(x), len(x), x.ctypes.data_as(dbl), expanded.ctypes.data_as(dbl),
                                              ctypes.c_void_p(compiled.user_data.ctypes.data))
    assert rc == 0
    return lp, grad, expanded


def _variants(d):
    """The data shapes that change the model's parameters."""
    M = len(d.methods)
    ws = d.within_share.copy()
    ws[3] = 0.0  # one payment method becomes a customer habit: shared across segments
    yield "default", d, CENTRED_MIN_INVOICES
    yield "shared method level", dataclasses.replace(d, within_share=ws), CENTRED_MIN_INVOICES
    ws2 = d.within_share.copy()
    ws2[3:3 + M] = 0.0  # every method a habit: no per-segment method parameters at all
    ws2[:3] = 0.0  # and no Mundlak terms on terms, discount, dispute
    yield "all levels shared, no Mundlak", dataclasses.replace(d, within_share=ws2), CENTRED_MIN_INVOICES
    yield "no seasonal customers", dataclasses.replace(d, season_eligible=np.zeros_like(d.season_eligible)), 10
    yield "all customers non-centred", d, 10 ** 6
    yield "all customers centred", d, 0


@pytest.fixture(scope="module")
def delay_data(ledger_small):
    return prepare_delay_data(ledger_small)


@pytest.mark.parametrize("hurdle", [True, False])
def test_logp_and_gradient_equal_pymc(ledger_small, delay_data, hurdle):
    d0 = delay_data if hurdle else prepare_delay_data(ledger_small, hurdle=False)
    rng = np.random.default_rng(7)
    for name, d, min_centred in _variants(d0):
        model = build_delay_model(d, min_centred=min_centred)
        L = make_delay_logp(d, model, min_centred)
        f = model.compile_logp(jacobian=True, mode="FAST_COMPILE")
        df = model.compile_dlogp(jacobian=True, mode="FAST_COMPILE")
        for _ in range(2):
            x = L.initial + rng.uniform(-1, 1, L.ndim)
            lp, grad = L(x)
            ref, ref_grad = f(L.point(x)), df(L.point(x))
            assert lp == pytest.approx(ref, rel=1e-9), name
            np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-7 * np.abs(ref_grad).max(), err_msg=name)
            # what nutpie calls: the C callback, reading the same data through its header of addresses
            c_lp, c_grad, expanded = _call_c_callbacks(compile_for_nutpie(L), x)
            assert c_lp == lp, name
            np.testing.assert_array_equal(c_grad, grad, err_msg=name)
            logs = np.concatenate([np.full(int(np.prod(sh)), n.endswith("_log__")) for n, sh in zip(
                L.names, L.shapes, strict=True)])
            np.testing.assert_allclose(expanded, np.where(logs, np.exp(x), x), rtol=1e-15, err_msg=name)


def test_c_callback_reports_non_finite_values(delay_data):
    """nutpie's error codes: 4 for a non-finite log density, 3 for a non-finite gradient."""
    model = build_delay_model(delay_data)
    L = make_delay_logp(delay_data, model, CENTRED_MIN_INVOICES)
    x = L.initial.copy()
    x[L.offsets[SIGMA]] = -800.0  # log sigma of the first segment: sigma = 0, the log density is not finite
    rc, lp, _ = _call_logp_c(compile_for_nutpie(L), x)
    assert rc == 4 and not np.isfinite(lp)
    assert _zero_if_finite(np.arange(5.0)) == 0.0
    for bad in (np.inf, -np.inf, np.nan):
        assert np.isnan(_zero_if_finite(np.array([1.0, bad, 2.0])))


def test_deterministics_equal_pymc(delay_data):
    """theta, season_g and per-segment level effects rebuilt from the free parameters, as PyMC defines them."""
    rng = np.random.default_rng(3)
    for name, d, min_centred in _variants(delay_data):
        model = build_delay_model(d, min_centred=min_centred)
        L = make_delay_logp(d, model, min_centred)
        point = L.point(L.initial + rng.uniform(-1, 1, L.ndim))
        # every free variable on its constrained scale and every deterministic, as PyMC computes them
        outs = model.unobserved_value_vars
        vals = dict(zip([v.name for v in outs], model.compile_fn(outs, inputs=model.value_vars, mode="FAST_COMPILE",
                                                                   on_unused_input="ignore")(point), strict=True))
        # the posterior as the sampler stores it: the free variables only, one draw
        free = {v.name: xr.DataArray(np.asarray(vals[v.name])[None, None], dims=("chain", "draw") + tuple(
            f"{v.name}_dim_{i}" for i in range(np.ndim(vals[v.name])))) for v in model.free_RVs}
        post = add_deterministics(xr.Dataset(free), d, min_centred)
        for n in ["theta", "season_g", "beta_method", "beta_channel"]:
            np.testing.assert_allclose(post[n].values[0, 0], vals[n], rtol=1e-12, atol=1e-12, err_msg=f"{name}: {n}")


def test_vectorised_special_functions_match_numpy_and_scipy():
    """exp, log, log1p and log erfc (with its derivative) to ~1e-15 relative (a few ulp), over the ranges the model uses."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-700, 700, 20000)
    out = np.empty_like(x)
    vexp(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-15)
    v = np.exp(rng.uniform(-700, 700, 20000))
    vlog(v, out)
    np.testing.assert_allclose(out, np.log(v), rtol=1e-15, atol=1e-15)
    t = np.concatenate([rng.random(10000), [0.0, 1e-300, 1.0]])
    o = np.empty_like(t)
    vlog1p_unit(t, o)
    np.testing.assert_allclose(o, np.log1p(t), rtol=1e-15)
    # log erfc on [-20, 1e4]: the model floors its argument at -20; the Cephes branches meet at 1 and 8
    x = np.concatenate([np.linspace(-20, 40, 60001), [0.9999999, 1.0, 1.0000001, 7.9999999, 8.0, 100.0, 1e4]])
    val, dval = np.empty_like(x), np.empty_like(x)
    vlog_erfc(x, val, dval)
    # reference: log erfc directly where erfc does not underflow, log erfcx - x^2 beyond (no cancellation)
    ref = np.where(x < 5, np.log(erfc(np.minimum(x, 5))), np.log(erfcx(x)) - x * x)
    np.testing.assert_allclose(val, ref, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(dval, -2 / (np.sqrt(np.pi) * erfcx(x)), rtol=1e-14)
