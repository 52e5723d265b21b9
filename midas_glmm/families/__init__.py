"""Response families, one class per family, and the registry that finds them by name.

:func:`family` and :func:`resolve_family` turn ``"binomial"``, ``"nbinom2"``, a statsmodels
family instance (with any of its links) or a :class:`Family` into a family object. Adding a
family is one module with its class, and one line in :data:`FAMILIES`.
"""

from __future__ import annotations

from ..errors import FamilyError
from .base import Family, ResponseTerms, family_of, observed_levels
from .beta import Beta
from .binomial import Binomial
from .gamma import Gamma
from .gaussian import Gaussian
from .links import LINKS, Link, statsmodels_object
from .mixture import ZeroInflatedRows
from .negbin import NegativeBinomial1, NegativeBinomial2
from .ordinal import Ordinal, cumulative_names
from .poisson import Poisson

__all__ = [
    "Family",
    "FAMILIES",
    "ResponseTerms",
    "ZeroInflatedRows",
    "family",
    "resolve_family",
    "family_of",
    "observed_levels",
    "names_with",
    "cumulative_names",
    "Link",
    "LINKS",
]

#: the families by name (glmmTMB's and lme4's names)
FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (Gaussian, Binomial, Poisson, Gamma, NegativeBinomial2, NegativeBinomial1, Beta, Ordinal)
}


def names_with(fact: str) -> list[str]:
    """The names of the families for which the class attribute ``fact`` is true (for messages)."""
    return [name for name, cls in FAMILIES.items() if getattr(cls, fact)]


def family(name: str, link=None, **options) -> Family:
    """A family by name, with a link other than its default as glmmTMB's ``beta_family(link =
    "probit")`` or ``nbinom1(link = "sqrt")``: ``family("beta", link="probit")``.

    ``link`` is R's name of it (``"log"``, ``"logit"``, ``"probit"``, ``"cloglog"``,
    ``"loglog"``, ``"cauchit"``, ``"identity"``, ``"sqrt"``, ``"inverse"``) or a statsmodels
    link instance; any link statsmodels' family of the same kind takes (NB1 as
    NegativeBinomial's, beta as Binomial's). ``options``: the ordinal family's ``levels=``, the
    response's categories in order."""
    key = str(name).strip().lower()
    if key not in FAMILIES:
        raise FamilyError(f"unknown family '{name}'; choose one of {', '.join(FAMILIES)}")
    if options and key != "ordinal":
        raise FamilyError(f"the {key} family takes no options ({', '.join(options)}); only a link")
    return FAMILIES[key](link, **options)


def resolve_family(family) -> Family:
    """Accept a name (``"binomial"``), a statsmodels family instance, or a :class:`Family`."""
    if family is None:
        return Gaussian()
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        key = family.strip().lower()
        if key not in FAMILIES:
            raise FamilyError(
                f"unknown family '{family}'; choose one of {', '.join(FAMILIES)} or pass a statsmodels family"
            )
        return FAMILIES[key]()
    if statsmodels_object(family, "Family"):
        return family_of(family)
    raise FamilyError(f"family must be a name or a statsmodels family, not {type(family).__name__}")
