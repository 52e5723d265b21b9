"""Figures for a fitted model (matplotlib, an optional extra: ``pip install midas_glmm[plot]``).

* :func:`caterpillar` — random effects with conditional intervals, sorted, per term.
* :func:`shrinkage` — BLUPs against the raw group means of the residuals (the seed's shrinkage).
* :func:`diagnostics` — residuals against fitted values, and a normal QQ plot of the residuals.

Each returns a :class:`matplotlib.figure.Figure`, built without pyplot: the user's backend and
pyplot's list of open figures are left alone (in a notebook, the returned figure displays itself
as the cell's value). Pass ``path=`` to save it.
"""

from __future__ import annotations

import numpy as np

from ..checks import check_level
from ..distributions import norm_ppf
from ..errors import FitError

__all__ = ["caterpillar", "shrinkage", "diagnostics"]


def _figure(figsize):
    """A new Figure, detached from pyplot (no backend switch, no global figure list)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FitError("plots need matplotlib: pip install 'midas_glmm[plot]'") from None
    return Figure(figsize=figsize)


def _save(fig, path):
    if path is not None:
        fig.savefig(path, bbox_inches="tight", dpi=110)
    return fig


def caterpillar(res, group: str | None = None, level: float = 0.95, path=None):
    """Random effects of one grouping factor with ``level`` conditional intervals, sorted.

    One panel per term (column) of the factor; the intervals are ±z·condsd around the BLUP or
    conditional mode."""
    level = check_level(level)
    long = res.ranef(condvar=True)
    group = group or long["grpvar"].iloc[0]
    sub = long[long["grpvar"] == group]
    if sub.empty:
        raise FitError(f"no random effects for grouping factor '{group}'; have {sorted(set(long['grpvar']))}")
    z = norm_ppf(0.5 + level / 2)
    terms = list(dict.fromkeys(sub["term"]))
    fig = _figure((4 * len(terms), max(3, 0.18 * sub["grp"].nunique())))
    axes = fig.subplots(1, len(terms), squeeze=False, sharey=False)
    for ax, term in zip(axes[0], terms):
        d = sub[sub["term"] == term].sort_values("condval")
        pos = np.arange(len(d))
        ax.errorbar(d["condval"], pos, xerr=z * d["condsd"], fmt="o", ms=3, lw=1)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(pos)
        ax.set_yticklabels(d["grp"], fontsize=7)
        ax.set_title(f"{group}: {term}")
        ax.set_xlabel("conditional mode ± %.0f%% interval" % (100 * level))
    fig.tight_layout()
    return _save(fig, path)


def shrinkage(res, group: str | None = None, path=None):
    """BLUPs of the random intercepts against the raw mean residual of each group.

    Points below the diagonal in absolute value show shrinkage towards zero, strongest for small
    groups (marker size ∝ group size)."""
    d = res.design
    terms = [t for t in d.terms if t.columns == ["(Intercept)"] and (group is None or t.group_name == group)]
    if not terms:
        raise FitError("shrinkage() needs a random intercept term" + (f" for '{group}'" if group else ""))
    t = terms[0]
    b = res.estimates.b[d.terms.index(t)][:, 0]
    resid = d.y - res.predict(random_effects=False, kind="response")
    n_j = np.bincount(t.codes, minlength=t.nlevels)
    raw = np.bincount(t.codes, weights=resid, minlength=t.nlevels) / np.maximum(n_j, 1)
    fig = _figure((5, 5))
    ax = fig.subplots()
    ax.scatter(raw, b, s=10 + 40 * n_j / n_j.max(), alpha=0.7)
    lim = np.nanmax(np.abs(np.concatenate([raw, b]))) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"raw mean residual per {t.group_name}")
    ax.set_ylabel("BLUP / conditional mode")
    ax.set_title("Shrinkage towards the overall mean")
    return _save(fig, path)


def quantile_residuals(qres, path=None):
    """Scaled residuals (:meth:`MixedModelResults.simulate_residuals`): a QQ plot against the
    uniform distribution, with the uniformity test's p-value, and the residuals against the
    rank-transformed predictions, with lines at 0.25, 0.5 and 0.75 (flat for a good model)."""
    r = np.sort(qres.residuals.to_numpy())
    expected = (np.arange(1, len(r) + 1) - 0.5) / len(r)
    fig = _figure((9, 4))
    a1, a2 = fig.subplots(1, 2)
    a1.scatter(expected, r, s=6, alpha=0.5)
    a1.plot([0, 1], [0, 1], color="grey", lw=0.8)
    a1.set_xlabel("expected (uniform)")
    a1.set_ylabel("observed scaled residual")
    a1.set_title(f"QQ plot, KS p = {qres.test_uniformity()['pvalue']:.3g}")
    from scipy import stats  # loaded when a plot is drawn

    rank = stats.rankdata(qres.predicted) / len(qres.predicted)
    a2.scatter(rank, qres.residuals.to_numpy(), s=6, alpha=0.5)
    for q in (0.25, 0.5, 0.75):
        a2.axhline(q, color="grey", lw=0.8, ls="--")
    a2.set_xlabel("prediction (rank-transformed)")
    a2.set_ylabel("scaled residual")
    a2.set_ylim(0, 1)
    a2.set_title("Residuals vs predicted")
    fig.tight_layout()
    return _save(fig, path)


def diagnostics(res, path=None, n: int = 250, seed=0):
    """Model checks. LMMs: standardised residuals against fitted values and their normal QQ
    plot. GLMMs: the simulation-based scaled residuals (:func:`quantile_residuals`, from ``n``
    simulations), since raw residuals of counts and proportions are not normal."""
    if not res.family.is_lmm:
        return quantile_residuals(res.simulate_residuals(n=n, seed=seed), path=path)
    fitted = res.fittedvalues.to_numpy()
    resid = res.resid.to_numpy() / res.sigma
    fig = _figure((9, 4))
    a1, a2 = fig.subplots(1, 2)
    a1.scatter(fitted, resid, s=6, alpha=0.5)
    a1.axhline(0, color="grey", lw=0.8)
    a1.set_xlabel("fitted")
    a1.set_ylabel("standardised residual" if res.family.is_lmm else "residual")
    a1.set_title("Residuals vs fitted")
    from scipy import stats  # loaded when a plot is drawn

    osm, osr = stats.probplot(resid, dist="norm", fit=False)
    a2.scatter(osm, osr, s=6, alpha=0.5)
    lo, hi = np.min(osm), np.max(osm)
    a2.plot([lo, hi], [lo * np.std(resid) + np.mean(resid), hi * np.std(resid) + np.mean(resid)], color="grey", lw=0.8)
    a2.set_xlabel("normal quantiles")
    a2.set_ylabel("residual quantiles")
    a2.set_title("Normal QQ plot")
    fig.tight_layout()
    return _save(fig, path)
