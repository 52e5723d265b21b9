"""MixedModelResults: the fitted model's estimates, with statsmodels' manners and lme4's numbers."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats

from .design import eval_expression, fixed_matrix, random_columns
from .errors import DataError, FitError
from .estimates import Estimates

__all__ = ["MixedModelResults"]


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
    """

    def __init__(self, model, estimates: Estimates):
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
        src = self.design.source
        if src is None:
            d = self.design
            return self.family.deviance(d.y, self.fittedvalues.to_numpy(), d.weights)

        def unit_deviances(rows):
            y, _, w, *_ = src.rows(rows, with_terms=False)
            return self.family.sm.resid_dev(y, self.predict(rows), var_weights=w) ** 2

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

    def conf_int(self, alpha: float = 0.05, method: str = "wald", level: float | None = None, **kwargs) -> pd.DataFrame:
        """Confidence intervals.

        Parameters
        ----------
        alpha : float
            1 − coverage (ignored when ``level`` is given).
        method : {"wald", "profile", "bootstrap"}
            ``"wald"``: fixed effects, normal reference (the seed's default). ``"profile"``:
            profile likelihood for variance components (SDs, correlations, sigma) and fixed
            effects, as lme4's ``confint(method = "profile")`` (LMMs). ``"bootstrap"``: parametric
            bootstrap percentiles; keyword arguments ``n_boot``, ``seed``, ``n_jobs``, ``progress``.
        level : float, optional
            Coverage, e.g. 0.95.
        """
        from . import inference

        level = 1 - alpha if level is None else level
        if method == "wald":
            z = stats.norm.ppf(0.5 + level / 2)
            return pd.DataFrame({"lower": self.params - z * self.bse, "upper": self.params + z * self.bse})
        if method == "profile":
            return inference.profile_ci(self, level=level, **kwargs)
        if method in ("bootstrap", "boot"):
            return inference.bootstrap_ci(self, level=level, **kwargs)
        raise FitError(f"unknown interval method '{method}'; choose 'wald', 'profile' or 'bootstrap'")

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
        """Σ_i = σ² λ_i λ_i' for each random-effects term (σ² = 1 for binomial and Poisson)."""
        scale = self.sigma**2 if self.family.is_lmm else 1.0
        out = []
        from .lmm import ThetaMap

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
        if self.family.has_dispersion:
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
                for a, col in enumerate(t.columns):
                    parts.append(
                        pd.DataFrame(
                            {
                                "grpvar": t.group_name,
                                "term": col,
                                "grp": np.asarray(t.levels),
                                "condval": b[:, a],
                                "condsd": sd[:, a],
                            }
                        )
                    )
            return pd.concat(parts, ignore_index=True)
        out: dict[str, pd.DataFrame] = {}
        for t, b in zip(self.design.terms, self._est.b):
            df = pd.DataFrame(b, index=t.levels, columns=t.columns)
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
            resid = float(latent_variance)
        elif self.family.is_lmm:
            resid = self.sigma**2
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
        if d.fixed_spec is None:
            raise FitError("predict(newdata) needs a model built with from_formula")
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {type(data).__name__}")
        try:
            X = fixed_matrix(d, data)
        except Exception as exc:
            raise DataError(f"cannot build the fixed effects on newdata: {exc}") from None
        eta = X @ self.params.to_numpy()
        for expr in d.parsed.offsets:
            eta = eta + eval_expression(expr, data)
        if random_effects:
            for t, b in zip(d.terms, self._est.b):
                missing = [g for g in t.group if g not in data.columns]
                if missing:
                    raise DataError(
                        f"newdata lacks grouping column '{missing[0]}'; pass random_effects=False "
                        "for population-level predictions"
                    )
                Z = random_columns(t, data)
                labels = data[list(t.group)].astype(str).agg(":".join, axis=1)
                pos = t.levels.get_indexer(labels)
                contrib = np.einsum("ij,ij->i", Z, b[np.maximum(pos, 0)])
                eta = eta + np.where(pos >= 0, contrib, 0.0)
        return eta

    def predict(
        self, newdata: pd.DataFrame | None = None, random_effects: bool = True, kind: str = "response"
    ) -> np.ndarray:
        """Predictions, conditional on the random effects or marginal (population level).

        Parameters
        ----------
        newdata : DataFrame, optional
            Defaults to the fitted rows. Unseen levels get a zero random effect (lme4's
            ``allow.new.levels=TRUE``).
        random_effects : bool
            False gives lme4's ``re.form=NA``.
        kind : {"response", "link"}
        """
        if kind not in ("response", "link"):
            raise FitError(f"kind must be 'response' or 'link', not '{kind}'")
        from .daskdata import is_dask_frame

        if newdata is None and self.design.source is not None:  # lazily, partition by partition
            return self.design.source.map_rows(lambda rows: self.predict(rows, random_effects, kind), "predicted")
        if is_dask_frame(newdata):
            return newdata.map_partitions(
                lambda part: pd.Series(self.predict(part, random_effects, kind), index=part.index, name="predicted"),
                meta=pd.Series(dtype=float, name="predicted"),
            )
        eta = self._linear_predictor(newdata, random_effects)
        return eta if kind == "link" else self.family.linkinv(eta) if not self.family.is_lmm else eta

    @cached_property
    def fittedvalues(self) -> pd.Series:
        """Conditional fitted values on the response scale (a lazy Dask series for Dask data)."""
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

    def refit(self, method: str | None = None, **fit_kwargs) -> MixedModelResults:
        """Fit the same model again, e.g. ``refit(method="ML")`` before comparing fixed effects."""
        kw = {"nAGQ": self.nAGQ} if not self.family.is_lmm else {}
        kw.update(fit_kwargs)
        return self.model.fit(method=method, **kw)

    # ------------------------------------------------------------------ display
    def summary(self, alpha: float = 0.05, ddf: str = "normal"):
        """A printable summary (``print(res.summary())``; HTML in notebooks).

        ``ddf`` chooses the fixed-effects tests, as in :meth:`coef_table`."""
        from .summary import Summary

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
        return Summary(self, alpha=alpha, coef_table=table)

    def __repr__(self) -> str:
        return f"<MixedModelResults: {self.design.formula}, {self.method}, llf={self.llf:.4f}>"
