"""Link functions η = g(μ), by R's names, with the derivatives the fits use.

Each link gives g (``link(mu)``), g⁻¹ (``inverse``), g' (``deriv``), dμ/dη (``inverse_deriv``)
and d²μ/dη² (``inverse_deriv2``). They are numpy and :mod:`scipy.special` only, so a fit never
imports statsmodels; a statsmodels link passed by a user is read by its class name
(:func:`link_of`). Probabilities are kept inside [ε, 1 − ε] and means above ε before a log, as
R's and statsmodels' links do.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import special

from ..errors import FamilyError

__all__ = ["Link", "LINKS", "link_of", "statsmodels_object"]

EPS = np.finfo(float).eps


def _unit(p):
    return np.clip(p, EPS, 1.0 - EPS)


class Link:
    """A link g with η = g(μ); subclasses give g, g⁻¹ and the derivatives of g⁻¹."""

    name = ""

    def __call__(self, mu):
        raise NotImplementedError

    def inverse(self, eta):
        raise NotImplementedError

    def inverse_deriv(self, eta):
        raise NotImplementedError

    def inverse_deriv2(self, eta):
        raise NotImplementedError

    def deriv(self, mu):
        """g'(μ) = 1/(dμ/dη) at η = g(μ)."""
        return 1.0 / self.inverse_deriv(self(mu))

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Link({self.name})"


class Identity(Link):
    """η = μ."""

    name = "identity"
    power = 1.0

    def __call__(self, mu):
        return np.asarray(mu, dtype=float)

    def inverse(self, eta):
        return np.asarray(eta, dtype=float)

    def inverse_deriv(self, eta):
        return np.ones_like(np.asarray(eta, dtype=float))

    def inverse_deriv2(self, eta):
        return np.zeros_like(np.asarray(eta, dtype=float))


class Log(Link):
    """η = log μ, μ = exp η."""

    name = "log"

    def __call__(self, mu):
        return np.log(np.clip(mu, EPS, np.inf))

    def inverse(self, eta):
        return np.exp(eta)

    def inverse_deriv(self, eta):
        return np.exp(eta)

    def inverse_deriv2(self, eta):
        return np.exp(eta)


class Logit(Link):
    """η = log(μ/(1 − μ)), μ = 1/(1 + e^−η); dμ/dη = μ(1 − μ), d²μ/dη² = μ(1 − μ)(1 − 2μ)."""

    name = "logit"

    def __call__(self, mu):
        p = _unit(mu)
        return np.log(p / (1.0 - p))

    def inverse(self, eta):
        return special.expit(eta)

    def inverse_deriv(self, eta):
        mu = special.expit(eta)
        return mu * (1.0 - mu)

    def inverse_deriv2(self, eta):
        mu = special.expit(eta)
        return mu * (1.0 - mu) * (1.0 - 2.0 * mu)


class Probit(Link):
    """η = Φ⁻¹(μ); dμ/dη = φ(η), d²μ/dη² = −η φ(η)."""

    name = "probit"

    def __call__(self, mu):
        return special.ndtri(_unit(mu))

    def inverse(self, eta):
        return special.ndtr(eta)

    def inverse_deriv(self, eta):
        eta = np.asarray(eta, dtype=float)
        return np.exp(-0.5 * eta * eta) / np.sqrt(2.0 * np.pi)

    def inverse_deriv2(self, eta):
        return -np.asarray(eta, dtype=float) * self.inverse_deriv(eta)


class Cauchit(Link):
    """η = tan(π(μ − ½)), the Cauchy quantile; dμ/dη = 1/(π(1 + η²))."""

    name = "cauchit"

    def __call__(self, mu):
        return np.tan(np.pi * (_unit(mu) - 0.5))

    def inverse(self, eta):
        return 0.5 + np.arctan(eta) / np.pi

    def inverse_deriv(self, eta):
        eta = np.asarray(eta, dtype=float)
        return 1.0 / (np.pi * (1.0 + eta * eta))

    def inverse_deriv2(self, eta):
        eta = np.asarray(eta, dtype=float)
        return -2.0 * eta / (np.pi * (1.0 + eta * eta) ** 2)


class CLogLog(Link):
    """η = log(−log(1 − μ)), μ = 1 − exp(−e^η); dμ/dη = exp(η − e^η)."""

    name = "cloglog"

    def __call__(self, mu):
        return np.log(-np.log1p(-_unit(mu)))

    def inverse(self, eta):
        return -np.expm1(-np.exp(eta))

    def inverse_deriv(self, eta):
        return np.exp(eta - np.exp(eta))

    def inverse_deriv2(self, eta):
        e = np.exp(eta)
        return np.exp(eta - e) * (1.0 - e)


class LogLog(Link):
    """η = −log(−log μ), μ = exp(−e^−η); dμ/dη = exp(−e^−η − η)."""

    name = "loglog"

    def __call__(self, mu):
        return -np.log(-np.log(_unit(mu)))

    def inverse(self, eta):
        return np.exp(-np.exp(-np.asarray(eta, dtype=float)))

    def inverse_deriv(self, eta):
        eta = np.asarray(eta, dtype=float)
        return np.exp(-np.exp(-eta) - eta)

    def inverse_deriv2(self, eta):
        eta = np.asarray(eta, dtype=float)
        return self.inverse_deriv(eta) * (np.exp(-eta) - 1.0)


class Power(Link):
    """η = μ^p, μ = η^(1/p)."""

    power = 1.0

    def __call__(self, mu):
        return np.power(mu, self.power)

    def inverse(self, eta):
        return np.power(eta, 1.0 / self.power)

    def inverse_deriv(self, eta):
        p = self.power
        return np.power(eta, (1.0 - p) / p) / p

    def inverse_deriv2(self, eta):
        p = self.power
        return (1.0 - p) / p**2 * np.power(eta, (1.0 - 2.0 * p) / p)


class Sqrt(Power):
    """η = √μ, μ = η²."""

    name = "sqrt"
    power = 0.5


class Inverse(Power):
    """η = 1/μ, μ = 1/η."""

    name = "inverse"
    power = -1.0


#: links by R's names (``family(name, link=...)``)
LINKS: dict[str, type[Link]] = {
    cls.name: cls for cls in (Log, Logit, Probit, CLogLog, LogLog, Cauchit, Identity, Sqrt, Inverse)
}

#: statsmodels' link classes by their class names → R's names
_STATSMODELS_LINKS = {
    "Identity": "identity",
    "Logit": "logit",
    "Probit": "probit",
    "CLogLog": "cloglog",
    "Log": "log",
    "InversePower": "inverse",
    "Sqrt": "sqrt",
    "Cauchy": "cauchit",
    "LogLog": "loglog",
}


def statsmodels_object(obj, kind: str) -> bool:
    """Whether ``obj`` is a statsmodels ``kind`` ("Family" or "Link") instance, asked without
    importing statsmodels (an object of it exists only if the caller imported it)."""
    name = "family" if kind == "Family" else "links"
    module = sys.modules.get(f"statsmodels.genmod.families.{name}")
    return module is not None and isinstance(obj, getattr(module, kind))


def link_of(link) -> Link:
    """Our link of R's name for it, a statsmodels link instance, or one of ours."""
    if isinstance(link, Link):
        return link
    if isinstance(link, str):
        key = link.strip().lower()
        if key not in LINKS:
            raise FamilyError(f"unknown link '{link}'; choose one of {', '.join(LINKS)}")
        return LINKS[key]()
    if statsmodels_object(link, "Link"):
        name = _STATSMODELS_LINKS.get(type(link).__name__)
        power = getattr(link, "power", None)
        if name is None or (name in ("identity", "sqrt", "inverse") and power != LINKS[name].power):
            raise FamilyError(
                f"the statsmodels link {type(link).__name__} is not supported; use one of {', '.join(LINKS)}"
            )
        return LINKS[name]()
    raise FamilyError(f"link must be a name or a statsmodels link, not {type(link).__name__}")
