"""ManyResults: the fits of many responses to one model, as tables, and each one in full."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..design.reterms import ThetaMap
from ..distributions import norm_sf
from ..errors import ConvergenceWarning, FitError, SingularFitWarning
from ..posthoc.ddf import WALD
from .gaussian import full_gaussian, shared_for
from .records import Settings
from .responses import response_matrix, subset_model

__all__ = ["ManyResults"]


# ----------------------------------------------------------------------------- the results
@dataclass
class ManyResults:
    """The fits of many responses to one model.

    Tables (responses × coefficients): ``params``, ``bse``, ``tvalues``, ``pvalues`` (Wald z, or
    t with Satterthwaite df when fitted with ``ddf="satterthwaite"``; then ``df`` too);
    per response: ``llf``, ``theta``, ``sigma``, ``nobs``, ``converged``, ``singular``,
    ``errors``, ``messages``. ``res[name]`` is that response's full
    :class:`~midas_glmm.results.MixedModelResults`; ``to_frame()`` the tidy long table;
    ``pvalues_adjusted("fdr_bh")`` the multiplicity-adjusted p-values per coefficient.
    """

    model: object
    settings: Settings
    names: list[str]
    records: list[dict]
    Y: object = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        ok = sum(r["error"] is None for r in self.records)
        unconverged = sum(r["error"] is None and not r["converged"] for r in self.records)
        return (
            f"<ManyResults: {len(self)} responses, {ok} fitted, {len(self) - ok} failed, "
            f"{int(self.singular.sum())} singular, {unconverged} not converged>"
        )

    # -------------------------------------------------------------- tables
    @property
    def _coef_names(self) -> list[str]:
        return list(self.model.design.fixed_names)

    def _table(self, key: str) -> pd.DataFrame:
        cols = self._coef_names
        M = np.full((len(self), len(cols)), np.nan)
        for i, r in enumerate(self.records):
            v = r.get(key)
            if r["error"] is None and v is not None and len(v) == len(cols):
                M[i] = v
        return pd.DataFrame(M, index=pd.Index(self.names, name="response"), columns=cols)

    @property
    def params(self) -> pd.DataFrame:
        return self._table("params")

    @property
    def bse(self) -> pd.DataFrame:
        return self._table("bse")

    @property
    def tvalues(self) -> pd.DataFrame:
        return self.params / self.bse

    @property
    def df(self) -> pd.DataFrame:
        """Satterthwaite degrees of freedom (fitted with ``ddf="satterthwaite"``)."""
        if self.settings.ddf == WALD:
            raise FitError("degrees of freedom were not computed: call fit_many(..., ddf='satterthwaite')")
        return self._table("df")

    @property
    def pvalues(self) -> pd.DataFrame:
        if self.settings.ddf != WALD:
            return self._table("pvalues")
        t = self.tvalues
        return pd.DataFrame(2 * norm_sf(np.abs(t.to_numpy())), index=t.index, columns=t.columns)

    def pvalues_adjusted(self, method: str = "fdr_bh") -> pd.DataFrame:
        """p-values adjusted across responses, coefficient by coefficient (statsmodels'
        ``multipletests`` methods: ``"fdr_bh"``, ``"fdr_by"``, ``"bonferroni"``, ``"holm"``, ...);
        failed responses stay NaN and do not count."""
        from statsmodels.stats.multitest import multipletests, multitest_alias  # loaded when asked

        if method not in multitest_alias:  # statsmodels' own names and aliases
            raise FitError(f"unknown p-value adjustment '{method}'; try 'fdr_bh', 'bonferroni' or 'holm'")
        P = self.pvalues
        out = P.copy()
        for c in P.columns:
            ok = P[c].notna().to_numpy()
            if ok.any():
                out.loc[ok, c] = multipletests(P[c].to_numpy()[ok], method=method)[1]
        return out

    def _series(self, key: str, dtype=float, default=np.nan) -> pd.Series:
        vals = [r.get(key, default) if r["error"] is None or key in ("nobs",) else default for r in self.records]
        return pd.Series(vals, index=pd.Index(self.names, name="response"), name=key, dtype=dtype)

    @property
    def llf(self) -> pd.Series:
        return self._series("llf")

    @property
    def sigma(self) -> pd.Series:
        return self._series("sigma")

    @property
    def nobs(self) -> pd.Series:
        return self._series("nobs", dtype=int, default=0)

    @property
    def converged(self) -> pd.Series:
        return self._series("converged", dtype=bool, default=False)

    @property
    def singular(self) -> pd.Series:
        return self._series("singular", dtype=bool, default=False)

    @property
    def theta(self) -> pd.DataFrame:
        names = ThetaMap(self.model.design.terms).names
        M = np.full((len(self), len(names)), np.nan)
        for i, r in enumerate(self.records):
            if r["error"] is None:
                M[i] = r["theta"]
        return pd.DataFrame(M, index=pd.Index(self.names, name="response"), columns=names)

    @property
    def errors(self) -> pd.Series:
        """Why each failed response failed (responses that were fitted are not listed)."""
        bad = {r["name"]: r["error"] for r in self.records if r["error"] is not None}
        return pd.Series(bad, name="error", dtype=object)

    @property
    def messages(self) -> pd.Series:
        """The warnings of each response's fit, joined (empty for a clean fit)."""
        return pd.Series(
            ["; ".join(r["messages"]) for r in self.records],
            index=pd.Index(self.names, name="response"),
            name="messages",
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per response and coefficient: response, term, estimate, std_error,
        statistic, (df,) p_value."""
        P, B, T, Pv = self.params, self.bse, self.tvalues, self.pvalues
        out = pd.DataFrame(
            {
                "response": np.repeat(self.names, P.shape[1]),
                "term": np.tile(P.columns, len(self)),
                "estimate": P.to_numpy().ravel(),
                "std_error": B.to_numpy().ravel(),
                "statistic": T.to_numpy().ravel(),
            }
        )
        if self.settings.ddf != WALD:
            out["df"] = self.df.to_numpy().ravel()
        out["p_value"] = Pv.to_numpy().ravel()
        return out

    # -------------------------------------------------------------- one response in full
    def __getitem__(self, name: str):
        """The full result of one response (as a single ``fit()`` gives it)."""
        try:
            j = self.names.index(str(name))
        except ValueError:
            raise KeyError(f"no response named {name!r}") from None
        rec = self.records[j]
        if rec["error"] is not None:
            raise FitError(f"response '{name}' was not fitted: {rec['error']}")
        y = self._response(j)
        model = self.model
        if rec.get("opt") is not None and not np.isnan(y).any():  # fitted on the shared design
            REML = (self.settings.method or "REML").upper() == "REML"
            return full_gaussian(
                model, shared_for(model, REML), rec, y, optimizer=self.settings.fit_kwargs.get("optimizer")
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = model.with_response(y) if not np.isnan(y).any() else subset_model(model, y)
            return m.fit(method=self.settings.method, **self.settings.fit_kwargs)

    def _response(self, j: int) -> np.ndarray:
        if self.Y is None:
            raise FitError("these results do not keep the responses (saved without data)")
        Y = self.Y
        if isinstance(Y, pd.DataFrame):
            Y = Y.iloc[:, [j]]
        elif isinstance(Y, pd.Series):
            pass
        else:
            arr = np.asarray(Y, dtype=float)
            Y = arr.reshape(len(arr), -1)[:, [j]]
        return response_matrix(self.model, Y)[1][:, 0]

    # -------------------------------------------------------------- warnings
    def report_warnings(self) -> None:
        """Warn, once for the collection, of failed, singular and unconverged responses."""
        nbad = int(sum(r["error"] is not None for r in self.records))
        if nbad:
            first = next(r for r in self.records if r["error"] is not None)
            warnings.warn(
                f"{nbad} of {len(self)} responses could not be fitted (see .errors); the first, "
                f"'{first['name']}': {first['error']}",
                ConvergenceWarning,
                stacklevel=4,
            )
        nsing = int(self.singular.sum())
        if nsing:
            warnings.warn(
                f"{nsing} of {len(self)} responses gave a boundary (singular) fit (see .singular)",
                SingularFitWarning,
                stacklevel=4,
            )
        nconv = int(((~self.converged) & self.errors.reindex(self.names).isna().to_numpy()).sum())
        if nconv:
            warnings.warn(
                f"{nconv} of {len(self)} responses did not converge cleanly (see .converged and .messages)",
                ConvergenceWarning,
                stacklevel=4,
            )
