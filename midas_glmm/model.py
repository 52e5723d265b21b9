"""MixedModel: build from a formula (or arrays), fit by the right engine, return results.

Gaussian models with the identity link go to the LMM engine (profiled REML/ML, :mod:`lmm`);
every other family goes to the Laplace / adaptive Gauss–Hermite engine (:mod:`pirls`). Fitting
does not change the model; it returns a new :class:`~midas_glmm.results.MixedModelResults`.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from .design import Design, build_design, design_from_arrays
from .design.daskdata import build_dask_design, is_dask_frame
from .design.dispersion import dispersion_rhs
from .design.response import align_to_rows
from .design.zeroinfl import zi_rhs as zero_inflation_rhs
from .engine.controls import FitControl, check_maxiter, check_quadrature, check_start, fit_control
from .engine.iterative import choose_solver, fit_lmm_iterative
from .engine.iterglmm import fit_glmm_iterative
from .engine.lmm import fit_lmm
from .engine.lmmdisp import fit_lmm_dispersion, fit_lmm_without_residual
from .engine.pirls import fit_glmm
from .errors import SINGULAR_FIT, ConvergenceWarning, DataError, FewGroupsWarning, FitError, SingularFitWarning
from .families import Family, resolve_family
from .results import MixedModelResults

__all__ = ["MixedModel"]

FEW_GROUPS = 5
#: the response column of a model whose formula has none (``"~ x + (1 | g)"``, for fit_many)
NO_RESPONSE = "(no response)"


class MixedModel:
    """A linear or generalized linear mixed model.

    Parameters
    ----------
    endog : array-like (n,)
        Response.
    exog : array-like (n, p)
        Fixed-effects design (include a column of ones for an intercept).
    groups : array-like (n,) or dict of name -> array-like
        Grouping factor(s); each gets a random intercept unless ``exog_re`` says otherwise.
    exog_re : array-like (n, k) or dict of name -> array-like, optional
        Per-row random-effects columns for each grouping factor (default: intercept only).
    family : str or statsmodels family, optional
        ``"gaussian"`` (default), ``"binomial"``, ``"poisson"``, ``"gamma"``.
    weights, offset : array-like, optional
        Prior weights and offset.
    exog_names : list of str, optional

    Examples
    --------
    >>> from midas_glmm import MixedModel, datasets
    >>> res = MixedModel.from_formula("Reaction ~ Days + (Days | Subject)",
    ...                               datasets.load("sleepstudy")).fit()
    >>> print(round(res.params["Days"], 4))
    10.4673
    """

    def __init__(self, endog, exog, groups, exog_re=None, family=None, weights=None, offset=None, exog_names=None):
        family = resolve_family(family)
        if family.categorical_response:
            raise FitError(
                "an ordinal model is built with MixedModel.from_formula (its response's levels and the fixed effects "
                "without an intercept come from the formula and the data)"
            )
        design = design_from_arrays(endog, exog, groups, exog_re, weights, offset, exog_names)
        self._setup(design, family)

    #: formula, data, weights and offset of a model built by from_formula (update(), fit_many)
    built_from: dict | None = None

    def _setup(self, design: Design, family: Family, check: bool = True) -> None:
        self.design = design
        self.family = family
        if not check:
            return
        if design.response_name != NO_RESPONSE:
            family.check_response(design.y, design.response_name, design.trials)
            family.warn_noninteger_successes(design.y, design.weights, design.trials, design.response_name)
        _check_groups(design, family)

    @classmethod
    def from_formula(
        cls,
        formula: str,
        data: pd.DataFrame,
        family=None,
        weights=None,
        offset=None,
        ziformula=None,
        dispformula=None,
    ) -> MixedModel:
        """Build a model from an lme4-style formula.

        Parameters
        ----------
        formula : str
            ``"y ~ x + (1 | g)"``; random terms ``(x | g)``, ``(0 + x | g)``, ``(x || g)``,
            ``(1 | a/b)``, ``(1 | a:b)``; fixed part in formulaic syntax (``C(x)``,
            ``np.log(x)``, ``I(x**2)``, ``offset(np.log(t))``); ``cbind(s, f)`` responses.
        data : pandas.DataFrame or dask.dataframe.DataFrame
            Not modified. Rows with a missing value in a used column (or a missing weight) are
            dropped and counted. Rows with a zero prior weight are kept and counted in ``nobs``,
            as lme4 counts them. With a Dask DataFrame the rows stay on the workers (docs/dask.md).
            Column names with dots (R's ``my.var``) or Python keywords are read whole; names with
            spaces or symbols go in backticks, on either side of ``~``: ```my y` ~ x + (1 | g)``.
        family : str or statsmodels family, optional
            A binomial response may be 0/1, proportions (with ``weights=`` trials), ``cbind(s, f)``,
            bool, or a factor (a pandas Categorical or text): as in lme4 its first level (category
            order; text sorted) is failure and every other level success.
        weights, offset : str (column name) or array-like, optional
            Prior weights must be finite and >= 0 (lme4 refuses negative weights).
        ziformula : str, optional
            A zero-inflation part (glmmTMB's ``ziformula``) for poisson, nbinom2 and nbinom1:
            a one-sided formula of fixed effects (``"~ 1"``, ``"~ x"``) for the logit of the
            probability of a structural zero. Rows missing one of its variables are dropped too.
        dispformula : str, optional
            A model for the dispersion (glmmTMB's ``dispformula``, log link) for gaussian,
            nbinom2, nbinom1 and beta: ``"~ arm"`` gives each arm its own residual variance (nlme's
            ``weights = varIdent(form = ~ 1 | arm)``), ``"~ x"`` a dispersion that moves with x.
            ``"~ 1"`` is the default; ``"~ 0"`` (Gaussian) leaves no residual variance, the last
            random-effects term carrying it (nlme's ``correlation = corAR1()`` is
            ``(1 | g) + ar1(0 + time | g)`` with ``dispformula="~ 0"``). Coefficients on
            glmmTMB's scale: log σ² (Gaussian), log θ (nbinom2), log φ (nbinom1, beta).
        """
        self = cls.__new__(cls)
        family = resolve_family(family)
        build = build_dask_design if is_dask_frame(data) else build_design
        built_formula, built_data = formula, data
        if isinstance(formula, str) and formula.strip().startswith("~"):  # responses come later: fit_many(Y)
            if is_dask_frame(data):
                raise FitError("a formula without a response is for fit_many on pandas data, not Dask data")
            built_formula = f"`{NO_RESPONSE}` {formula.strip()}"
            built_data = data.assign(**{NO_RESPONSE: 0.0}) if isinstance(data, pd.DataFrame) else data
        if family.categorical_response and is_dask_frame(data):
            raise FitError("ordinal models are fitted in memory only for now: compute() the Dask DataFrame first")
        zi_rhs = zero_inflation_rhs(ziformula, family)
        if zi_rhs is not None and is_dask_frame(data):
            raise FitError("zero-inflated models are fitted in memory only for now: compute() the Dask DataFrame first")
        zi = {} if zi_rhs is None else {"zi_rhs": zi_rhs}
        disp_rhs = dispersion_rhs(dispformula, family)
        if disp_rhs is not None:
            if is_dask_frame(data):
                raise FitError(
                    "dispersion models are fitted in memory only for now: compute() the Dask DataFrame first"
                )
            zi["disp_rhs"] = disp_rhs
        self._setup(build(built_formula, built_data, weights=weights, offset=offset, family=family, **zi), family)
        # what update() and fit_many's per-response row sets rebuild from (a reference, not a copy)
        self.built_from = {"formula": formula, "data": data, "weights": weights, "offset": offset}
        if zi_rhs is not None:
            self.built_from["ziformula"] = ziformula
        if disp_rhs is not None:
            self.built_from["dispformula"] = dispformula
        return self

    def with_response(self, y, name: str | None = None, check: bool = True) -> MixedModel:
        """The same model (design, grouping, weights, offset) with another response: one value
        per row the model uses, on the scale of its response (``name``: what messages call it);
        a pandas Series is matched to the rows by its index (the index of the model's data).
        ``check=False`` skips the family's checks of the response and the grouping's cautions
        (a response simulated from the model, as the bootstrap's, is in the family's support)."""
        if self.design.source is not None:
            raise FitError("a new response for a model on Dask data needs another pass: build it from the new column")
        if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
            y = y.iloc[:, 0]
        if isinstance(y, pd.Series):  # by its index, as fit_many aligns a response
            y = align_to_rows(y, self.design.row_index, self.design.nobs, "the new response")
        if self.family.categorical_response and check:  # categories: coded by their levels
            y = self.family.code_levels(
                pd.Series(np.asarray(y)), name or "the new response", self.design.response_levels
            )
        try:
            values = np.asarray(y, dtype=float).ravel()
        except (TypeError, ValueError):
            raise DataError("the new response must be numbers, one per row the model uses") from None
        if values.shape[0] != self.design.nobs:
            raise DataError(
                f"the new response has {values.shape[0]} values but the model uses {self.design.nobs} rows "
                f"({self.design.n_dropped} were dropped for missing values)"
            )
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"the new response has a missing or infinite value at row {int(np.argmax(bad))}; "
                "refit() needs one for every row the model uses"
            )
        other = type(self).__new__(type(self))
        label = self.design.response_name if name is None else str(name)
        if label == NO_RESPONSE:
            label = "y"
        other._setup(replace(self.design, y=values, response_name=label), self.family, check=check)
        # no built_from: update() rebuilds from the formula and data, which hold the old response
        return other

    def fit_many(
        self,
        Y,
        method: str | None = None,
        n_jobs: int = 1,
        progress: bool = False,
        ddf: str = "normal",
        client=None,
        **fit_kwargs,
    ):
        """Fit this model to many responses on the same rows: one fit per column of ``Y``.

        The design, grouping and the response-free blocks are built once; a Gaussian model's
        response blocks are computed for batches of responses at once and each θ is optimised
        on the shared structure by ``fit()``'s algorithm, so each response gets the estimates a
        single ``fit()`` gives it. The formula may omit the response (``"~ age + (1 | donor)"``).

        Parameters
        ----------
        Y : DataFrame, Series or 2-D array
            One column per response. A DataFrame is aligned to the model's rows by its index; an
            array has one row per row used (or per row of the data). A missing value drops that
            row for that response only (its model is rebuilt on its rows).
        method : {"REML", "ML"}, optional
            As in :meth:`fit`.
        n_jobs : int
            Processes to spread the responses over (-1: every core); each uses one BLAS thread.
        progress : bool
            A progress bar (tqdm if installed, else a line per tenth on stderr).
        ddf : {"normal", "satterthwaite"}
            Wald z p-values, or t tests with lmerTest's Satterthwaite df (Gaussian; slower).
        client : dask.distributed.Client, optional
            Spread the responses over the cluster's workers (the model is sent once per worker).
        **fit_kwargs
            Passed to :meth:`fit` (``optimizer``, ``start``, ``maxiter``; ``nAGQ`` for GLMMs).

        Returns
        -------
        ManyResults
            ``params``, ``bse``, ``pvalues`` (responses × coefficients), ``llf``, ``theta``,
            ``sigma``, ``converged``, ``singular``, ``errors``; ``res[name]`` the full result;
            ``to_frame()``; ``pvalues_adjusted("fdr_bh")``.
        """
        from .many import fit_many  # its compiled batch engine loads with it

        return fit_many(self, Y, method=method, n_jobs=n_jobs, progress=progress, ddf=ddf, client=client, **fit_kwargs)

    @property
    def nobs(self) -> int:
        """Number of rows used."""
        return self.design.nobs

    def fit(
        self,
        method: str | None = None,
        nAGQ: int = 1,
        fast: bool = False,
        optimizer: str | None = None,
        standardize: bool = True,
        start=None,
        maxiter: int | None = None,
        verbose: bool = False,
        solver: str = "auto",
    ):
        """Fit the model.

        Parameters
        ----------
        method : {"REML", "ML"}, optional
            Gaussian models: REML (default) or ML. Other families: ML only (Laplace or AGQ).
        nAGQ : int
            1 = Laplace; k > 1 = adaptive Gauss–Hermite with k nodes, for binomial and Poisson
            models with a single scalar random-effects term, k <= 100 (as in lme4).
        fast : bool
            GLMMs: optimise θ only, with β from PIRLS (lme4's ``nAGQ=0``; the seed's variant).
        optimizer : {"bobyqa", "lbfgsb", "nelder-mead", "powell"}, optional
            Default: BOBYQA (NLopt, as lme4), except for Gaussian models with three or more θ
            parameters whose factor has no dense crossed block, where L-BFGS-B with the analytic
            gradient of the profiled criterion converges in fewer, exact steps, and balanced
            designs whose moment start is REML's optimum, taken with no search once the
            convergence check confirms it. ``"lbfgsb"`` uses that gradient for every Gaussian
            model (finite differences for GLMMs); a named optimizer always searches.
        standardize : bool
            Centre and scale predictors internally (results are on the original scale).
        start : array-like, dict or MixedModelResults, optional
            Starting θ (lme4's ``start=``): a vector in ``res.theta``'s order, ``{"theta": ...}``,
            or an earlier fit of a model with the same random effects (its θ).
        maxiter : int, optional
            The most criterion evaluations of each optimizer run; a run stopped by it gives a
            ConvergenceWarning (lme4's ``optCtrl = list(maxfun = )``).
        verbose : bool
            Print a line per criterion evaluation (its number, value and parameters) on stderr.
        solver : {"auto", "direct", "iterative"}
            ``"direct"`` factors Λ'Z'WZΛ + I exactly (lme4's method); ``"iterative"`` never forms
            it: conjugate gradients over passes of the rows, with a stochastic estimate of the
            log-determinant's gradient whose Monte Carlo error the summary shows (crossed factors
            with tens of thousands of levels and more; see docs/theory.md). ``"auto"`` (default)
            is direct unless the exact factor's dense block would pass 5,000 random effects.

        Returns
        -------
        MixedModelResults
        """
        if self.design.response_name == NO_RESPONSE:
            raise FitError(
                "this model's formula has no response (it starts with '~'): fit it to responses with fit_many(Y)"
            )
        check_quadrature(nAGQ, fast, self.design, self.family)
        m = None if method is None else str(method).upper()
        control = FitControl(start=check_start(start, self.design), maxiter=check_maxiter(maxiter), verbose=verbose)
        chosen = choose_solver(solver, self.design, self.family, nAGQ, fast)
        try:
            with fit_control(control):
                if chosen == "iterative":
                    est = self._estimate_iterative(m, method, nAGQ, fast, optimizer, start, maxiter)
                else:
                    est = self._estimate(m, method, nAGQ, fast, optimizer, standardize)
        except MemoryError as exc:
            raise FitError(
                "the exact factorisation ran out of memory (crossed factors with many levels fill a dense "
                "block as large as the smaller factor's levels squared): fit with solver='iterative'"
            ) from exc
        except (np.linalg.LinAlgError, FloatingPointError) as exc:  # the engine's numerical failures
            raise FitError(
                f"the fit failed numerically ({type(exc).__name__}: {exc}); the data may not determine the "
                "model: look for a completely separated response, a predictor that is constant where the "
                "weights are positive, or too few rows per group"
            ) from exc
        if control.hit_limit:
            msg = f"the optimizer stopped at maxiter = {maxiter} evaluations before converging; raise maxiter"
            est.convergence.append(msg)
            warnings.warn("model failed to converge: " + msg, ConvergenceWarning, stacklevel=2)
        if est.singular:
            warnings.warn(SINGULAR_FIT, SingularFitWarning, stacklevel=2)
        options = {
            "method": m if self.family.is_lmm else None,
            "optimizer": optimizer,
            "standardize": standardize,
            "solver": solver,
        }
        if not self.family.is_lmm:
            options.update(nAGQ=nAGQ, fast=fast)
        if self.family.is_lmm and options["method"] is None:
            options["method"] = "REML"
        return MixedModelResults(self, est, fit_options=options)

    def _estimate_iterative(self, m, method, nAGQ, fast, optimizer, start, maxiter):
        """The iterative solver's estimates (:mod:`~midas_glmm.engine.iterative`)."""
        for name, value in (("optimizer", optimizer), ("start", start), ("maxiter", maxiter)):
            if value is not None:
                raise FitError(
                    f"{name}= applies to the direct solver; the iterative solver finds θ by its own "
                    "quasi-Newton iteration: drop it, or fit with solver='direct'"
                )
        if not self.family.is_lmm:
            if m not in (None, "ML", "LAPLACE"):
                raise FitError(f"method={method!r}: the iterative solver fits GLMMs by Laplace (method='ML')")
            return fit_glmm_iterative(self.design, self.family)
        m = m or "REML"
        if m not in ("REML", "ML"):
            raise FitError(f"unknown method '{method}' for a Gaussian model; use 'REML' or 'ML'")
        return fit_lmm_iterative(self.design, REML=(m == "REML"))

    def _estimate(self, m, method, nAGQ, fast, optimizer, standardize):
        """The engine's estimates: LMM (REML/ML) for Gaussian identity, Laplace/AGQ otherwise."""
        if self.family.is_lmm:
            m = m or "REML"
            if m not in ("REML", "ML"):
                raise FitError(f"unknown method '{method}' for a Gaussian model; use 'REML' or 'ML'")
            if nAGQ != 1 or fast:
                raise FitError("nAGQ and fast apply to non-Gaussian families only; a Gaussian LMM is fitted exactly")
            if self.design.disp is not None and self.design.disp.no_residual:
                return fit_lmm_without_residual(self.design, REML=(m == "REML"), optimizer=optimizer)
            if self.design.disp is not None:
                return fit_lmm_dispersion(
                    self.design, REML=(m == "REML"), optimizer=optimizer, standardize_X=standardize
                )
            return fit_lmm(self.design, REML=(m == "REML"), optimizer=optimizer, standardize_X=standardize)
        if m == "REML":
            raise FitError(
                f"method='REML' has no meaning for the {self.family.name} family; GLMMs are fitted by "
                "maximum likelihood (Laplace, or adaptive quadrature with nAGQ > 1); drop method="
            )
        if m not in (None, "ML", "LAPLACE", "AGQ"):
            raise FitError(f"unknown method '{method}'; GLMMs take method='ML' (the default)")
        return fit_glmm(self.design, self.family, nAGQ=nAGQ, fast=fast, optimizer=optimizer, standardize_X=standardize)


def _check_groups(design: Design, family: Family) -> None:
    for t in design.terms:
        if t.nlevels < 2:
            raise DataError(
                f"grouping factor '{t.group_name}' has only {t.nlevels} level; a random effect needs at "
                "least 2 groups (use a fixed effect, or drop the term)"
            )
        if family.is_lmm and t.nlevels >= design.nobs:
            raise DataError(
                f"grouping factor '{t.group_name}' has {t.nlevels} levels for {design.nobs} observations; "
                "in a Gaussian model each group needs more than one row, or its variance cannot be "
                "told apart from the residual variance"
            )
        # a correlated structure (cs, ar1, toep) is told apart from the residual by its correlation,
        # as glmmTMB fits ar1(0 + time | subject) with one row per random effect
        correlated = t.structured and t.structure.name not in ("diag",)
        if family.is_lmm and t.q >= design.nobs and not correlated:
            raise DataError(
                f"term {t.label} has {t.q} random effects for {design.nobs} observations; "
                "the random effects and the residual variance are unidentifiable: simplify the term"
            )
        if t.nlevels < FEW_GROUPS:
            warnings.warn(
                f"grouping factor '{t.group_name}' has only {t.nlevels} levels: its variance is poorly "
                "estimated and Wald intervals are too narrow; consider a fixed effect, or profile/bootstrap "
                "intervals",
                FewGroupsWarning,
                stacklevel=3,
            )
