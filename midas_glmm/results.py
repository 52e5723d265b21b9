"""MixedModelResults: the fitted model's estimates, with statsmodels' manners and lme4's numbers."""

from __future__ import annotations

import numbers
import re
import warnings
from functools import cached_property, partial

import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning, FormulaicError
from scipy import special, stats

from .design import _formulaic_names, eval_expression, fixed_matrix, random_columns
from .errors import DataError, FitError, did_you_mean
from .estimates import Estimates
from .optimize import OPTIMIZERS
from .persist import RemovedRows
from .reterms import ThetaMap

__all__ = ["MixedModelResults"]

#: update()'s default for ziformula: the fit's own
KEEP = object()

#: what predict(kind=) gives: glmmTMB's type= names
KINDS = ("response", "link", "conditional", "zprob")


def _fit_options(est: Estimates, family) -> dict:
    """The settings a fit used, as far as its estimates tell them (model.fit's keywords)."""
    opts: dict = {"method": est.method if family.is_lmm else None}
    if not family.is_lmm:
        opts.update(nAGQ=est.nAGQ, fast=est.method == "nAGQ=0")
    optimizer = str(getattr(est.opt, "optimizer", "")).split("+")[0]  # "bobyqa+nelder-mead": a restart
    if optimizer in OPTIMIZERS:
        opts["optimizer"] = optimizer
    return opts


def _in_level_order(t, b: np.ndarray, sd: np.ndarray | None = None):
    """(b, sd, levels) of a term in its levels' original order (the factorisation may have
    reordered them: ReTerm.display)."""
    if t.display is None:
        return b, sd, t.levels
    d = t.display
    return b[d], None if sd is None else sd[d], t.levels[d]


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
        Residual standard deviation (1 for binomial and Poisson; sqrt(φ) for Gamma).
    fit_options : dict
        The settings the fit used (``method``, ``nAGQ``, ``fast``, ``optimizer``): :meth:`refit`
        and the bootstrap fit again with them.
    """

    def __init__(self, model, estimates: Estimates, fit_options: dict | None = None):
        self.model = model
        self.family = model.family
        self.design = model.design
        self._est = estimates
        self.method = estimates.method
        self.nAGQ = estimates.nAGQ
        self.theta = estimates.theta
        self.sigma = estimates.sigma
        self.dispersion = estimates.dispersion
        self.llf = estimates.llf
        self.singular = estimates.singular
        self.convergence_messages = list(estimates.convergence)
        self.notes = list(estimates.notes)
        names = self.design.fixed_names
        self.params = pd.Series(estimates.beta, index=names, name="params")
        self._vcov = pd.DataFrame(estimates.vcov_beta, index=names, columns=names)
        self.bse = pd.Series(np.sqrt(np.diag(estimates.vcov_beta)), index=names, name="bse")
        self.tvalues = self.params / self.bse
        self.tvalues.name = "z"
        self.pvalues = pd.Series(2 * stats.norm.sf(np.abs(self.tvalues)), index=names, name="P>|z|")
        self.fit_options = dict(fit_options) if fit_options is not None else _fit_options(estimates, self.family)
        zi = self.design.zi
        #: the zero-inflation coefficients γ (logit of the probability of a structural zero) and
        #: their standard errors, glmmTMB's ``fixef(m)$zi``; None without a ziformula
        self.zi_params = self.zi_bse = None
        if zi is not None:
            self.zi_params = pd.Series(estimates.zi_params, index=zi.names, name="zi_params")
            var = np.diag(estimates.zi_vcov)  # NaN where a coefficient at the boundary has none
            self.zi_bse = pd.Series(np.sqrt(np.where(var > 0, var, np.nan)), index=zi.names, name="zi_bse")

    def zi_vcov(self) -> pd.DataFrame:
        """Covariance matrix of the zero-inflation coefficients (glmmTMB's ``vcov(m)$zi``)."""
        if self.zi_params is None:
            raise FitError("this model has no zero-inflation part (no ziformula=)")
        names = self.zi_params.index
        return pd.DataFrame(self._est.zi_vcov, index=names, columns=names)

    def zi_probability(self, newdata: pd.DataFrame | None = None) -> np.ndarray:
        """π, the probability of a structural zero, per row (0 without a ziformula; NaN for a
        new row missing one of its variables)."""
        zi = self.design.zi
        n = self.design.nobs if newdata is None else len(newdata)
        if zi is None:
            return np.zeros(n)
        if newdata is None:
            return special.expit(zi.X @ self.zi_params.to_numpy())
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
        cols = sorted(zi.variables())
        _require_columns(newdata, cols, "column", " (the ziformula's)")
        complete = ~newdata[cols].isna().any(axis=1).to_numpy() if cols else np.ones(len(newdata), bool)
        rows = newdata if complete.all() else newdata.loc[complete]
        X = _replay(zi.spec, zi.matrix, rows, "the zero-inflation part")
        out = np.full(len(newdata), np.nan)
        out[complete] = special.expit(X @ self.zi_params.to_numpy())
        return out

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
    def df_modelwc(self) -> int:
        """Number of estimated parameters (β, θ and the scale where there is one)."""
        return self._est.n_params

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
        return self._est.criterion if self.is_reml else None

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
        from . import inference

        if level is None:
            level = 1 - inference.check_level(alpha, "alpha", "0.05 for 95% intervals")
        level = inference.check_level(level)
        key = str(method).lower()
        allowed = {"wald": (), "profile": (), "bootstrap": ("n_boot", "seed", "n_jobs", "progress")}
        key = "bootstrap" if key == "boot" else key
        if key not in allowed:
            raise FitError(
                f"unknown interval method '{method}'{did_you_mean(key, allowed)}; "
                "choose 'wald', 'profile' or 'bootstrap'"
            )
        for name in options:
            if name not in allowed[key]:
                takes = f"takes {', '.join(allowed[key])}" if allowed[key] else "takes no further options"
                raise FitError(
                    f"conf_int(method='{key}') has no option '{name}'{did_you_mean(name, allowed[key])}; it {takes}"
                )
        if key == "wald":
            names = inference.select_names(which, list(self.params.index), "wald", self)
            z = stats.norm.ppf(0.5 + level / 2)
            ci = pd.DataFrame({"lower": self.params - z * self.bse, "upper": self.params + z * self.bse})
            return ci.loc[names]
        if key == "profile":
            return inference.profile_ci(self, level=level, which=which)
        return inference.bootstrap_ci(self, level=level, which=which, **options)

    def coef_table(self, ddf: str = "normal", level: float = 0.95) -> pd.DataFrame:
        """Fixed effects with tests: estimate, std_err, df, statistic, p_value, ci_low, ci_high.

        ``ddf="normal"`` (Wald z, the default), ``"satterthwaite"`` (lmerTest) or
        ``"kenward-roger"`` (pbkrtest; also adjusts the standard errors). LMMs only for the latter two.
        """
        from .inference import coef_table

        return coef_table(self, ddf=ddf, level=level)

    def simulate(self, n: int = 1, seed=None, random_effects: str = "marginal") -> np.ndarray:
        """``n`` responses simulated from the fit (``nobs × n``); new random effects unless
        ``random_effects="conditional"``."""
        from .inference import simulate

        return simulate(self, n=n, seed=seed, random_effects=random_effects)

    # ------------------------------------------------------------------ variance components
    def _term_labels(self) -> list[str]:
        """lme4's grp labels: a repeated grouping factor gets ``.1``, ``.2``."""
        seen: dict[str, int] = {}
        out = []
        for t in self.design.terms:
            k = seen.get(t.group_name, 0)
            out.append(t.group_name if k == 0 else f"{t.group_name}.{k}")
            seen[t.group_name] = k + 1
        return out

    def term_covariances(self) -> list[np.ndarray]:
        """Σ_i = σ² λ_i λ_i' for each random-effects term (σ² = 1 for GLMMs: their λ is on the link scale)."""
        scale = self.sigma**2 if self.family.is_lmm else 1.0
        out = []
        for lam in ThetaMap(self.design.terms).lams(self.theta):
            out.append(scale * lam @ lam.T)
        return out

    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(m))``.

        Columns grp, var1, var2, vcov (variance or covariance), sdcor (SD or correlation):
        variances first, then covariances within each term, then the residual.
        """
        rows = []
        for t, label, Sig in zip(self.design.terms, self._term_labels(), self.term_covariances()):
            sd = np.sqrt(np.diag(Sig))
            for a, col in enumerate(t.columns):
                rows.append((label, col, None, Sig[a, a], sd[a]))
            for a in range(t.p):
                for c in range(a + 1, t.p):
                    corr = Sig[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else np.nan
                    rows.append((label, t.columns[a], t.columns[c], Sig[a, c], corr))
        if self.family.residual_scale:  # NB and beta's φ is no residual SD
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

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
            parts = []
            for t, b, V in zip(self.design.terms, self._est.b, self._est.condvar):
                sd = np.sqrt(np.maximum(np.diagonal(V, axis1=1, axis2=2), 0))
                b, sd, levels = _in_level_order(t, b, sd)
                for a, col in enumerate(t.columns):
                    parts.append(
                        pd.DataFrame(
                            {
                                "grpvar": t.group_name,
                                "term": col,
                                "grp": np.asarray(levels),
                                "condval": b[:, a],
                                "condsd": sd[:, a],
                            }
                        )
                    )
            return pd.concat(parts, ignore_index=True)
        out: dict[str, pd.DataFrame] = {}
        for t, b in zip(self.design.terms, self._est.b):
            b, levels = _in_level_order(t, b)[::2]
            df = pd.DataFrame(b, index=levels, columns=t.columns)
            out[t.group_name] = pd.concat([out[t.group_name], df], axis=1) if t.group_name in out else df
        return out

    def icc(self, latent_variance: float | None = None) -> pd.Series:
        """Intraclass correlation per grouping factor: σ²_g / (Σ_h σ²_h + σ²_e).

        Uses the intercept variance of each factor (the ICC at covariates = 0 for slope models).
        σ²_e is the residual variance for Gaussian models and the latent-scale variance
        otherwise (the seed's table: π²/3 for binomial-logit, 1 for Poisson-log, φ for Gamma-log);
        pass ``latent_variance`` to use another convention.
        """
        vc = self.varcorr()
        inter = vc[(vc["var1"] == "(Intercept)") & vc["var2"].isna() & (vc["grp"] != "Residual")]
        if inter.empty:
            raise FitError("icc() needs a random intercept; this model has none")
        groups = inter["grp"].str.replace(r"\.\d+$", "", regex=True)
        var = inter.groupby(groups.to_numpy(), sort=False)["vcov"].sum()
        if latent_variance is not None:
            if not isinstance(latent_variance, (int, float, np.number)) or not latent_variance >= 0:
                raise FitError(f"latent_variance must be a non-negative number, not {latent_variance!r}")
            resid = float(latent_variance)
        elif self.family.is_lmm:
            resid = self.sigma**2
        elif self.design.zi is not None:
            raise FitError(
                "icc() has no latent-scale residual variance for a zero-inflated model (the structural zeros "
                "are outside the latent scale); pass latent_variance= to use a convention of your own"
            )
        else:
            resid = self.family.latent_variance(self.dispersion)
        out = var / (var.sum() + resid)
        out.name = "ICC"
        return out

    def design_effect(self) -> pd.Series:
        """Design effect per grouping factor, DEFF = 1 + (n̄ − 1)·ICC with n̄ = n / groups."""
        icc = self.icc()
        nbar = pd.Series({g: self.nobs / self.ngroups[g] for g in icc.index})
        out = 1 + (nbar - 1) * icc
        out.name = "DEFF"
        return out

    # ------------------------------------------------------------------ prediction
    def _linear_predictor(self, data: pd.DataFrame | None, random_effects: bool) -> np.ndarray:
        d = self.design
        if data is None and d.source is not None:
            raise FitError("use predict() for the lazy predictions of Dask data")
        if data is None:
            X, off = d.X, d.offset
            eta = X @ self.params.to_numpy() + off
            if random_effects:
                for t, b in zip(d.terms, self._est.b):
                    eta = eta + np.einsum("ij,ij->i", t.Zcols, b[t.codes])
            return eta
        return self._newdata_predictor(data, random_effects)

    def _newdata_predictor(self, data: pd.DataFrame, random_effects: bool) -> np.ndarray:
        """η on new rows, lme4's way: NaN where a predictor is missing (na.pass), a zero random
        effect for a grouping level the fit did not see or a missing one (allow.new.levels)."""
        complete, X, off, parts = self._newdata_parts(data, random_effects)
        eta = X @ self.params.to_numpy() + off
        for (_t, Z, pos), b in zip(parts, self._est.b):
            contrib = np.einsum("ij,ij->i", Z, b[np.maximum(pos, 0)])
            eta = eta + np.where(pos >= 0, contrib, 0.0)
        out = np.full(len(data), np.nan)
        out[complete] = eta
        return out

    def _newdata_parts(self, data: pd.DataFrame | None, random_effects: bool):
        """(complete rows, X, offset, [(term, Z, level position or −1)]) of new rows (the fitted
        rows if ``data`` is None): what η and its variance are made of."""
        d = self.design
        if data is None:
            if d.source is not None:
                raise FitError("this needs newdata: the fitted rows of a Dask model are on the workers")
            parts = [(t, t.Zcols, t.codes) for t in d.terms] if random_effects else []
            return np.ones(len(d.y), bool), d.X, d.offset, parts
        if d.fixed_spec is None:
            raise FitError("predict(newdata) needs a model built with from_formula")
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {type(data).__name__}")
        offset_col = _offset_column(d)
        # the names as written in the formula (formulaic's own list splits a dotted `my.x`)
        needed = _formulaic_names(d.parsed.fixed) | ({offset_col} if offset_col else set())
        if random_effects:
            for t in d.terms:
                remedy = "; pass random_effects=False for population-level predictions"
                _require_columns(data, t.group, "grouping column", remedy)
                needed |= _formulaic_names(t.expr) if t.spec is not None else set()
        _require_columns(data, sorted(needed), "column")
        complete = ~data[sorted(needed)].isna().any(axis=1).to_numpy() if needed else np.ones(len(data), bool)
        rows = data if complete.all() else data.loc[complete]
        X = _replay(d.fixed_spec, lambda r: fixed_matrix(d, r), rows, "the fixed effects")
        off = np.zeros(len(rows))
        for expr in d.parsed.offsets:
            off = off + eval_expression(expr, rows)
        if offset_col:
            off = off + rows[offset_col].to_numpy(dtype=float)
        parts = [(t, term_columns_on(t, rows), _level_positions(t, rows)) for t in d.terms] if random_effects else []
        return complete, X, off, parts

    def get_prediction(self, newdata: pd.DataFrame | None = None, random_effects: bool = True):
        """Predictions with their standard errors and intervals (statsmodels' ``get_prediction``);
        ``.summary_frame(alpha)`` gives mean, mean_se, mean_ci_lower, mean_ci_upper (and for
        Gaussian models obs_ci_lower, obs_ci_upper). See :class:`~midas_glmm.prediction.Prediction`
        for the variances used."""
        from .prediction import Prediction

        if self.design.zi is not None:
            raise FitError(
                "get_prediction() is not available for zero-inflated models yet (the mean (1 - pi) mu needs the "
                "zero-inflation's uncertainty too); predict(kind=...) gives the point predictions"
            )
        return Prediction.of(self, newdata, random_effects)

    def predict(
        self, newdata: pd.DataFrame | None = None, random_effects: bool = True, kind: str = "response"
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
        kind : {"response", "link", "conditional", "zprob"}
            The mean of y, the linear predictor, the conditional model's mean μ and the
            probability of a structural zero π (glmmTMB's ``type=``). They differ for
            zero-inflated models only: there "response" is (1 − π) μ; elsewhere "conditional"
            is "response" and π is 0.

        Returns
        -------
        ndarray
            One prediction per row of ``newdata`` (a lazy Dask series for Dask data).

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
        if kind not in KINDS:
            raise FitError(f"kind must be one of {', '.join(repr(k) for k in KINDS)}, not '{kind}'")
        from .daskdata import is_dask_frame

        if newdata is None and self.design.source is not None:  # lazily, partition by partition
            return self.design.source.map_rows(lambda rows: self.predict(rows, random_effects, kind), "predicted")
        if is_dask_frame(newdata):
            return newdata.map_partitions(
                lambda part: pd.Series(self.predict(part, random_effects, kind), index=part.index, name="predicted"),
                meta=pd.Series(dtype=float, name="predicted"),
            )
        if kind == "zprob":
            return self.zi_probability(newdata)
        eta = self._linear_predictor(newdata, random_effects)
        if kind == "link" or self.family.is_lmm:
            return eta
        mu = self.family.linkinv(eta)
        if kind == "response" and self.design.zi is not None:  # E[y] = (1 − π) μ
            return (1.0 - self.zi_probability(newdata)) * mu
        return mu

    @cached_property
    def fittedvalues(self) -> pd.Series:
        """Fitted values on the response scale, conditional on the random effects: μ̂, or the
        mean (1 − π̂)μ̂ of a zero-inflated model (glmmTMB's ``fitted()``); a lazy Dask series for
        Dask data."""
        if self.design.source is not None:
            return self.predict()
        return pd.Series(self.predict(), index=self.design.row_index, name="fitted")

    @cached_property
    def resid(self) -> pd.Series:
        """Response residuals y − fitted (a lazy Dask series for Dask data)."""
        src = self.design.source
        if src is not None:
            return src.map_rows(lambda rows: src.response(rows) - self.predict(rows), "resid")
        return pd.Series(self.design.y - self.fittedvalues.to_numpy(), index=self.design.row_index, name="resid")

    def _scaled_residuals(self, kind: str, y, mu, w) -> np.ndarray:
        """Pearson √w (y − μ)/√V(μ) or deviance sign(y − μ)√(w d(y, μ)) residuals (lme4's
        ``residuals(m, type=)``; V = 1 for Gaussian models). Zero-inflated: Pearson residuals
        with the mixture's mean (1 − π)μ and variance (1 − π)(V(μ) + πμ²), as glmmTMB."""
        fam = self.family
        if self.design.zi is not None:
            if kind != "pearson":
                raise FitError(
                    "deviance residuals are not defined for a zero-inflated model (the mixture has no unit "
                    "deviance); use resid_pearson, resid or simulate_residuals()"
                )
            pi = self.zi_probability()
            mu_c = self.predict(kind="conditional")
            var = (1.0 - pi) * (fam.variance(mu_c, self.dispersion) + pi * mu_c**2)
            return np.sqrt(w / var) * (y - (1.0 - pi) * mu_c)
        if kind == "pearson":
            var = np.ones_like(mu) if fam.name == "gaussian" else fam.variance(mu, self.dispersion)
            return np.sqrt(w / var) * (y - mu)
        if fam.name == "gaussian":
            return np.sqrt(w) * (y - mu)
        return np.sign(y - mu) * np.sqrt(np.maximum(fam.resid_dev(y, mu, w, self.dispersion) ** 2, 0.0))

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

    @cached_property
    def resid_pearson(self) -> pd.Series:
        """Pearson residuals √wᵢ (yᵢ − μ̂ᵢ)/√V(μ̂ᵢ) at the conditional fitted values, unscaled by
        σ or φ: lme4's ``residuals(m, type = "pearson")`` (for an LMM, √wᵢ (yᵢ − μ̂ᵢ))."""
        return self._residuals("pearson")

    @cached_property
    def resid_deviance(self) -> pd.Series:
        """Deviance residuals sign(yᵢ − μ̂ᵢ) √(wᵢ d(yᵢ, μ̂ᵢ)): lme4's ``residuals(m)`` for GLMMs
        (for an LMM they equal the Pearson residuals); their squares sum to :attr:`deviance`."""
        return self._residuals("deviance")

    def anova(self, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """ANOVA table, one row per fixed-effect term. LMMs: ``Sum Sq``, ``Mean Sq``, ``NumDF``,
        ``DenDF``, ``F value``, ``Pr(>F)`` as ``lmerTest::anova(m, type=, ddf=)`` (type 1:
        sequential; type 3: lmerTest's marginal hypotheses, interactions included, for
        treatment-coded factors); GLMMs: Wald ``Chisq``,
        ``Df``, ``Pr(>Chisq)`` as ``car::Anova(m, type = 3)``. To compare models use
        :func:`midas_glmm.compare` (likelihood-ratio tests)."""
        from .anova import anova_table

        return anova_table(self, type=type, ddf=ddf)

    def emmeans(self, specs, by=None, ddf=None, type: str = "link", level: float = 0.95) -> pd.DataFrame:
        """Estimated marginal means of ``specs`` (factor column names) within ``by``, as
        ``emmeans::emmeans(m, specs, by)``: the factor columns, emmean, SE, df, lower.CL,
        upper.CL. LMMs: Kenward–Roger df by default (emmeans' ``lmer.df``), or
        ``ddf="satterthwaite"`` / ``"asymptotic"``; GLMMs: the link scale, or
        ``type="response"`` (:mod:`midas_glmm.emmeans`)."""
        from .emmeans import emmeans

        return emmeans(self, specs, by=by, ddf=ddf, type=type, level=level)

    def contrasts(self, specs, method: str = "pairwise", adjust=None, by=None, ddf=None) -> pd.DataFrame:
        """Contrasts of the estimated marginal means (``pairwise``, ``trt.vs.ctrl``, ``poly``) with
        p-values adjusted by ``tukey`` (pairwise's default), ``holm``, ``bonferroni`` or ``none``
        (poly's default), as ``emmeans::contrast(emmeans(m, specs, by), method, adjust)``."""
        from .emmeans import emm_contrasts

        return emm_contrasts(self, specs, method=method, adjust=adjust, by=by, ddf=ddf)

    def ranova(self) -> pd.DataFrame:
        """Likelihood-ratio test of each random term reduced (slopes to an intercept, an
        intercept removed), as ``lmerTest::ranova(m)``: rows ``<none>`` and one per term;
        columns npar, logLik, AIC, LRT, Df, Pr(>Chisq) (:mod:`midas_glmm.ranova`)."""
        from .ranova import ranova

        return ranova(self)

    def drop1(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests of dropping each fixed-effect term that marginality allows, as
        ``lmerTest::drop1(m)`` (LMMs; same columns as :meth:`anova`)."""
        from .anova import drop1_table

        return drop1_table(self, ddf=ddf)

    def wald_test(self, L, rhs=None, ddf: str = "satterthwaite") -> pd.Series:
        """Joint test of Lβ = rhs (``L``: one row per restriction, one column per fixed effect):
        an F test with Satterthwaite or Kenward–Roger df for LMMs (lmerTest's ``contest``), a
        Wald chi-square for GLMMs or ``ddf="asymptotic"``."""
        from .anova import contrast_test

        return contrast_test(self, L, rhs=rhs, ddf=ddf)

    def t_test(self, L, rhs=None, ddf: str = "satterthwaite", level: float = 0.95) -> pd.DataFrame:
        """One t test per row of L (z tests for GLMMs): estimate, std_err, df, statistic,
        p_value, ci_low, ci_high (lmerTest's ``contest(joint = FALSE)``)."""
        from .anova import contrast_t

        return contrast_t(self, L, rhs=rhs, ddf=ddf, level=level)

    def simulate_residuals(self, n: int = 250, seed=None):
        """Scaled (quantile) residuals from ``n`` simulations of the fit, as R's DHARMa:
        uniform on (0, 1) for a correctly specified model, with tests for uniformity,
        dispersion and zero-inflation and a plot (:mod:`midas_glmm.quantile_residuals`)."""
        from .quantile_residuals import simulate_residuals

        return simulate_residuals(self, n=n, seed=seed)

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
        from .r2 import nakagawa

        return nakagawa(self)

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

    def update(self, formula: str | None = None, data=None, ziformula=KEEP, **fit_kwargs) -> MixedModelResults:
        """lme4's ``update()``: the model again with a changed formula (``"~ . + x"``,
        ``". ~ . - (1 | g) + (x | g)"``: ``.`` is the current response or terms) and/or other
        data (and ``ziformula``: another zero-inflation part, None for none), fitted with this
        fit's settings changed only where given (``method="ML"``)."""
        from .formula import update_formula
        from .model import MixedModel

        src = self.model.built_from
        if src is None:
            raise FitError(
                "update() rebuilds the model from its formula and data, and this model has none to rebuild from "
                "(built from arrays, or its response replaced by refit() or fit_many); build it with "
                "MixedModel.from_formula on a DataFrame that holds the response"
            )
        if isinstance(src.get("data"), RemovedRows) and data is None:
            raise FitError("this result was saved without its data: pass data= to update()")
        new_formula = src["formula"] if formula is None else update_formula(src["formula"], formula)
        model = MixedModel.from_formula(
            new_formula,
            src["data"] if data is None else data,
            family=self.family,
            weights=src["weights"],
            offset=src["offset"],
            ziformula=src.get("ziformula") if ziformula is KEEP else ziformula,
        )
        kw = dict(self.fit_options)
        kw.update(fit_kwargs)
        return model.fit(**kw)

    def save(self, path, remove_data: bool = True) -> None:
        """Save this result (a pickle; :func:`midas_glmm.load` reads it back). ``remove_data``
        leaves out every row-sized array: the result keeps its estimates and can still
        ``predict(newdata)``; what needs the rows then says so (:mod:`midas_glmm.persist`)."""
        from .persist import save

        save(self, path, remove_data=remove_data)

    # ------------------------------------------------------------------ statsmodels' names
    @property
    def fe_params(self) -> pd.Series:
        """The fixed effects (statsmodels' name for :attr:`params`)."""
        return self.params

    @property
    def cov_re(self):
        """Covariance of the random effects (statsmodels' name): a DataFrame for a model with one
        random term, else a dict term label → DataFrame (see :meth:`term_covariances`)."""
        frames = {
            label: pd.DataFrame(S, index=t.columns, columns=t.columns)
            for label, t, S in zip(self._term_labels(), self.design.terms, self.term_covariances())
        }
        return next(iter(frames.values())) if len(frames) == 1 else frames

    @property
    def random_effects(self) -> dict:
        """The random effects as statsmodels gives them: level → Series of that level's effects
        for a model with one grouping factor; else factor → (level → Series)."""
        out = {g: {lev: row for lev, row in frame.iterrows()} for g, frame in self.ranef().items()}
        return next(iter(out.values())) if len(out) == 1 else out

    # ------------------------------------------------------------------ display
    def summary(self, alpha: float = 0.05, ddf: str = "normal", anova: bool = False):
        """A printable summary (``print(res.summary())``; HTML in notebooks).

        ``ddf`` chooses the fixed-effects tests, as in :meth:`coef_table`; ``anova=True`` adds
        the type 3 table of :meth:`anova` (Satterthwaite df unless ``ddf="kenward-roger"``)."""
        from .inference import check_level
        from .summary import Summary

        check_level(alpha, "alpha", "0.05 for 95% intervals")
        table = None
        if ddf != "normal":
            ct = self.coef_table(ddf=ddf, level=1 - alpha)
            table = ct.rename(
                columns={
                    "estimate": "Estimate",
                    "std_err": "Std.Err.",
                    "statistic": "t",
                    "p_value": "P>|t|",
                    "ci_low": f"[{alpha / 2:g}",
                    "ci_high": f"{1 - alpha / 2:g}]",
                }
            )
        anova_table, anova_ddf = None, None
        if anova:
            anova_ddf = "kenward-roger" if str(ddf).lower() in ("kenward-roger", "kr") else "satterthwaite"
            anova_table = self.anova(type=3, ddf=anova_ddf)
        label = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger"}.get(anova_ddf, "")
        return Summary(self, alpha=alpha, coef_table=table, anova=anova_table, anova_ddf=label)

    def __repr__(self) -> str:
        return f"<MixedModelResults: {self.design.formula}, {self.method}, llf={self.llf:.4f}>"


# ---------------------------------------------------------------------- levels in new data
def _offset_column(d) -> str | None:
    """The column an offset= keyword named (Dask data); a FitError when the fit's offset came as
    an array, which new data cannot reproduce."""
    offset_col = getattr(d.source, "offset_col", None)
    if offset_col is None and not d.parsed.offsets and np.any(d.offset != 0):
        raise FitError(
            "the model's offset was given as offset=..., which cannot be computed on new data; "
            "write it in the formula, e.g. 'y ~ x + offset(np.log(t)) + (1|g)', to predict on newdata"
        )
    return offset_col


def _replay(spec, build, rows: pd.DataFrame, what: str) -> np.ndarray:
    """``build(rows)``, a formulaic ModelSpec replayed on new rows, after matching their levels
    to the spec's (:func:`_match_levels`); the library's errors for what formulaic cannot
    encode, a level the fit did not see first of all (formulaic only warns of it)."""
    rows = _match_levels(spec, rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            return build(rows)
    except DataMismatchWarning as exc:
        raise DataError(
            f"a categorical predictor in newdata has a level the fit did not see ({exc}); the fit has "
            "no coefficient for a new level: drop or recode those rows"
        ) from None
    except FormulaicError as exc:
        raise DataError(f"cannot build {what} on newdata: {exc}") from None


def _require_columns(data: pd.DataFrame, names, what: str, remedy: str = "") -> None:
    for name in names:
        if name not in data.columns:
            raise DataError(f"newdata lacks {what} '{name}'{did_you_mean(name, data.columns)}{remedy}")


def _level_text(value) -> str | None:
    """A level as text, numbers without a trailing ".0" (3, 3.0 and "3" give "3"); None if missing."""
    if pd.isna(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.15g}"
    return str(value)


def _label_text(label: str) -> str:
    """A fitted level's label, with a float's text ("3.0") written as :func:`_level_text` writes it."""
    try:
        x = float(label)
    except ValueError:  # not a number: the label is the text
        return label
    return f"{x:.15g}" if np.isfinite(x) and label == str(x) else label


def _level_lookup(levels: pd.Index, nparts: int):
    """Map a level's text to its position among the fit's levels: the label itself first, then
    its value (a float column's "3.0" is the level 3); −1 when the fit has no such level."""
    exact = {str(lab): i for i, lab in enumerate(levels)}
    by_value: dict[str, int] = {}
    for i, lab in enumerate(levels):
        parts = str(lab).split(":")
        if len(parts) == nparts:
            by_value.setdefault(":".join(_label_text(p) for p in parts), i)
    return lambda text: exact.get(text, by_value.get(text, -1))


def _level_positions(term, data: pd.DataFrame) -> np.ndarray:
    """Position of each row's group among the levels of ``term``; −1 for a level the fit did not
    see or a missing value (such rows get a zero random effect, as lme4's allow.new.levels)."""
    codes, texts = [], []
    for g in term.group:
        c, uniques = pd.factorize(data[g])
        codes.append(c)
        texts.append([_level_text(u) for u in uniques])
    lookup = _level_lookup(term.levels, len(term.group))
    combos, inverse = np.unique(np.column_stack(codes), axis=0, return_inverse=True)
    pos = np.array(
        [-1 if (row < 0).any() else lookup(":".join(texts[i][c] for i, c in enumerate(row))) for row in combos],
        dtype=np.int64,
    )
    return pos[inverse.ravel()]


def term_columns_on(term, rows: pd.DataFrame) -> np.ndarray:
    """A random term's per-row columns on new rows (an intercept, or its own ModelSpec replayed
    with its levels matched)."""
    if term.spec is None:
        return random_columns(term, rows)
    return _replay(
        term.spec, partial(random_columns, term), rows, f"the random-effects term ({term.expr} | {term.group_name})"
    )


def _holds_numbers(col: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return True
    return all(isinstance(v, numbers.Number) for v in col.dropna())  # an object column of numbers


_CATEGORICAL_CALL = re.compile(r"^C\(\s*`?([^,`]+?)`?\s*(,.*)?\)$")


def _match_levels(spec, data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with the values of the fit's categorical predictors replaced by the fit's levels
    they equal by value (2, 2.0 and "2" are the level 2); a level the fit did not see is a
    DataError naming the column, as lme4's predict refuses new levels of a fixed factor, and so
    is text in a column the fit used as a number.

    Factors that are a column (``f`` or ``C(f, ...)``) are matched here; for other expressions
    formulaic's own check of the levels applies."""
    changed = {}
    for expr, (kind, state) in spec.encoder_state.items():
        kind = getattr(kind, "value", kind)
        if kind == "numerical" and expr.strip("`") in data.columns:
            col = expr.strip("`")
            if not _holds_numbers(data[col]):
                raise DataError(
                    f"newdata column '{col}' holds {data[col].dtype} values but the fit used it as a number; "
                    "convert it, e.g. with pd.to_numeric"
                )
            if data[col].dtype == object:  # numbers in an object column: formulaic would take them as levels
                changed[col] = data[col].astype(float)
        cats = state.get("categories") if isinstance(state, dict) else None
        if kind != "categorical" or cats is None:
            continue
        m = _CATEGORICAL_CALL.match(expr.strip())
        col = expr.strip("`") if expr.strip("`") in data.columns else (m.group(1).strip() if m else None)
        if col not in data.columns:
            continue
        codes, uniques = pd.factorize(data[col])
        by_text = {_level_text(c): c for c in cats}
        values = []
        for u in uniques:
            if _level_text(u) not in by_text:
                shown = ", ".join(map(str, cats[:10])) + (", ..." if len(cats) > 10 else "")
                raise DataError(
                    f"newdata column '{col}' has level {u!r}, which the fit did not see (levels of {expr}: "
                    f"{shown}); the fit has no coefficient for a new level: drop or recode those rows"
                )
            values.append(by_text[_level_text(u)])
        if any(type(v) is not type(u) or v != u for v, u in zip(values, uniques)):
            changed[col] = pd.Series(np.array(values, dtype=object)[codes], index=data.index)
    return data.assign(**changed) if changed else data
