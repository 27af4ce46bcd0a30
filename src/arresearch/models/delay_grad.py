"""The payment-delay model's log density and its gradient, written by hand in numba.

:func:`arresearch.models.delay.build_delay_model` is the model's specification (PyMC); this
module computes the same log density (every constant included) and its gradient on the same
unconstrained parameters, and :func:`compile_for_nutpie` hands them to nutpie as C callbacks.
On the demo ledger a gradient costs ~0.12 ms instead of ~0.57 ms for the graph PyTensor derives
from the PyMC model, its compilation is cached on disk by numba (PyTensor's ~25 s compile was paid
on every fit), and no Python runs per gradient. ``tests/test_delay_grad.py`` checks that both
give the same log density and gradient at random points, for each shape the model takes (shared
or per-segment method levels, seasonal customers or none, Mundlak terms or none, no hurdle,
centred or non-centred customers), that the C callbacks agree with the Python entry, and that
:func:`arresearch.models.delay.add_deterministics` rebuilds PyMC's deterministic values.

Derivation (notation of ``build_delay_model``): the per-customer coefficients are
``E_c = (theta_c - shift_c + log 30, s_cos_c, s_sin_c)`` on the design columns (intercept,
cos, sin) and the segment slopes ``B_s`` on the others. The reverse pass runs the forward
pass backwards: likelihood terms give d/dE_c and d/dB_s, the theta prior gives d/dlevel_c,
and ``level``, ``shift`` and the seasonal terms pass them on to the free parameters.

Speed (docs/performance.md has the steps measured): customers are sorted by segment and cells by
segment then customer, per-customer data and design rows are stored by column, and exp, log and
log erfc are plain arithmetic, so that LLVM vectorises the loops (numba's NumPy error model:
no zero-division branches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .delay import LOG30, NU

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG2 = math.log(2.0)
SQRT2 = math.sqrt(2.0)
SQRT_PI = math.sqrt(math.pi)
# StudentT(NU) normalising constant
T_CONST = math.lgamma((NU + 1) / 2) - math.lgamma(NU / 2) - 0.5 * math.log(NU * math.pi)
HALFNORMAL_CONST = 0.5 * math.log(2 / math.pi)

# slots of the offsets array: the parameter blocks (PyMC value-variable names); -1 where absent
BLOCKS = ["alpha_0", "alpha", "tau_log__", "sigma_log__", "beta_terms", "beta_disc_0", "beta_disc", "beta_disp",
          "beta_method_0", "beta_method", "beta_method_free", "beta_channel_0", "beta_channel",
          "beta_channel_free", "season_a", "season_b", "tau_season_log__", "season_z", "mundlak", "theta_centred",
          "theta_z", "takeup_0", "takeup_seg", "tau_takeup_log__", "takeup_z"]
(A0, ALPHA, TAU, SIGMA, BTERMS, DISC0, DISC, DISP, M0, MFULL, MFREE, CH0, CHFULL, CHFREE, SA, SB, TAUS, SZ, MUND,
 THC, THZ, K0, KSEG, TAUV, KZ) = range(len(BLOCKS))


LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10


@numba.njit(cache=True, error_model="numpy", fastmath=False)
def vexp(x, out):
    """out[i] = exp(x[i]) for x in [-700, 700], to a couple of ulp.

    libm's exp is a call LLVM cannot vectorise; this loop is plain arithmetic on an array and
    runs 8 lanes wide (1.2 vs 4.3 ns per value here). exp(x) = 2^k exp(r), |r| <= ln2 / 2,
    exp(r) by its Taylor series to degree 13 (truncation < 1e-17), 2^k added to the exponent bits.
    """
    bits = out.view(np.int64)
    for i in range(x.shape[0]):
        v = min(max(x[i], -700.0), 700.0)
        k = math.floor(v * LOG2E + 0.5)
        r = v - k * LN2_HI - k * LN2_LO
        out[i] = 1.0 + r * (1.0 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
            1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (1 / 39916800 + r * (
                1 / 479001600 + r * (1 / 6227020800)))))))))))))
        bits[i] += np.int64(k) << 52


@numba.njit(cache=True, error_model="numpy", fastmath=False)
def vlog1p_unit(t, out):
    """out[i] = log1p(t[i]) for t in [0, 1]: 2 atanh(u), u = t / (2 + t) <= 1/3, series to u^35."""
    for i in range(t.shape[0]):
        u = t[i] / (2.0 + t[i])
        w = u * u
        out[i] = 2.0 * u * (1.0 + w * (1 / 3 + w * (1 / 5 + w * (1 / 7 + w * (1 / 9 + w * (1 / 11 + w * (1 / 13 + w * (
            1 / 15 + w * (1 / 17 + w * (1 / 19 + w * (1 / 21 + w * (1 / 23 + w * (1 / 25 + w * (1 / 27 + w * (
                1 / 29 + w * (1 / 31 + w * (1 / 33 + w * (1 / 35))))))))))))))))))


@numba.njit(cache=True, error_model="numpy", fastmath=False)
def vlog(v, out):
    """out[i] = log(v[i]) for positive normal v, vectorisable like :func:`vexp`.

    v = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(u), u = (m - 1) / (m + 1), |u| <= 0.172,
    by its series to u^23 (truncation < 1e-18).
    """
    n = v.shape[0]
    bits = v.view(np.int64)
    mb = np.empty(n, dtype=np.int64)
    ex = np.empty(n)
    for i in range(n):
        ex[i] = ((bits[i] >> 52) & 0x7FF) - 1023
        mb[i] = (bits[i] & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    m = mb.view(np.float64)
    for i in range(n):
        mi = m[i]
        e = ex[i]
        if mi > 1.4142135623730951:
            mi *= 0.5
            e += 1.0
        u = (mi - 1.0) / (mi + 1.0)
        w = u * u
        lm = 2.0 * u * (1.0 + w * (1 / 3 + w * (1 / 5 + w * (1 / 7 + w * (1 / 9 + w * (1 / 11 + w * (1 / 13 + w * (
            1 / 15 + w * (1 / 17 + w * (1 / 19 + w * (1 / 21 + w * (1 / 23))))))))))))
        out[i] = e * LN2_HI + (lm + e * LN2_LO)


# Cephes (ndtr.c, S. L. Moshier) rational approximations: erf(x) = x T(x^2) / U(x^2) for |x| < 1,
# erfc(x) = exp(-x^2) P(x) / Q(x) for 1 <= x < 8 and exp(-x^2) R(x) / S(x) for x >= 8
ERF_T = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
         7.00332514112805075473E3, 5.55923013010394962768E4)
ERF_U = (1.0, 3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
         2.26290000613890934246E4, 4.92673942608635921086E4)
ERFC_P = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
          4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
          9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
ERFC_Q = (1.0, 1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
          9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
          1.65666309194161350182E3, 5.57535340817727675546E2)
ERFC_R = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
          6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
ERFC_S = (1.0, 2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
          1.70814450747565897222E1, 9.60896809063285878198E0, 3.36907645100081516050E0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _poly(x, c):
    acc = c[0]
    for k in range(1, len(c)):
        acc = acc * x + c[k]
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath=False)
def vlog_erfc(x, val, dval):
    """val[i] = log erfc(x[i]), dval[i] = its derivative -2 exp(-x^2) / (sqrt(pi) erfc(x)), x >= -20.

    Vectorisable (Cephes' rational approximations with branches as selects, exp and log by
    :func:`vexp` and :func:`vlog`); for x >= 1 it works with exp(-x^2) factored out, so nothing
    underflows however large x is.
    """
    n = x.shape[0]
    negz = np.empty(n)
    for i in range(n):
        negz[i] = -x[i] * x[i]
    ez = np.empty(n)
    vexp(negz, ez)
    arg = np.empty(n)
    ratio = np.empty(n)  # exp(-x^2) / erfc(x)
    for i in range(n):
        xi = x[i]
        a = abs(xi)
        z = xi * xi
        rat = (_poly(a, ERFC_P) / _poly(a, ERFC_Q)) if a < 8.0 else (_poly(a, ERFC_R) / _poly(a, ERFC_S))
        small = 1.0 - xi * _poly(z, ERF_T) / _poly(z, ERF_U)
        y = small if a < 1.0 else 2.0 - ez[i] * rat  # erfc(x) for x < 1
        big = xi >= 1.0
        arg[i] = rat if big else y
        ratio[i] = 1.0 / rat if big else ez[i] / y
    vlog(arg, val)
    for i in range(n):
        if x[i] >= 1.0:
            val[i] -= x[i] * x[i]
        dval[i] = -2.0 / SQRT_PI * ratio[i]


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _axpy(alpha, xv, out):
    """out += alpha * xv (1-d views indexed from 0: the form LLVM vectorises)."""
    for i in range(out.shape[0]):
        out[i] += alpha * xv[i]


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _axpy_dot(alpha, xv, yv, out):
    """out += alpha * xv, returning xv . yv, in one pass over xv."""
    acc = 0.0
    for i in range(out.shape[0]):
        out[i] += alpha * xv[i]
        acc += xv[i] * yv[i]
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _cells_mu(E, B, XT, cc, sptr, mu):
    """Linear predictor of cells: ``XT`` (K, n) holds their design rows as columns, sorted by segment
    (``sptr`` delimits each segment's run) so that each slope multiplies one contiguous run."""
    K = XT.shape[0]
    xc, xs = XT[K - 2], XT[K - 1]
    e0, ec, es = E[0], E[1], E[2]
    n = cc.shape[0]
    i = 0
    while i < n:  # cells are sorted by customer within segment: one customer's run at a time
        c = cc[i]
        a0, a1, a2 = e0[c], ec[c], es[c]
        while i < n and cc[i] == c:
            mu[i] = a0 + a1 * xc[i] + a2 * xs[i]  # XT[0], the intercept column, is 1
            i += 1
    for s in range(sptr.shape[0] - 1):
        a, z = sptr[s], sptr[s + 1]
        m = mu[a:z]
        for p in range(K - 3):  # (1-d views indexed from 0: the form LLVM vectorises)
            b = B[s, p]
            row = XT[1 + p, a:z]
            for i in range(z - a):
                m[i] += b * row[i]


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _cells_back(dmu, XT, cc, sptr, dE, dB):
    """Adds d/dE and d/dB of sum_i f_i(mu_i), given dmu_i = f_i'(mu_i).

    Cells are sorted by customer within segment: each customer's run is summed in registers before
    it is added to ``dE``. Measured on the demo's window cells: 3.9 us, against 9.4 for adding cell
    by cell (each addition then waits on the one before, through memory) and 7.8 for that with the
    cells ordered so that neighbours belong to different customers."""
    K = XT.shape[0]
    xc, xs = XT[K - 2], XT[K - 1]  # XT[0], the intercept column, is 1
    n = cc.shape[0]
    i = 0
    while i < n:
        c = cc[i]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        while i < n and cc[i] == c:
            a0 += dmu[i]
            a1 += dmu[i] * xc[i]
            a2 += dmu[i] * xs[i]
            i += 1
        dE[0, c] += a0
        dE[1, c] += a1
        dE[2, c] += a2
    for s in range(sptr.shape[0] - 1):
        a, z = sptr[s], sptr[s + 1]
        dm = dmu[a:z]
        for p in range(K - 3):
            dB[s, p] += _dot(dm, XT[1 + p, a:z])


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _censored_x(cla, mu, g, xs):
    for i in range(xs.shape[0]):
        xs[i] = max((cla[i] - mu[i]) * g, -20.0)  # floored as in the model: survival 1 there


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _censored_back(cw, lerfc, dlerfc, xs, g, dmu):
    """One segment's censored cells: (sum of log erfc terms, d/dlog sigma); d/dmu into ``dmu``."""
    acc_lp = 0.0
    acc_ls = 0.0
    for i in range(xs.shape[0]):
        acc_lp += cw[i] * lerfc[i]
        dx = cw[i] * dlerfc[i] if xs[i] > -20.0 else 0.0  # d/dx, zero where x was floored
        dmu[i] = -dx * g
        acc_ls -= dx * xs[i]
    return acc_lp, acc_ls


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _window_terms(wpos, wy, wld, mu, log_p, log_q, g, cn, wz, wd, wa, whi):
    """One segment's window cells: z, lp_take - lp_not, -|lp_take - lp_not|, max(lp_take, lp_not)."""
    for i in range(wy.shape[0]):
        o = wpos[i]
        z = (wy[i] - mu[i]) * g
        lp_take = log_p[o] + wy[i] - wld[i]
        lp_not = log_q[o] + cn - 0.5 * z * z
        wz[i] = z
        wd[i] = lp_take - lp_not
        wa[i] = -abs(lp_take - lp_not)
        whi[i] = max(lp_take, lp_not)


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, inline="always")
def _window_back(ww, wt, wl, whi, wd, wz, g, rtk, dmu):
    """One segment's window cells: (sum of the mixtures' logs, d/dlog sigma); d/dmu into ``dmu`` and
    ww * P(taken | paid on that day) into ``rtk``."""
    acc_lp = 0.0
    acc_ls = 0.0
    for i in range(ww.shape[0]):
        # log(e^a + e^b) = max + log1p(e^-|a - b|), and the weight e^a / (e^a + e^b)
        t = wt[i]
        acc_lp += ww[i] * (whi[i] + wl[i])
        r_take = (1.0 if wd[i] > 0 else t) / (1.0 + t)
        r_not = 1.0 - r_take
        z = wz[i]
        rtk[i] = ww[i] * r_take
        dmu[i] = ww[i] * r_not * z * g
        acc_ls += ww[i] * r_not * (z * z - 1.0)
    return acc_lp, acc_ls


@numba.njit(cache=True, error_model="numpy")
def _normal(x, grad, i, mu, sd, parent=-1):
    """log Normal(x[i] | mu, sd); adds d/dx[i] to grad[i] and, when the mean is the parameter x[parent], d/dx[parent]."""
    z = (x[i] - mu) / sd
    grad[i] -= z / sd
    if parent >= 0:
        grad[parent] += z / sd
    return -HALF_LOG_2PI - math.log(sd) - 0.5 * z * z


@numba.njit(cache=True, error_model="numpy")
def _halfnormal_log(x, grad, i, sd):
    """log HalfNormal(exp(x[i]) | sd), Jacobian included; adds d/dx[i] to grad[i]."""
    z = math.exp(x[i]) / sd
    grad[i] += 1.0 - z * z
    return HALFNORMAL_CONST - math.log(sd) - 0.5 * z * z + x[i]


@numba.njit(cache=True, error_model="numpy")
def _student(x, mu, sd):
    """StudentT(NU, mu, sd) without its log term: (a, d/dx, d/dlog(sd)); logp = T_CONST - log sd - (NU + 1) / 2 log a.

    The logs are taken afterwards over all terms at once (:func:`vlog`)."""
    r = (x - mu) / sd
    a = 1.0 + r * r / NU
    return a, -(NU + 1) * r / (NU * a * sd), -1.0 + (NU + 1) * r * r / (NU * a)


@numba.njit(cache=True, error_model="numpy")
def _sum_log(a):
    out = np.empty(a.shape[0])
    vlog(a, out)
    return out.sum()


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "contract"})
def logp_grad(x, grad, off, seg, cptr, bidx, bstride, mfree, chfree, xbarT, mkT, eidx, cent, small, n_elig,
              Gss, Hs, Qs, Ns, GjsT, GjjT, hjT, Xc, cc, csp, cla, cw, wpos, ocust, nlate, Xw, wc, wsp,
              wy, wld, ww):
    """Log density at the unconstrained point ``x``; its gradient is written into ``grad``.

    Customers are sorted by segment (``cptr`` delimits each segment's run) and per-customer data
    are stored by column (``xbarT`` is (K, C), ...), so that the loops over customers run on
    contiguous views with the segment's values fixed: the form LLVM vectorises.
    """
    S = Ns.shape[0]
    C = seg.shape[0]
    K = xbarT.shape[0]
    P = K - 3
    L = mkT.shape[0]
    grad[:] = 0.0
    lp = 0.0

    # ---------------- segment-level values
    sigma = np.exp(x[off[SIGMA]:off[SIGMA] + S])
    isig = 1.0 / sigma
    isig2 = isig / SQRT2
    tau = np.exp(x[off[TAU]:off[TAU] + S])
    B = np.empty((S, P))
    for s in range(S):
        for p in range(P):
            B[s, p] = x[bidx[p] + s * bstride[p]]
    sa = x[off[SA]:off[SA] + S]
    sb = x[off[SB]:off[SB] + S]
    tau_s = math.exp(x[off[TAUS]]) if off[TAUS] >= 0 else 0.0

    # ---------------- per-customer values: E = (intercept, cos, sin coefficients) by column
    ET = np.empty((3, C))
    shift = np.empty(C)
    level = np.empty(C)
    theta = np.empty(C)
    for s in range(S):
        a, b = cptr[s], cptr[s + 1]
        ec, es, sh, lv = ET[1, a:b], ET[2, a:b], shift[a:b], level[a:b]
        xc, xs = xbarT[K - 2, a:b], xbarT[K - 1, a:b]
        for i in range(b - a):
            ec[i] = sa[s]
            es[i] = sb[s]
        for i in range(b - a):
            c = a + i
            if eidx[c] >= 0:
                ec[i] += x[off[SZ] + 2 * eidx[c]] * tau_s
                es[i] += x[off[SZ] + 2 * eidx[c] + 1] * tau_s
        for i in range(b - a):
            sh[i] = ec[i] * xc[i] + es[i] * xs[i]
        for p in range(P):
            _axpy(B[s, p], xbarT[1 + p, a:b], sh)
        al = x[off[ALPHA] + s]
        for i in range(b - a):
            lv[i] = al + sh[i]
    for j in range(L):
        _axpy(x[off[MUND] + j], mkT[j], level)
    for c in range(C):
        if cent[c] >= 0:
            theta[c] = x[off[THC] + cent[c]]
        else:
            theta[c] = level[c] + x[off[THZ] + small[c]] * tau[seg[c]]
        ET[0, c] = theta[c] - shift[c] + LOG30

    # adjoints
    dB = np.zeros((S, P))
    dE = np.zeros((3, C))
    dls = np.zeros(S)  # d/dlog sigma

    # ---------------- paid invoices: Gaussian sufficient statistics on the segment/customer split
    # SS_s = q - 2 B'h + B'G B (segment part) + sum over the segment's customers of
    #        E'Gjj E - 2 E'hj + 2 E'Gjs B;  logp = -n log sigma - SS / (2 sigma^2)
    dd = np.empty(C)
    for s in range(S):
        a, b = cptr[s], cptr[s + 1]
        v = sigma[s] * sigma[s]
        ss = Qs[s]
        dBs = np.zeros(P)  # d SS / d B_s
        for p in range(P):
            gb = 0.0
            for p2 in range(P):
                gb += Gss[s, p, p2] * B[s, p2]
            ss += B[s, p] * (gb - 2.0 * Hs[s, p])
            dBs[p] = 2.0 * gb - 2.0 * Hs[s, p]
        ds = dd[a:b]
        e0, e1, e2 = ET[0, a:b], ET[1, a:b], ET[2, a:b]
        h2v = -0.5 / v
        for ai in range(3):  # (passes fused: the customers' arrays are read once or twice, not 3 + 2 P times)
            e = ET[ai, a:b]
            g0, g1, g2 = GjjT[ai, 0, a:b], GjjT[ai, 1, a:b], GjjT[ai, 2, a:b]
            h = hjT[ai, a:b]
            acc = 0.0
            for i in range(b - a):
                rs = g0[i] * e0[i] + g1[i] * e1[i] + g2[i] * e2[i]  # (Gjj E)_ai
                ds[i] = 2.0 * rs - 2.0 * h[i]
                acc -= e[i] * rs
            for p in range(P):
                dBs[p] += 2.0 * _axpy_dot(2.0 * B[s, p], GjsT[p, ai, a:b], e, ds)
            de = dE[ai, a:b]
            for i in range(b - a):
                acc += e[i] * ds[i]
                de[i] = ds[i] * h2v
            ss += acc
        lp += -Ns[s] * x[off[SIGMA] + s] - ss / (2.0 * v)
        dls[s] += -Ns[s] + ss / v
        for p in range(P):
            dB[s, p] += -dBs[p] / (2.0 * v)

    # ---------------- open invoices, right-censored: log P(T > age)
    nc = cla.shape[0]
    mu = np.empty(nc)
    _cells_mu(ET, B, Xc, cc, csp, mu)
    xs = np.empty(nc)
    for s in range(S):  # per segment (sigma fixed), on views indexed from 0: the loops vectorise
        a, z = csp[s], csp[s + 1]
        _censored_x(cla[a:z], mu[a:z], isig2[s], xs[a:z])
    lerfc = np.empty(nc)
    dlerfc = np.empty(nc)
    vlog_erfc(xs, lerfc, dlerfc)
    dmu = np.empty(nc)
    for s in range(S):
        a, z = csp[s], csp[s + 1]
        acc_lp, acc_ls = _censored_back(cw[a:z], lerfc[a:z], dlerfc[a:z], xs[a:z], isig2[s], dmu[a:z])
        lp += acc_lp
        dls[s] += acc_ls
    lp -= LOG2 * cw.sum()
    _cells_back(dmu, Xc, cc, csp, dE, dB)

    # ---------------- discount take-up
    if off[K0] >= 0:
        lp += _normal(x, grad, off[K0], -1.0, 1.5)
        for s in range(S):
            lp += _normal(x, grad, off[KSEG] + s, x[off[K0]], 1.0, off[K0])
        lp += _halfnormal_log(x, grad, off[TAUV], 1.0)
        tau_v = math.exp(x[off[TAUV]])
        n_off = ocust.shape[0]
        log_p = np.empty(n_off)
        log_q = np.empty(n_off)
        dlogit = np.zeros(n_off)
        pr = np.empty(n_off)
        logit = np.empty(n_off)
        for o in range(n_off):
            z = x[off[KZ] + o]
            lp += -HALF_LOG_2PI - 0.5 * z * z  # z ~ Normal(0, 1)
            grad[off[KZ] + o] -= z
            logit[o] = x[off[KSEG] + seg[ocust[o]]] + z * tau_v
            pr[o] = -abs(logit[o])
        # log sigmoid(logit), log sigmoid(-logit) and sigmoid(logit), stably: t = exp(-|logit|)
        et = np.empty(n_off)
        vexp(pr, et)
        sp = np.empty(n_off)
        vlog1p_unit(et, sp)
        for o in range(n_off):
            t = et[o]
            pos = logit[o] > 0
            log_p[o] = -sp[o] if pos else logit[o] - sp[o]
            log_q[o] = -sp[o] - logit[o] if pos else -sp[o]
            pr[o] = (1.0 if pos else t) / (1.0 + t)
            lp += nlate[o] * log_q[o]
            dlogit[o] += -nlate[o] * pr[o]  # d log q / d logit = -p
        # paid inside the window: three passes, so that exp and log1p run over whole arrays; cells are
        # sorted by segment then customer (wpos: the cell's offered customer)
        nw = wy.shape[0]
        wz = np.empty(nw)
        wa = np.empty(nw)  # -|lp_take - lp_not|
        whi = np.empty(nw)  # max(lp_take, lp_not)
        wd = np.empty(nw)  # lp_take - lp_not
        mu = np.empty(nw)
        _cells_mu(ET, B, Xw, wc, wsp, mu)
        for s in range(S):
            a, z = wsp[s], wsp[s + 1]
            _window_terms(wpos[a:z], wy[a:z], wld[a:z], mu[a:z], log_p, log_q, isig[s],
                          -HALF_LOG_2PI - x[off[SIGMA] + s], wz[a:z], wd[a:z], wa[a:z], whi[a:z])
        wt = np.empty(nw)
        vexp(wa, wt)
        wl = np.empty(nw)
        vlog1p_unit(wt, wl)
        dmu = np.empty(nw)
        rtk = np.empty(nw)  # ww * P(taken | paid on that day): the cell's d/dlogit is rtk - ww * p
        for s in range(S):
            a, z = wsp[s], wsp[s + 1]
            acc_lp, acc_ls = _window_back(ww[a:z], wt[a:z], wl[a:z], whi[a:z], wd[a:z], wz[a:z], isig[s],
                                          rtk[a:z], dmu[a:z])
            lp += acc_lp
            dls[s] += acc_ls
        i = 0
        while i < nw:  # d/dlogit = r_take - p per invoice, summed over the customer's run of cells
            o = wpos[i]
            acc = 0.0
            while i < nw and wpos[i] == o:
                acc += rtk[i] - ww[i] * pr[o]
                i += 1
            dlogit[o] += acc
        _cells_back(dmu, Xw, wc, wsp, dE, dB)
        for o in range(n_off):
            grad[off[KSEG] + seg[ocust[o]]] += dlogit[o]
            grad[off[KZ] + o] += dlogit[o] * tau_v
            grad[off[TAUV]] += dlogit[o] * x[off[KZ] + o] * tau_v

    # ---------------- customer effects: theta prior, then E -> theta, shift, seasonal terms
    dlevel = np.empty(C)
    dlt = np.empty(S)  # d/dlog tau
    ta = np.empty(C)  # the Student-t terms' log arguments
    for s in range(S):  # per segment: tau and the sums over the segment's customers stay in registers
        ts = tau[s]
        acc_t = 0.0
        for c in range(cptr[s], cptr[s + 1]):
            dth = dE[0, c]
            if cent[c] >= 0:
                ta[c], gx, gls = _student(theta[c], level[c], ts)
                lp -= x[off[TAU] + s]  # the centred prior's -log tau
                grad[off[THC] + cent[c]] += dth + gx
                dlevel[c] = -gx
                acc_t += gls
            else:
                z = x[off[THZ] + small[c]]
                ta[c], gx, _ = _student(z, 0.0, 1.0)
                grad[off[THZ] + small[c]] += gx + dth * ts
                dlevel[c] = dth
                acc_t += dth * z * ts
        dlt[s] = acc_t
    lp += C * T_CONST
    lp -= 0.5 * (NU + 1) * _sum_log(ta)
    # E0 = theta - shift + log 30 and level = alpha + shift + mundlak: d/dshift = dlevel - dE0
    dsh = dlevel - dE[0]
    dcos = dE[1] + dsh * xbarT[K - 2]
    dsin = dE[2] + dsh * xbarT[K - 1]
    dsa = np.zeros(S)
    dsb = np.zeros(S)
    for s in range(S):
        a, b = cptr[s], cptr[s + 1]
        grad[off[ALPHA] + s] += dlevel[a:b].sum()
        for p in range(P):
            dB[s, p] += _dot(dsh[a:b], xbarT[1 + p, a:b])
        dsa[s] = dcos[a:b].sum()
        dsb[s] = dsin[a:b].sum()
    for j in range(L):
        grad[off[MUND] + j] += _dot(dlevel, mkT[j])
    dtau_s = 0.0
    for c in range(C):
        if eidx[c] >= 0:
            i0 = off[SZ] + 2 * eidx[c]
            grad[i0] += dcos[c] * tau_s
            grad[i0 + 1] += dsin[c] * tau_s
            dtau_s += dcos[c] * x[i0] + dsin[c] * x[i0 + 1]

    # ---------------- priors and the rest of the chain
    lp += _normal(x, grad, off[A0], 0.2, 0.5)
    for s in range(S):
        lp += _normal(x, grad, off[ALPHA] + s, x[off[A0]], 0.3, off[A0])
        lp += _halfnormal_log(x, grad, off[TAU] + s, 0.3)
        grad[off[TAU] + s] += dlt[s]
        lp += _halfnormal_log(x, grad, off[SIGMA] + s, 0.5)
        grad[off[SIGMA] + s] += dls[s]
        lp += _normal(x, grad, off[SA] + s, 0.0, 0.2)
        grad[off[SA] + s] += dsa[s]
        lp += _normal(x, grad, off[SB] + s, 0.0, 0.2)
        grad[off[SB] + s] += dsb[s]
    if off[TAUS] >= 0:
        lp += _halfnormal_log(x, grad, off[TAUS], 0.2)
        grad[off[TAUS]] += dtau_s * tau_s
        za = np.empty(2 * n_elig)
        for i in range(2 * n_elig):
            za[i], g, _ = _student(x[off[SZ] + i], 0.0, 1.0)
            grad[off[SZ] + i] += g
        lp += 2 * n_elig * T_CONST - 0.5 * (NU + 1) * _sum_log(za)
    for j in range(L):
        lp += _normal(x, grad, off[MUND] + j, 0.0, 0.5)
    # slopes: the B matrix maps back onto its parameters
    for s in range(S):
        for p in range(P):
            grad[bidx[p] + s * bstride[p]] += dB[s, p]
    lp += _normal(x, grad, off[BTERMS], 0.8, 0.5)
    lp += _normal(x, grad, off[DISP], 0.3, 0.5)
    lp += _normal(x, grad, off[DISC0], 0.0, 0.3)
    for s in range(S):
        lp += _normal(x, grad, off[DISC] + s, x[off[DISC0]], 0.1, off[DISC0])
    lp += _level_priors(x, grad, off[M0], off[MFULL], off[MFREE], mfree, S)
    lp += _level_priors(x, grad, off[CH0], off[CHFULL], off[CHFREE], chfree, S)
    return lp


@numba.njit(cache=True, error_model="numpy")
def _level_priors(x, grad, o0, ofull, ofree, free, S):
    """Method or channel levels: base ~ N(0, 0.3); per-segment effects of free levels ~ N(base, 0.1)."""
    lp = 0.0
    if o0 < 0:
        return lp
    n0 = free.shape[0]
    for j in range(n0):
        lp += _normal(x, grad, o0 + j, 0.0, 0.3)
    if ofull >= 0:
        cols = np.arange(n0)
        o = ofull
    elif ofree >= 0:
        cols = np.flatnonzero(free)
        o = ofree
    else:
        return lp
    F = cols.shape[0]
    for s in range(S):
        for f in range(F):
            lp += _normal(x, grad, o + s * F + f, x[o0 + cols[f]], 0.1, o0 + cols[f])
    return lp


# ---------------------------------------------------------------- the Python side

@dataclass
class DelayLogp:
    """The hand-written log density of one delay model: its parameter layout and data arrays."""

    names: list[str]  # value variables (PyMC names), in the order of the flat vector
    shapes: list[tuple[int, ...]]
    offsets: np.ndarray  # per slot of BLOCKS: start in the flat vector, -1 when absent
    args: tuple
    initial: np.ndarray  # the PyMC model's initial point, flattened
    rv_dims: dict[str, tuple[str, ...]]
    coords: dict

    @property
    def ndim(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        grad = np.empty_like(x)
        return float(logp_grad(x, grad, self.offsets, *self.args)), grad

    def point(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The flat vector as a dict of value variables (PyMC's point format)."""
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = int(np.prod(shape))
            out[name] = x[i:i + size].reshape(shape)
            i += size
        return out


def _i(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _f(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def make_delay_logp(d, model, min_centred: int) -> DelayLogp:
    """Parameter layout (taken from the PyMC ``model`` of ``d``) and the data arrays of :func:`logp_grad`."""
    from .delay import mundlak_design, segment_sufficient_stats

    ip = model.initial_point()
    names = [v.name for v in model.value_vars]
    shapes = [tuple(np.shape(ip[n])) for n in names]
    starts = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    unknown = set(names) - set(BLOCKS)
    if unknown:
        raise ValueError(f"hand-written delay log density does not know {sorted(unknown)}")
    offsets = np.full(len(BLOCKS), -1, dtype=np.int64)
    for n, st in zip(names, starts[:-1], strict=True):
        offsets[BLOCKS.index(n)] = st

    # customers sorted by segment (the kernel's order): perm[k] is the k-th customer, inv maps back
    perm = np.argsort(d.cust_seg, kind="stable")
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    seg = _i(d.cust_seg)
    C, K = d.G.shape[:2]
    S = len(d.segments)
    mfree, chfree = d.free_levels()

    def level_map(free, full, part, base):
        idx, stride = [], []
        fpos = np.cumsum(free) - 1
        for j in range(len(free)):
            if offsets[full] >= 0:
                idx.append(offsets[full] + j), stride.append(len(free))
            elif free[j]:
                idx.append(offsets[part] + fpos[j]), stride.append(int(free.sum()))
            else:
                idx.append(offsets[base] + j), stride.append(0)
        return idx, stride

    mi, ms = level_map(mfree, MFULL, MFREE, M0)
    ci, cs = level_map(chfree, CHFULL, CHFREE, CH0)
    bidx = _i([offsets[BTERMS], offsets[DISC], offsets[DISP]] + mi + ci)
    bstride = _i([0, 1, 0] + ms + cs)

    mk = mundlak_design(d)
    elig = np.flatnonzero(d.season_eligible)
    eidx = np.full(C, -1)
    eidx[elig] = np.arange(len(elig))
    big = d.n >= min_centred
    cent = np.where(big, np.cumsum(big) - 1, -1)
    small = np.where(~big, np.cumsum(~big) - 1, -1)

    st = segment_sufficient_stats(d)
    offered_c = np.flatnonzero(d.n_offered > 0) if d.hurdle else np.zeros(0, int)
    opos = np.full(C, -1)  # a customer's position among the offered ones
    opos[offered_c] = np.arange(len(offered_c))
    nlate = (d.n_offered - d.n_taken)[offered_c]
    win = d.win_cust  # empty without the hurdle (prepare_delay_data)
    # cells sorted by segment, then customer: each segment's slopes multiply one contiguous run of
    # cells (vectorised), and consecutive cells share a customer's values
    def order(cust):
        o = np.lexsort((inv[cust], seg[cust]))
        return o, _i(np.searchsorted(seg[cust][o], np.arange(S + 1)))

    co, csp = order(d.cens_cust)
    wo, wsp = order(win)

    def cols(X, o):  # design rows as columns, (K, n)
        return _f(X.reshape(-1, K)[o].T)

    args = (seg[perm], _i(np.searchsorted(seg[perm], np.arange(S + 1))), bidx, bstride, mfree, chfree,
            _f(d.xbar[perm].T), _f(mk[perm].T), _i(eidx[perm]), _i(cent[perm]), _i(small[perm]), len(elig),
            _f(st["G_ss"]), _f(st["h_s"]), _f(st["q_s"]), _f(st["n_s"]), _f(st["G_sj"][perm].transpose(1, 2, 0)),
            _f(st["G_jj"][perm].transpose(1, 2, 0)), _f(st["h_j"][perm].T),
            cols(d.Xc, co), _i(inv[d.cens_cust[co]]), csp, _f(d.cens_log_age[co]), _f(d.cens_w[co]),
            _i(opos[win[wo]]), _i(inv[offered_c]), _f(nlate), cols(d.win_X, wo), _i(inv[win[wo]]), wsp,
            _f(d.win_y[wo]), _f(d.win_log_d[wo]), _f(d.win_w[wo]))
    rv_dims = {v.name: tuple(model.named_vars_to_dims.get(v.name) or ()) for v in model.free_RVs}
    coords = {k: list(v) for k, v in model.coords.items()}
    initial = np.concatenate([np.asarray(ip[n], float).ravel() for n in names])
    return DelayLogp(names=names, shapes=shapes, offsets=offsets, args=args, initial=initial, rv_dims=rv_dims,
                     coords=coords)


# ---------------------------------------------------------------- nutpie without Python in the loop

@intrinsic
def _address_as_void_pointer(typingctx, src):
    """The memory address ``src`` (an integer) as a void pointer."""
    sig = types.voidptr(src)

    def codegen(cgctx, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


# the arrays the C callbacks read, in order, with their dtype and number of dimensions: the
# kernel's data arguments (``DelayLogp.offsets`` then ``DelayLogp.args``, the scalar n_elig as a
# 1-element array) and the expand callback's mask of log-transformed parameters
_C_ARGS = "i1 i1 i1 i1 i1 b1 b1 f2 f2 i1 i1 i1 i1 f3 f2 f1 f1 f3 f3 f2 f2 i1 i1 f1 f1 i1 i1 f1 f2 i1 i1 f1 f1 f1 b1".split()
_C_DTYPES = {"i": np.int64, "f": np.float64, "b": np.bool_}


def _header(arrays: list[np.ndarray]) -> np.ndarray:
    """Address and shape (padded to 3) of each array, 4 int64 each: what the callbacks receive as user data."""
    h = np.zeros(4 * len(arrays), dtype=np.int64)
    for k, (arr, code) in enumerate(zip(arrays, _C_ARGS, strict=True)):
        if arr.dtype != _C_DTYPES[code[0]] or arr.ndim != int(code[1]) or not arr.flags["C_CONTIGUOUS"]:
            raise TypeError(f"C callback argument {k}: {arr.dtype}[{arr.ndim}-d], expected {code}")
        h[4 * k] = arr.ctypes.data
        h[4 * k + 1:4 * k + 1 + arr.ndim] = arr.shape
    return h


@numba.njit(inline="always")
def _i1(h, k):
    return numba.carray(_address_as_void_pointer(h[4 * k]), (h[4 * k + 1],), np.int64)


@numba.njit(inline="always")
def _b1(h, k):
    return numba.carray(_address_as_void_pointer(h[4 * k]), (h[4 * k + 1],), np.bool_)


@numba.njit(inline="always")
def _f1(h, k):
    return numba.carray(_address_as_void_pointer(h[4 * k]), (h[4 * k + 1],), np.float64)


@numba.njit(inline="always")
def _f2(h, k):
    return numba.carray(_address_as_void_pointer(h[4 * k]), (h[4 * k + 1], h[4 * k + 2]), np.float64)


@numba.njit(inline="always")
def _f3(h, k):
    return numba.carray(_address_as_void_pointer(h[4 * k]), (h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]), np.float64)


_N_HEADER = 4 * len(_C_ARGS)


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _zero_if_finite(v):
    """0 when every value is finite, nan otherwise (one vectorised pass; an early-exit loop is not)."""
    acc = 0.0
    for i in range(v.shape[0]):
        acc += v[i] * 0.0
    return acc


@numba.cfunc(types.int64(types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                         types.CPointer(types.double), types.voidptr), cache=True, error_model="numpy")
def _logp_c(dim, x_, out_, logp_, user_data_):
    """nutpie's C log-density callback: 0 on success, 3 for a non-finite gradient, 4 for a non-finite value."""
    h = numba.carray(user_data_, (_N_HEADER,), np.int64)
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    lp = logp_grad(x, out, _i1(h, 0), _i1(h, 1), _i1(h, 2), _i1(h, 3), _i1(h, 4), _b1(h, 5), _b1(h, 6), _f2(h, 7),
                   _f2(h, 8), _i1(h, 9), _i1(h, 10), _i1(h, 11), _i1(h, 12)[0], _f3(h, 13), _f2(h, 14), _f1(h, 15),
                   _f1(h, 16), _f3(h, 17), _f3(h, 18), _f2(h, 19), _f2(h, 20), _i1(h, 21), _i1(h, 22), _f1(h, 23),
                   _f1(h, 24), _i1(h, 25), _i1(h, 26), _f1(h, 27), _f2(h, 28), _i1(h, 29), _i1(h, 30), _f1(h, 31),
                   _f1(h, 32), _f1(h, 33))
    logp_[0] = lp
    if not np.isfinite(lp):
        return 4
    return 0 if np.isfinite(_zero_if_finite(out)) else 3



@numba.cfunc(types.int64(types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                         types.voidptr), cache=True, error_model="numpy")
def _expand_c(dim, n_expanded, x_, out_, user_data_):
    """nutpie's C expand callback: the parameters on their constrained scale (exp of the log-transformed)."""
    h = numba.carray(user_data_, (_N_HEADER,), np.int64)
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (n_expanded,))
    log_mask = _b1(h, 34)
    for i in range(dim):
        out[i] = math.exp(x[i]) if log_mask[i] else x[i]
    return 0


def compile_for_nutpie(L: DelayLogp):
    """A nutpie model that samples ``L``: the free parameters on their constrained scale.

    nutpie calls the kernel through C callbacks (as it does for the models it compiles itself), so
    no Python runs per gradient and the chains' threads never wait for each other: with a Python
    callback the two chains of a 2-core machine ran 1.4x, not 2x, as fast as one. The model's
    deterministic values (theta, season_g, ...) are not computed per draw here;
    :func:`arresearch.models.delay.add_deterministics` adds them to the posterior afterwards,
    vectorised over all draws.
    """
    from nutpie.compile_pymc import CompiledPyMCModel

    stored = [(n[:-len("_log__")], True) if n.endswith("_log__") else (n, False) for n in L.names]
    shapes = [tuple(int(v) for v in s) for s in L.shapes]
    dims = {}
    for (name, _), shape in zip(stored, shapes, strict=True):
        dd = L.rv_dims.get(name) or ()
        dims[name] = tuple(dd) if len(dd) == len(shape) else tuple(f"{name}_dim_{i}" for i in range(len(shape)))
    coords = dict(L.coords)
    for name, shape in zip((s for s, _ in stored), shapes, strict=True):
        for dim, size in zip(dims[name], shape, strict=True):
            coords.setdefault(dim, pd.RangeIndex(size))
    coords = {k: pd.Index(v) for k, v in coords.items()}
    starts = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    log_mask = np.zeros(L.ndim, dtype=np.bool_)
    for (_, log), a, b in zip(stored, starts[:-1], starts[1:], strict=True):
        log_mask[a:b] = log
    args = list(L.args)
    args[11] = np.array([args[11]], dtype=np.int64)  # n_elig
    arrays = [np.ascontiguousarray(a) for a in [L.offsets, *args, log_mask]]
    names = [s for s, _ in stored]
    try:
        return _compiled_model(CompiledPyMCModel, L, dims, coords, names, shapes, starts, arrays)
    except TypeError as err:  # nutpie changed its internal class
        import nutpie

        raise RuntimeError(f"nutpie {nutpie.__version__} is not supported by the delay model's sampler "
                           f"(pyproject.toml pins nutpie <0.17): {err}") from err


def _compiled_model(CompiledPyMCModel, L, dims, coords, names, shapes, starts, arrays):
    def initial_point(seed):  # the PyMC model's initial point, jittered by U(-1, 1) as PyMC and nutpie do
        return L.initial + np.random.default_rng(seed).uniform(-1, 1, L.ndim)

    return CompiledPyMCModel(
        dims=dims, _n_dim=L.ndim, _coords=coords, _shapes=dict(zip(names, shapes, strict=True)),
        compiled_logp_func=_logp_c, compiled_expand_func=_expand_c, initial_point_func=initial_point,
        shared_data={f"a{k}": a for k, a in enumerate(arrays)},  # keeps the arrays alive with the model
        shared_var_keys={}, user_data=_header(arrays), n_expanded=L.ndim,
        shape_info=(names, [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)], shapes),
        logp_func=None, expand_func=None)
