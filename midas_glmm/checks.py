"""Checks of the arguments a user passes to the library's functions: each returns the value in
the form the code needs, or raises a :class:`~midas_glmm.errors.FitError` that names the
argument and says what was meant."""

from __future__ import annotations

import os

import numpy as np

from .errors import FitError, did_you_mean

__all__ = [
    "check_level",
    "check_count",
    "check_array_size",
    "memory_bytes",
    "make_rng",
    "select_names",
    "check_interval_method",
    "refuse_dispersion_model",
    "refuse_ordinal",
]

#: conf_int's methods and the options each takes
INTERVAL_OPTIONS = {"wald": (), "profile": (), "bootstrap": ("n_boot", "seed", "n_jobs", "progress")}


def refuse_dispersion_model(res, what: str, instead: str) -> None:
    """A FitError for ``what`` on a fit with a dispersion formula (``dispformula=``), which it
    does not handle yet; ``instead`` says what to use."""
    if getattr(res.design, "disp", None) is not None:
        raise FitError(
            f"{what} is not available for a model with a dispersion formula ({res.design.disp.formula}) yet: {instead}"
        )


def refuse_ordinal(res, what: str, instead: str) -> None:
    """A FitError for ``what`` on an ordinal model (family="ordinal"), which it does not handle
    yet; ``instead`` says what to use."""
    if getattr(res.family, "thresholds", False):
        raise FitError(f"{what} is not available for an ordinal model yet: {instead}")


def refuse_iterative(res, what: str, instead: str) -> None:
    """A FitError for ``what`` on a fit by the iterative solver (``fit(solver="iterative")``),
    which needs the exact factor the iterative path never forms; ``instead`` says what to use."""
    if getattr(res.estimates, "solver", None) is not None:
        raise FitError(
            f"{what} needs the exact factorisation, which the iterative solver does not form: {instead}, "
            "or refit with solver='direct' if the exact factor fits in memory"
        )


def check_level(level, name: str = "level", example: str = "0.95 for 95% intervals") -> float:
    """``level`` (or ``alpha``) as a float in (0, 1), or a FitError saying what was meant."""
    try:
        value = float(level)
    except (TypeError, ValueError):  # not a number at all
        raise FitError(f"{name} must be a number in (0, 1), e.g. {example}, not {level!r}") from None
    if not 0 < value < 1:
        percent = 1 < value <= 50 if name == "alpha" else 50 <= value < 100
        hint = f"; did you mean {value / 100:g}?" if percent else ""
        raise FitError(f"{name} must be in (0, 1), e.g. {example}, not {level!r}{hint}")
    return value


def check_count(value, name: str) -> int:
    """``value`` as a positive integer, or a FitError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FitError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def check_jobs(n_jobs) -> int:
    """``n_jobs`` as a number of worker processes: a positive integer, or -1 for every core; a
    FitError naming the argument otherwise (0 or -2 would mean nothing)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise FitError(f"n_jobs must be a positive integer or -1 (all cores), not {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def memory_bytes() -> float:
    """The machine's physical memory in bytes (infinite where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_array_size(cells: float, what: str, fix: str) -> None:
    """A FitError when an array of ``cells`` doubles (``what``) would take more than half of the
    machine's memory; ``fix`` says what to ask for instead."""
    need = 8.0 * float(cells)
    if need > 0.5 * memory_bytes():
        raise FitError(f"{what} would take {need / 2**30:,.1f} GiB, more than half of this machine's memory; {fix}")


def make_rng(seed) -> np.random.Generator:
    """numpy's Generator of ``seed`` (None, an integer or a Generator)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):  # numpy's message speaks of SeedSequence entropy
        raise FitError(f"seed must be None, a non-negative integer or a numpy Generator, not {seed!r}") from None


def select_names(which, names: list[str], method: str, elsewhere: list[str] = ()) -> list[str]:
    """The parameter names ``which`` asks for (all when None), in table order; a FitError with a
    did-you-mean for a name the table does not have (``elsewhere``: names other interval methods
    have, for a hint)."""
    if which is None:
        return list(names)
    wanted = [which] if isinstance(which, str) else list(which)
    for name in wanted:
        if name in names:
            continue
        hint = ""
        if method == "wald" and name in elsewhere:
            hint = f"; Wald intervals cover the fixed effects only: use method='profile' or 'bootstrap' for '{name}'"
        msg = f"conf_int(method='{method}'): no parameter '{name}'{did_you_mean(str(name), names)}{hint}"
        raise FitError(f"{msg}{'' if msg.endswith('?') else '.'} The names are: {', '.join(names)}")
    return [n for n in names if n in wanted]


def check_interval_method(method, options: dict) -> str:
    """conf_int's ``method`` as ``"wald"``, ``"profile"`` or ``"bootstrap"`` (``"boot"`` too),
    after checking that it takes every one of ``options``."""
    key = str(method).lower()
    key = "bootstrap" if key == "boot" else key
    if key not in INTERVAL_OPTIONS:
        raise FitError(
            f"unknown interval method '{method}'{did_you_mean(key, INTERVAL_OPTIONS)}; "
            "choose 'wald', 'profile' or 'bootstrap'"
        )
    takes = INTERVAL_OPTIONS[key]
    for name in options:
        if name not in takes:
            what = f"takes {', '.join(takes)}" if takes else "takes no further options"
            raise FitError(f"conf_int(method='{key}') has no option '{name}'{did_you_mean(name, takes)}; it {what}")
    return key
