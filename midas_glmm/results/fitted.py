"""MixedModelResults: the fitted model's estimates, with statsmodels' manners and lme4's numbers.

The class holds the estimates, their intervals, the variance components, predictions and
residuals. Everything else a user asks of a fit (tests, ANOVA tables, marginal means, R²,
simulation, profile and bootstrap intervals, plots) is a free function in
:mod:`midas_glmm.posthoc` that the method of the same name hands the result to.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from ..checks import check_interval_method, check_level, select_names
from ..design.daskdata import is_dask_frame
from ..design.formula import update_formula
from ..design.reterms import ThetaMap
from ..distributions import norm_ppf, norm_sf
from ..engine.estimates import Estimates
from ..engine.optimize import OPTIMIZERS
from ..errors import DataError, FitError
from ..families.mixture import zero_inflated_pearson
from ..posthoc import bootstrap, emmeans, hypotheses, prediction, profile, quantile_residuals, r2, ranova, simulate
from . import ordinal, persist, varcomp
from .summary import Summary

__all__ = ["MixedModelResults", "load"]

#: update()'s default for ziformula: the fit's own
KEEP = object()

#: what predict(kind=) gives: glmmTMB's type= names
KINDS = ("response", "link", "conditional", "zprob", "dispersion", *ordinal.ORDINAL_KINDS)


def _fit_options(est: Estimates, family) -> dict:
    """The settings a fit used, as far as its estimates tell them (model.fit's keywords)."""
    opts: dict = {"method": est.method if family.is_lmm else None}
    if not family.is_lmm:
        opts.update(nAGQ=est.nAGQ, fast=est.method == "nAGQ=0")
    optimizer = str(getattr(est.opt, "optimizer", "")).split("+")[0]  # "bobyqa+nelder-mead": a restart
    if optimizer in OPTIMIZERS:
        opts["optimizer"] = optimizer
    return opts


def _options_for(options: dict, family) -> dict:
    """A fit's settings that apply to a model of ``family``: an LMM takes method but not nAGQ
    and fast; a GLMM takes nAGQ and fast, and method only as "ML"."""
    kw = dict(options)
    if family.is_lmm:
        kw.pop("nAGQ", None)
        kw.pop("fast", None)
    elif str(kw.get("method")).upper() == "REML":
        kw["method"] = None
    return kw


class MixedModelResults:
    """Results of :meth:`MixedModel.fit`.

    Attributes
    ----------
    model : MixedModel
    params, bse, tvalues, pvalues : pandas.Series
        Fixed effects, standard errors, Wald z statistics and two-sided normal p-values.
    llf : float
        Log-likelihood (for REML fits the REML log-likelihood, as lme4's ``logLik``).
    theta : ndarray
        Relative covariance parameters in lme4's order.
    sigma : float
        Residual standard deviation (√φ for Gaussian and Gamma models; 1 for binomial and
        Poisson), or for NB2, NB1 and beta the dispersion itself (glmmTMB's ``sigma()``).
    fit_options : dict
        The settings the fit used (``method``, ``optimizer``, ``standardize``; for a GLMM also
        ``nAGQ`` and ``fast``): :meth:`refit` and the bootstrap fit again with them.
    estimates : Estimates
        The engine's record of the fit (random effects in the engine's level order, their
        conditional covariances, the optimizer's result).
    zi_params, zi_bse : pandas.Series or None
        The zero-inflation coefficients γ (logit of the probability of a structural zero) and
        their standard errors, glmmTMB's ``fixef(m)$zi``; None without a ziformula.
    disp_params, disp_bse : pandas.Series or None
        The dispersion formula's coefficients and their standard errors, glmmTMB's
        ``fixef(m)$disp`` on its scale: log φᵢ = (X_d γ)ᵢ with φ the residual variance σ² of a
        Gaussian model (glmmTMB 1.1.5's log σ², not log σ), nbinom2's size θ, nbinom1's φ,
        beta's precision φ; None without a dispformula.
    """

    def __init__(self, model, estimates: Estimates, fit_options: dict | None = None):
        self.model = model
        self.family = model.family
        self.design = model.design
        if estimates.row_weights is not None:  # a Gaussian dispersion model: an LMM with these weights
            self.design = replace(self.design, weights=estimates.row_weights, has_prior_weights=True)
        if estimates.terms is not None:  # the terms as fitted (one carrying the residual)
            self.design = replace(self.design, terms=estimates.terms)
        self.estimates = estimates
        self.method = estimates.method
        self.nAGQ = estimates.nAGQ
        self.theta = estimates.theta
        self.sigma = estimates.sigma
        self.dispersion = estimates.dispersion
        self.llf = estimates.llf
        self.singular = estimates.singular
        self.convergence_messages = list(estimates.convergence)
        self.notes = list(estimates.notes)
        self.fit_options = dict(fit_options) if fit_options is not None else _fit_options(estimates, self.family)
        disp = self.design.disp
        self.disp_params = self.disp_bse = None
        if disp is not None and estimates.disp_params is not None:
            self.disp_params = pd.Series(estimates.disp_params, index=disp.names, name="disp_params")
            var = np.diag(estimates.disp_vcov)
            self.disp_bse = pd.Series(np.sqrt(np.where(var > 0, var, np.nan)), index=disp.names, name="disp_bse")
        self.thresholds = self.threshold_bse = None
        if estimates.thresholds is not None:  # an ordinal model's τ (clmm's Theta)
            self.thresholds, self.threshold_bse = ordinal.threshold_series(self)
        zi = self.design.zi
        self.zi_params = self.zi_bse = None
        if zi is not None:
            self.zi_params = pd.Series(estimates.zi_params, index=zi.names, name="zi_params")
            var = np.diag(estimates.zi_vcov)  # NaN where a coefficient at the boundary has none
            self.zi_bse = pd.Series(np.sqrt(np.where(var > 0, var, np.nan)), index=zi.names, name="zi_bse")

    # ------------------------------------------------------------------ fixed effects
    # Built on first use (a fit whose caller reads only the log-likelihood, as a simulation may,
    # does not pay pandas' ~0.4 ms for them), then kept.
    @cached_property
    def params(self) -> pd.Series:
        """β̂, the fixed-effect estimates."""
        return pd.Series(self.estimates.beta, index=self.design.fixed_names, name="params")

    @cached_property
    def _vcov(self) -> pd.DataFrame:
        names = self.design.fixed_names
        return pd.DataFrame(self.estimates.vcov_beta, index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        """Standard errors of β̂: the square roots of the covariance's diagonal."""
        se = np.sqrt(np.diag(self.estimates.vcov_beta))
        return pd.Series(se, index=self.design.fixed_names, name="bse")

    @cached_property
    def tvalues(self) -> pd.Series:
        """Wald statistics β̂ / SE (named ``z``)."""
        return (self.params / self.bse).rename("z")

    @cached_property
    def pvalues(self) -> pd.Series:
        """Two-sided normal p-values of the Wald statistics."""
        p = 2 * norm_sf(np.abs(self.tvalues.to_numpy()))
        return pd.Series(p, index=self.design.fixed_names, name="P>|z|")

    # ------------------------------------------------------------------ basic numbers
    @property
    def nobs(self) -> int:
        """Number of observations used (after dropping rows with missing values)."""
        return self.design.nobs

    @property
    def n_dropped(self) -> int:
        """Rows dropped because a used column had a missing value."""
        return self.design.n_dropped

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        out: dict[str, int] = {}
        for t in self.design.terms:
            out.setdefault(t.group_name, t.nlevels)
        return out

    @property
    def solver(self) -> str:
        """The engine that fitted the model: ``"direct"`` (the exact factorisation, lme4's method)
        or ``"iterative"`` (conjugate gradients and stochastic traces; see :attr:`solver_error`)."""
        return "direct" if self.estimates.solver is None else "iterative"

    @property
    def solver_error(self) -> pd.Series | None:
        """The iterative solver's Monte Carlo standard errors (from its random probes) of the SDs
        and correlations (:meth:`varcorr`'s order, lme4's ``sd_(Intercept)|g`` names), of a
        GLMM's fixed effects and of the log-likelihood: the approximation's own error, beside
        the statistical SEs; None for a direct fit."""
        info = self.estimates.solver
        if info is None:
            return None
        names = ThetaMap(self.design.terms).sdcor_names()[:-1]
        values = list(info.sdcor_mc_se[: len(names)])
        beta_se = getattr(info, "beta_mc_se", None)  # a GLMM's β comes from the probed gradient too
        if beta_se is not None:
            names, values = names + list(self.params.index), values + list(beta_se)
        return pd.Series(values + [info.llf_mc_se], index=names + ["logLik"], name="mc_se")

    @property
    def df_modelwc(self) -> int:
        """Number of estimated parameters (β, θ and the scale where there is one)."""
        return self.estimates.n_params

    @property
    def converged(self) -> bool:
        """True if the optimizer and the gradient check raised no concern."""
        return not self.convergence_messages

    @property
    def is_reml(self) -> bool:
        return self.method == "REML"

    @property
    def reml_criterion(self) -> float | None:
        """REML criterion −2ℓ_R (REML fits only)."""
        return self.estimates.criterion if self.is_reml else None

    @property
    def minus2llf(self) -> float:
        """−2 × :attr:`llf`: lme4's ``-2 * logLik(m)``.

        For an ML fit of an LMM this is also the deviance; for a REML fit it is the REML
        criterion; for a GLMM it is the Laplace (or AGQ) approximation of −2ℓ, the number lme4's
        ``summary`` and ``anova`` print in their "deviance" column."""
        return -2.0 * self.llf

    @cached_property
    def deviance(self) -> float | None:
        """The deviance as lme4's ``deviance()`` returns it; None for REML fits.

        ML fits of LMMs: −2ℓ. GLMMs: Σᵢ wᵢ d(yᵢ, μ̂ᵢ), the family's unit deviances (weighted by
        the prior weights, trials for binomial counts) at the conditional fitted values, i.e.
        the sum of the squared deviance residuals. This is not −2ℓ: that is :attr:`minus2llf`.

        Examples
        --------
        >>> from midas_glmm import MixedModel, datasets
        >>> cbpp = datasets.load("cbpp")
        >>> res = MixedModel.from_formula("cbind(incidence, size - incidence) ~ C(period) + (1|herd)",
        ...                               cbpp, family="binomial").fit()
        >>> print(f"{res.deviance:.2f} {res.minus2llf:.2f}")  # lme4: deviance(m), -2 * logLik(m)
        73.47 184.05
        """
        if self.is_reml:
            return None
        if self.family.is_lmm:
            return self.minus2llf
        if self.design.zi is not None:
            raise FitError(
                "deviance() is not defined for a zero-inflated model (the mixture has no unit deviance); "
                "use minus2llf (-2 logLik) or aic()"
            )
        src = self.design.source
        if src is None:
            d = self.design
            return self.family.deviance(d.y, self.fittedvalues.to_numpy(), d.weights, self.dispersion)

        def unit_deviances(rows):
            y, _, w, *_ = src.rows(rows, with_terms=False)
            return self.family.resid_dev(y, self.predict(rows), w, self.dispersion) ** 2

        return float(src.map_rows(unit_deviances, "deviance").sum().compute())

    def aic(self) -> float:
        """AIC = −2ℓ + 2k (for REML fits on the REML log-likelihood, as lme4)."""
        return -2.0 * self.llf + 2.0 * self.df_modelwc

    def bic(self) -> float:
        """BIC = −2ℓ + k log n."""
        return -2.0 * self.llf + np.log(self.nobs) * self.df_modelwc

    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects."""
        return self._vcov.copy()

    def zi_vcov(self) -> pd.DataFrame:
        """Covariance matrix of the zero-inflation coefficients (glmmTMB's ``vcov(m)$zi``)."""
        if self.zi_params is None:
            raise FitError("this model has no zero-inflation part (no ziformula=)")
        names = self.zi_params.index
        return pd.DataFrame(self.estimates.zi_vcov, index=names, columns=names)

    # ------------------------------------------------------------------ intervals
    def conf_int(
        self, alpha: float = 0.05, method: str = "wald", level: float | None = None, which=None, **options
    ) -> pd.DataFrame:
        """Confidence intervals.

        Parameters
        ----------
        alpha : float
            1 − coverage (ignored when ``level`` is given).
        method : {"wald", "profile", "bootstrap"}
            ``"wald"``: fixed effects, normal reference (the seed's default). ``"profile"``:
            profile likelihood for variance components (SDs, correlations, sigma) and fixed
            effects, as lme4's ``confint(method = "profile")``. ``"bootstrap"``: parametric
            bootstrap percentiles, as lme4's ``confint(method = "boot")``.
        level : float, optional
            Coverage, e.g. 0.95.
        which : str or list of str, optional
            The parameters wanted (lme4's ``parm``), named as in the full table; all by default.
        **options
            Bootstrap only: ``n_boot``, ``seed``, ``n_jobs``, ``progress``.

        Returns
        -------
        DataFrame
            Columns ``lower`` and ``upper``, one row per parameter.

        Examples
        --------
        >>> from midas_glmm import MixedModel, datasets
        >>> res = MixedModel.from_formula("Reaction ~ Days + (Days | Subject)",
        ...                               datasets.load("sleepstudy")).fit()
        >>> res.conf_int(which="Days").round(2)
              lower  upper
        Days   7.44   13.5
        >>> res.conf_int(which="Day")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        midas_glmm.errors.FitError: conf_int(method='wald'): no parameter 'Day'; did you mean 'Days'? ...
        """
        if level is None:
            level = 1 - check_level(alpha, "alpha", "0.05 for 95% intervals")
        level = check_level(level)
        key = check_interval_method(method, options)
        if key == "wald":
            varpar = ThetaMap(self.design.terms).sdcor_names()
            names = select_names(which, list(self.params.index), "wald", elsewhere=varpar)
            z = norm_ppf(0.5 + level / 2)
            ci = pd.DataFrame({"lower": self.params - z * self.bse, "upper": self.params + z * self.bse})
            return ci.loc[names]
        if key == "profile":
            return profile.profile_ci(self, level=level, which=which)
        return bootstrap.bootstrap_ci(self, level=level, which=which, **options)

    # ------------------------------------------------------------------ variance components
    def term_covariances(self) -> list[np.ndarray]:
        """Σ_t = σ² λ_t λ_t' for each random-effects term (σ² = 1 for GLMMs: their λ is on the link scale)."""
        return ThetaMap(self.design.terms).covariances(self.theta, self.sigma**2 if self.family.is_lmm else 1.0)

    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(m))``.

        Columns grp, var1, var2, vcov (variance or covariance), sdcor (SD or correlation):
        variances first, then covariances within each term, then the residual.
        """
        # NB and beta's φ is no residual SD; a dispersion model's residual SD differs by row
        residual = self.sigma if self.family.residual_scale and self.design.disp is None else None
        return varcomp.varcorr_frame(self.design.terms, self.term_covariances(), residual)

    def structure_params(self) -> pd.DataFrame:
        """Each random-effects term's own parameters on their natural scale: SDs, correlations,
        ar1's and cs's ρ, toep's lag correlations (columns grp, structure, parameter,
        estimate), indexed as :meth:`conf_int`'s profile and bootstrap rows (``rho|Subject``)."""
        scale = self.sigma if self.family.is_lmm else 1.0
        return varcomp.structure_frame(self.design.terms, self.theta, scale)

    def ranef(self, condvar: bool = False):
        """Random effects: BLUPs (LMM) or conditional modes (GLMM).

        Returns
        -------
        dict or DataFrame
            ``condvar=False``: dict grouping factor → DataFrame (levels × terms), terms on the
            same factor (e.g. from ``(x || g)``) side by side, as lme4's ``ranef``.
            ``condvar=True``: long DataFrame with lme4's columns grpvar, term, grp, condval, condsd.
        """
        if condvar:
            return varcomp.ranef_long(self.design.terms, self.estimates.b, self.estimates.condvar)
        return varcomp.ranef_frames(self.design.terms, self.estimates.b)

    def icc(self, latent_variance: float | None = None) -> pd.Series:
        """Intraclass correlation per grouping factor: σ²_g / (Σ_h σ²_h + σ²_e).

        Uses the intercept variance of each factor (the ICC at covariates = 0 for slope models).
        σ²_e is the residual variance for Gaussian models and the latent-scale variance
        otherwise (the seed's table: π²/3 for binomial-logit, 1 for Poisson-log, φ for Gamma-log);
        pass ``latent_variance`` to use another convention.
        """
        vc = self.varcorr()
        if varcomp.intercept_rows(vc).empty:
            raise FitError("icc() needs a random intercept; this model has none")
        if latent_variance is not None:
            if not isinstance(latent_variance, (int, float, np.number)) or not latent_variance >= 0:
                raise FitError(f"latent_variance must be a non-negative number, not {latent_variance!r}")
            resid = float(latent_variance)
        elif self.design.disp is not None:
            raise FitError(
                f"icc() needs one residual variance, and this model's differs by row ({self.design.disp.formula}); "
                "pass latent_variance= to choose one (predict(kind='dispersion') gives each row's)"
            )
        elif self.family.is_lmm:
            resid = self.sigma**2
        elif self.design.zi is not None:
            raise FitError(
                "icc() has no latent-scale residual variance for a zero-inflated model (the structural zeros "
                "are outside the latent scale); pass latent_variance= to use a convention of your own"
            )
        else:
            resid = self.family.latent_variance(self.dispersion)
        return varcomp.icc_of(vc, resid)

    def design_effect(self) -> pd.Series:
        """Design effect per grouping factor, DEFF = 1 + (n̄ − 1)·ICC with n̄ = n / groups."""
        icc = self.icc()
        nbar = pd.Series({g: self.nobs / self.ngroups[g] for g in icc.index})
        out = 1 + (nbar - 1) * icc
        out.name = "DEFF"
        return out

    # ------------------------------------------------------------------ prediction
    def predict(
        self, newdata: pd.DataFrame | None = None, random_effects: bool = True, kind: str | None = None
    ) -> np.ndarray:
        """Predictions, conditional on the random effects or marginal (population level).

        Parameters
        ----------
        newdata : DataFrame, optional
            Defaults to the fitted rows. A level of a grouping factor the fit did not see, or a
            missing one, gets a zero random effect (lme4's ``allow.new.levels=TRUE``). Levels are
            matched by value: 3, 3.0 and "3" name the same group (lme4 compares levels as text,
            where 3.0 is "3"). A level of a categorical predictor the fit did not see is an error
            (:class:`~midas_glmm.errors.DataError`); a row with a missing predictor gets NaN.
        random_effects : bool
            False gives lme4's ``re.form=NA``.
        kind : {"response", "link", "conditional", "zprob", "dispersion", "prob", "cum_prob", "class"}
            Defaults to "response" ("prob" for an ordinal model). The mean of y, the linear
            predictor, the conditional model's mean μ, the probability of a structural zero π
            and the dispersion (glmmTMB's ``type=``, "disp").
            The first three differ for zero-inflated models only: there "response" is
            (1 − π) μ; elsewhere "conditional" is "response" and π is 0. The dispersion is
            glmmTMB's ``sigma()`` per row: the residual SD σᵢ (Gaussian), nbinom2's size θᵢ,
            nbinom1's φᵢ, beta's precision φᵢ; one value for a model without a dispformula.
            An ordinal model predicts "prob" (a DataFrame, rows × categories: clmm's
            ``predict(type = "prob")`` for each category), "cum_prob" (P(Y ≤ j)), "class" (the
            most probable category) or "link" (η = x'β + z'b, P(Y ≤ j) = F(τ_j − η)).

        Returns
        -------
        ndarray
            One prediction per row of ``newdata`` (a lazy Dask series for Dask data); a
            DataFrame or Series for an ordinal model's categories.

        Examples
        --------
        >>> import pandas as pd
        >>> from midas_glmm import MixedModel, datasets
        >>> res = MixedModel.from_formula("Reaction ~ Days + (Days | Subject)",
        ...                               datasets.load("sleepstudy")).fit()
        >>> new = pd.DataFrame({"Days": [2, 2, 2], "Subject": ["308", 308, "someone new"]})
        >>> [round(float(v), 2) for v in res.predict(new)]  # "308" and 308 are one subject (lme4: 293.00)
        [293.0, 293.0, 272.34]
        """
        if kind is None:
            kind = "prob" if self.family.thresholds else "response"
        if kind not in KINDS:
            raise FitError(f"kind must be one of {', '.join(repr(k) for k in KINDS)}, not '{kind}'")
        if newdata is None and self.design.source is not None:  # lazily, partition by partition
            return self.design.source.map_rows(lambda rows: self.predict(rows, random_effects, kind), "predicted")
        if is_dask_frame(newdata):
            return newdata.map_partitions(
                lambda part: pd.Series(self.predict(part, random_effects, kind), index=part.index, name="predicted"),
                meta=pd.Series(dtype=float, name="predicted"),
            )
        if kind == "zprob":
            return self.zi_probability(newdata)
        if kind == "dispersion":
            return self.dispersion_of_rows(newdata)
        if self.family.thresholds:  # an ordinal model: the categories
            if kind not in ordinal.ORDINAL_KINDS + ("link",):
                ordinal.refuse_kind(kind)
            eta = self._linear_predictor(newdata, random_effects)
            if kind == "link":
                return eta
            index = self.design.row_index if newdata is None else newdata.index
            return ordinal.predict_categories(self, eta, index, kind)
        if kind in ordinal.ORDINAL_KINDS:
            raise FitError(
                f"kind='{kind}' is for ordinal models (family='ordinal'); this is a {self.family.name} model"
            )
        eta = self._linear_predictor(newdata, random_effects)
        if kind == "link" or self.family.is_lmm:
            return eta
        mu = self.family.linkinv(eta)
        if kind == "response" and self.design.zi is not None:  # E[y] = (1 − π) μ
            return (1.0 - self.zi_probability(newdata)) * mu
        return mu

    def _linear_predictor(self, data: pd.DataFrame | None, random_effects: bool) -> np.ndarray:
        """η = Xβ̂ + offset + Σ_t Z_t b̂_t on the rows, lme4's way: NaN where a predictor is missing
        (na.pass), a zero random effect for a level the fit did not see (allow.new.levels)."""
        rows = self.design.replay(data, random_effects)
        eta = rows.X @ self.params.to_numpy() + rows.offset
        for (_t, Z, pos), b in zip(rows.terms, self.estimates.b):
            eta = eta + np.where(pos >= 0, np.einsum("ij,ij->i", Z, b[np.maximum(pos, 0)]), 0.0)
        if data is None:
            return eta
        out = np.full(len(data), np.nan)
        out[rows.complete] = eta
        return out

    def dispersion_of_rows(self, newdata: pd.DataFrame | None = None) -> np.ndarray:
        """glmmTMB's ``predict(type = "disp")``: each row's dispersion on the scale of
        ``sigma()`` (see :meth:`predict`; NaN for a new row missing a dispformula variable)."""
        disp = self.design.disp
        n = self.design.nobs if newdata is None else len(newdata)
        if disp is not None and disp.no_residual:  # no residual
            return np.zeros(n)
        if disp is None or self.disp_params is None:
            return np.full(n, self.sigma if self.family.has_dispersion else 1.0)
        gamma = self.disp_params.to_numpy()
        if newdata is None:
            return self.family.sigma_of(np.exp(disp.X @ gamma))
        complete, X = self.design.dispersion_on(newdata)
        out = np.full(n, np.nan)
        out[complete] = self.family.sigma_of(np.exp(X @ gamma))
        return out

    def zi_probability(self, newdata: pd.DataFrame | None = None) -> np.ndarray:
        """π, the probability of a structural zero, per row (0 without a ziformula; NaN for a
        new row missing one of its variables)."""
        zi = self.design.zi
        if zi is None:
            return np.zeros(self.design.nobs if newdata is None else len(newdata))
        if newdata is None:
            return special.expit(zi.X @ self.zi_params.to_numpy())
        complete, X = self.design.zero_inflation_on(newdata)
        out = np.full(len(newdata), np.nan)
        out[complete] = special.expit(X @ self.zi_params.to_numpy())
        return out

    def get_prediction(self, newdata: pd.DataFrame | None = None, random_effects: bool = True):
        """Predictions with their standard errors and intervals (statsmodels' ``get_prediction``);
        ``.summary_frame(alpha)`` gives mean, mean_se, mean_ci_lower, mean_ci_upper (and for
        Gaussian models obs_ci_lower, obs_ci_upper). See
        :class:`~midas_glmm.posthoc.prediction.Prediction` for the variances used."""
        if self.design.zi is not None:
            raise FitError(
                "get_prediction() is not available for zero-inflated models yet (the mean (1 - pi) mu needs the "
                "zero-inflation's uncertainty too); predict(kind=...) gives the point predictions"
            )
        return prediction.Prediction.of(self, newdata, random_effects)

    # ------------------------------------------------------------------ residuals
    @cached_property
    def fittedvalues(self) -> pd.Series:
        """Fitted values on the response scale, conditional on the random effects: μ̂, or the
        mean (1 − π̂)μ̂ of a zero-inflated model (glmmTMB's ``fitted()``); a lazy Dask series for
        Dask data."""
        if self.design.source is not None:
            return self.predict()
        if self.family.thresholds:  # clmm's fitted(): the probability of the observed category
            values = ordinal.observed_probability(self, self._linear_predictor(None, True))
            return pd.Series(values, index=self.design.row_index, name="fitted")
        return pd.Series(self.predict(), index=self.design.row_index, name="fitted")

    @cached_property
    def resid(self) -> pd.Series:
        """Response residuals y − fitted (a lazy Dask series for Dask data)."""
        if self.family.thresholds:
            self.family.pearson_residuals(None, None, None, None)  # an ordinal response has none: it says so
        src = self.design.source
        if src is not None:
            return src.map_rows(lambda rows: src.response(rows) - self.predict(rows), "resid")
        return pd.Series(self.design.y - self.fittedvalues.to_numpy(), index=self.design.row_index, name="resid")

    @cached_property
    def resid_pearson(self) -> pd.Series:
        """Pearson residuals √wᵢ (yᵢ − μ̂ᵢ)/√V(μ̂ᵢ) at the conditional fitted values, unscaled by
        σ or φ: lme4's ``residuals(m, type = "pearson")`` (for an LMM, √wᵢ (yᵢ − μ̂ᵢ)).
        Zero-inflated: with the mixture's mean (1 − π)μ and variance (1 − π)(V(μ) + πμ²), as glmmTMB."""
        return self._residuals("pearson")

    @cached_property
    def resid_deviance(self) -> pd.Series:
        """Deviance residuals sign(yᵢ − μ̂ᵢ) √(wᵢ d(yᵢ, μ̂ᵢ)): lme4's ``residuals(m)`` for GLMMs
        (for an LMM they equal the Pearson residuals); their squares sum to :attr:`deviance`."""
        return self._residuals("deviance")

    def _residuals(self, kind: str) -> pd.Series:
        src = self.design.source
        if src is not None:

            def rows(part):
                y, _, w, *_ = src.rows(part, with_terms=False)
                return self._scaled_residuals(kind, y, self.predict(part), w)

            return src.map_rows(rows, f"resid_{kind}")
        d = self.design
        values = self._scaled_residuals(kind, d.y, self.fittedvalues.to_numpy(), d.weights)
        return pd.Series(values, index=d.row_index, name=f"resid_{kind}")

    def _scaled_residuals(self, kind: str, y, mu, w) -> np.ndarray:
        fam = self.family
        if self.design.zi is None:
            residuals = fam.pearson_residuals if kind == "pearson" else fam.deviance_residuals
            return residuals(y, mu, w, self.dispersion)
        if kind != "pearson":
            raise FitError(
                "deviance residuals are not defined for a zero-inflated model (the mixture has no unit "
                "deviance); use resid_pearson, resid or simulate_residuals()"
            )
        mu_c = self.predict(kind="conditional")
        return zero_inflated_pearson(y, mu_c, self.zi_probability(), fam.variance(mu_c, self.dispersion), w)

    # ------------------------------------------------------------------ post-hoc (posthoc/)
    def coef_table(self, ddf: str = "normal", level: float = 0.95) -> pd.DataFrame:
        """Fixed effects with tests: estimate, std_err, df, statistic, p_value, ci_low, ci_high.

        ``ddf="normal"`` (Wald z, the default), ``"satterthwaite"`` (lmerTest) or
        ``"kenward-roger"`` (pbkrtest; also adjusts the standard errors). LMMs only for the latter two.
        """
        return hypotheses.coef_table(self, ddf=ddf, level=level)

    def anova(self, type: int = 3, ddf: str | None = None) -> pd.DataFrame:
        """ANOVA table, one row per fixed-effect term. LMMs: ``Sum Sq``, ``Mean Sq``, ``NumDF``,
        ``DenDF``, ``F value``, ``Pr(>F)`` as ``lmerTest::anova(m, type=, ddf=)`` (``ddf``:
        ``"satterthwaite"``, the default, or ``"kenward-roger"``; type 1:
        sequential; type 3: lmerTest's marginal hypotheses, interactions included, for
        treatment-coded factors); GLMMs: Wald ``Chisq``, ``Df``, ``Pr(>Chisq)`` as
        ``car::Anova(m, type = 3)``. To compare models use :func:`midas_glmm.compare`
        (likelihood-ratio tests)."""
        return hypotheses.anova_table(self, type=type, ddf=ddf)

    def drop1(self, ddf: str | None = None) -> pd.DataFrame:
        """F tests of dropping each fixed-effect term that marginality allows, as
        ``lmerTest::drop1(m)`` (LMMs; same columns as :meth:`anova`)."""
        return hypotheses.drop1_table(self, ddf=ddf)

    def wald_test(self, L, rhs=None, ddf: str | None = None) -> pd.Series:
        """Joint test of Lβ = rhs (``L``: one row per restriction, one column per fixed effect,
        a DataFrame's columns matched to the coefficients by name): an F test with Satterthwaite
        (the default) or Kenward–Roger df for LMMs (lmerTest's ``contest``), a Wald chi-square
        for GLMMs or ``ddf="asymptotic"``."""
        return hypotheses.contrast_test(self, L, rhs=rhs, ddf=ddf)

    def t_test(self, L, rhs=None, ddf: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """One t test per row of L (z tests for GLMMs), Satterthwaite df by default: estimate,
        std_err, df, statistic, p_value, ci_low, ci_high (lmerTest's ``contest(joint = FALSE)``)."""
        return hypotheses.contrast_t(self, L, rhs=rhs, ddf=ddf, level=level)

    def emmeans(self, specs, by=None, ddf=None, type: str = "link", level: float = 0.95) -> pd.DataFrame:
        """Estimated marginal means of ``specs`` (factor column names) within ``by``, as
        ``emmeans::emmeans(m, specs, by)``: the factor columns, emmean, SE, df, lower.CL,
        upper.CL. LMMs: Kenward–Roger df by default (emmeans' ``lmer.df``), or
        ``ddf="satterthwaite"`` / ``"asymptotic"``; GLMMs: the link scale, or
        ``type="response"`` (:mod:`midas_glmm.posthoc.emmeans`)."""
        return emmeans.emmeans(self, specs, by=by, ddf=ddf, type=type, level=level)

    def contrasts(self, specs, method: str = "pairwise", adjust=None, by=None, ddf=None) -> pd.DataFrame:
        """Contrasts of the estimated marginal means (``pairwise``, ``trt.vs.ctrl``, ``poly``) with
        p-values adjusted by ``tukey`` (pairwise's default), ``holm``, ``bonferroni`` or ``none``
        (poly's default), as ``emmeans::contrast(emmeans(m, specs, by), method, adjust)``."""
        return emmeans.emm_contrasts(self, specs, method=method, adjust=adjust, by=by, ddf=ddf)

    def ranova(self) -> pd.DataFrame:
        """Likelihood-ratio test of each random term reduced (slopes to an intercept, an
        intercept removed), as ``lmerTest::ranova(m)``: rows ``<none>`` and one per term;
        columns npar, logLik, AIC, LRT, Df, Pr(>Chisq) (:mod:`midas_glmm.posthoc.ranova`)."""
        return ranova.ranova(self)

    def r2(self) -> pd.Series:
        """Nakagawa's marginal and conditional R² (Nakagawa, Johnson & Schielzeth 2017), as
        ``performance::r2_nakagawa``.

        With σ²_f the variance of the fixed-effects predictions Xβ̂ (n − 1 denominator), σ²_r the
        random effects' mean variance Σ_t mean_i(z_ti' Σ_t z_ti) (Johnson 2014: the variance of
        a random intercept, plus the slopes' share at the observed covariates) and σ²_d the
        distribution-specific variance — σ̂² for Gaussian models, π²/3 for logit and 1 for
        probit binomial models, log(1 + 1/λ) for Poisson log models (the lognormal
        approximation, λ = exp(β̂₀ + σ²_r/2) from the intercept-only model with the same random
        effects, refitted here) — marginal R² = σ²_f/(σ²_f + σ²_r + σ²_d) and conditional R² =
        (σ²_f + σ²_r)/(σ²_f + σ²_r + σ²_d).
        """
        return r2.nakagawa(self)

    def simulate(self, n: int = 1, seed=None, random_effects: str = "marginal") -> np.ndarray:
        """``n`` responses simulated from the fit (``nobs × n``); new random effects unless
        ``random_effects="conditional"``. An ordinal model's are its levels."""
        out = simulate.simulate(self, n=n, seed=seed, random_effects=random_effects)
        if self.family.thresholds:
            return np.asarray(self.design.response_levels, dtype=object)[out.astype(np.int64)]
        return out

    def simulate_residuals(self, n: int = 250, seed=None):
        """Scaled (quantile) residuals from ``n`` simulations of the fit, as R's DHARMa:
        uniform on (0, 1) for a correctly specified model, with tests for uniformity,
        dispersion and zero-inflation and a plot (:mod:`midas_glmm.posthoc.quantile_residuals`)."""
        return quantile_residuals.simulate_residuals(self, n=n, seed=seed)

    # ------------------------------------------------------------------ refit, update, save
    def refit(self, new_response=None, method: str | None = None, **fit_kwargs) -> MixedModelResults:
        """Fit the same model again with the settings of this fit (:attr:`fit_options`: method,
        nAGQ, fast, optimizer), changing only those given, e.g. ``refit(method="ML")`` before
        comparing fixed effects.

        ``new_response`` (MixedModels.jl's ``refit!``): one value per row the model used, on the
        scale of its response (proportions for binomial models with trials); the design, its
        grouping and the factor's structure are reused, only the response changes."""
        if isinstance(new_response, str):  # refit("ML"): the method, positionally
            new_response, method = None, new_response
        kw = dict(self.fit_options)
        if method is not None:
            kw["method"] = method
        kw.update(fit_kwargs)
        model = self.model if new_response is None else self.model.with_response(new_response)
        return model.fit(**kw)

    def update(
        self,
        formula: str | None = None,
        data=None,
        ziformula=KEEP,
        family=KEEP,
        dispformula=KEEP,
        **fit_kwargs,
    ) -> MixedModelResults:
        """lme4's ``update()``: the model again with a changed formula (``"~ . + x"``,
        ``". ~ . - (1 | g) + (x | g)"``: ``.`` is the current response or terms) and/or other
        data, another ``ziformula`` or ``dispformula`` (None for none) or another ``family`` (lme4's
        ``update(m, family = binomial)``), fitted with this fit's settings changed only where
        given (``method="ML"``); settings the new family has no use for are left out (an LMM's
        REML for a GLMM; nAGQ and fast for an LMM)."""
        src = self.model.built_from
        if src is None:
            raise FitError(
                "update() rebuilds the model from its formula and data, and this model has none to rebuild from "
                "(built from arrays, or its response replaced by refit() or fit_many); build it with "
                "MixedModel.from_formula on a DataFrame that holds the response"
            )
        if isinstance(src.get("data"), persist.RemovedRows) and data is None:
            raise FitError("this result was saved without its data: pass data= to update()")
        new_formula = src["formula"] if formula is None else update_formula(src["formula"], formula)
        model = type(self.model).from_formula(
            new_formula,
            src["data"] if data is None else data,
            family=self.family if family is KEEP else family,
            weights=src["weights"],
            offset=src["offset"],
            ziformula=src.get("ziformula") if ziformula is KEEP else ziformula,
            dispformula=src.get("dispformula") if dispformula is KEEP else dispformula,
        )
        kw = _options_for(self.fit_options, model.family)
        kw.update(fit_kwargs)
        return model.fit(**kw)

    def save(self, path, remove_data: bool = True) -> None:
        """Save this result (a pickle; :func:`midas_glmm.load` reads it back). ``remove_data``
        leaves out every row-sized array: the result keeps its estimates and can still
        ``predict(newdata)``; what needs the rows then says so (:mod:`midas_glmm.results.persist`)."""
        persist.save(self, path, remove_data=remove_data)

    # ------------------------------------------------------------------ statsmodels' names
    @property
    def fe_params(self) -> pd.Series:
        """The fixed effects (statsmodels' name for :attr:`params`)."""
        return self.params

    @property
    def cov_re(self):
        """Covariance of the random effects (statsmodels' name): a DataFrame for a model with one
        random term, else a dict term label → DataFrame (see :meth:`term_covariances`)."""
        terms = self.design.terms
        frames = {
            label: pd.DataFrame(S, index=t.columns, columns=t.columns)
            for label, t, S in zip(varcomp.term_labels(terms), terms, self.term_covariances())
        }
        return next(iter(frames.values())) if len(frames) == 1 else frames

    @property
    def random_effects(self) -> dict:
        """The random effects as statsmodels gives them: level → Series of that level's effects
        for a model with one grouping factor; else factor → (level → Series)."""
        out = {g: {lev: row for lev, row in frame.iterrows()} for g, frame in self.ranef().items()}
        return next(iter(out.values())) if len(out) == 1 else out

    # ------------------------------------------------------------------ display
    def summary(self, alpha: float = 0.05, ddf: str = "normal", anova: bool = False) -> Summary:
        """A printable summary (``print(res.summary())``; HTML in notebooks).

        ``ddf`` chooses the fixed-effects tests, as in :meth:`coef_table`; ``anova=True`` adds
        the type 3 table of :meth:`anova` (Satterthwaite df unless ``ddf="kenward-roger"``)."""
        return Summary.of(self, alpha=alpha, ddf=ddf, anova=anova)

    def __repr__(self) -> str:
        return f"<MixedModelResults: {self.design.formula}, {self.method}, llf={self.llf:.4f}>"

    def __setstate__(self, state: dict) -> None:
        if "_est" in state:  # saved before the estimates were public (0.1.0, 2026-11)
            state["estimates"] = state.pop("_est")
        state.pop("_anova_cache", None)
        state.setdefault("disp_params", None)  # saved before dispersion models (0.1.0)
        state.setdefault("disp_bse", None)
        state.setdefault("thresholds", None)  # saved before ordinal models (0.1.0)
        state.setdefault("threshold_bse", None)
        self.__dict__.update(state)


def load(path) -> MixedModelResults:
    """A result saved by :meth:`MixedModelResults.save`.

    The file is a Python pickle, and loading a pickle can run any code it holds: load only files
    you trust (your own saves). A file that is truncated or not a saved result is a
    :class:`~midas_glmm.errors.DataError`."""
    obj = persist.read(path)
    if not isinstance(obj, MixedModelResults):
        raise DataError(
            f"{path} does not hold a midas_glmm result (it holds a {type(obj).__name__}); "
            "load only files saved by res.save() that you trust"
        )
    return obj
