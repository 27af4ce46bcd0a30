"""Bayesian models of payment behaviour (PyMC, sampled with nutpie).

One modelling vocabulary across models: coordinates ``segment``,
``customer``, ``method``; open invoices are right-censored at their age on
the as-of date; paid invoices enter as per-customer sufficient statistics.
"""

from .sampling import ConvergenceError, FitSettings

__all__ = ["ConvergenceError", "FitSettings"]
