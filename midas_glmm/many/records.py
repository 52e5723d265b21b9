"""What fit_many keeps of each response's fit (a record: a dict of plain numbers, cheap to send
between processes), and the settings every response is fitted with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SINGULAR_FIT

__all__ = ["Settings", "record", "record_from_estimates", "record_from_result", "failed"]


# ----------------------------------------------------------------------------- one chunk
@dataclass
class Settings:
    method: str | None
    fit_kwargs: dict
    ddf: str


def record(name, params, bse, theta, sigma, llf, singular, messages, caught, nobs, opt=None) -> dict:
    """What the collection keeps of one response's fit (``opt``: the optimizer's outcome, for
    rebuilding a Gaussian response's full result at its θ̂ without a refit). ``messages`` are
    the convergence messages and then the warnings of the fit (``caught``), a singular fit's
    among them, as a single fit() gives them."""
    caught = list(caught) + ([SINGULAR_FIT] if singular and SINGULAR_FIT not in caught else [])
    return {
        "name": name,
        "params": np.asarray(params, float),
        "bse": np.asarray(bse, float),
        "theta": np.asarray(theta, float),
        "sigma": float(sigma),
        "llf": float(llf),
        "singular": bool(singular),
        "messages": list(messages) + [m for m in caught if m not in messages],
        "converged": not messages,
        "opt": opt,
        "nobs": nobs,
        "error": None,
        "df": None,
    }


def record_from_estimates(name, est, nobs, caught) -> dict:
    o = est.opt
    opt = (np.asarray(o.x, float), float(o.fun), o.nfev, o.converged, o.message, o.optimizer)
    bse = np.sqrt(np.diag(est.vcov_beta))
    return record(name, est.beta, bse, est.theta, est.sigma, est.llf, est.singular, est.convergence, caught, nobs, opt)


def record_from_result(name, res, caught) -> dict:
    msgs = res.convergence_messages
    return record(name, res.params, res.bse, res.theta, res.sigma, res.llf, res.singular, msgs, caught, res.nobs)


def failed(name, exc, nobs) -> dict:
    return {"name": name, "error": f"{type(exc).__name__}: {exc}", "nobs": nobs, "messages": [], "df": None}
