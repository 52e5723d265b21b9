"""Printed summaries in the spirit of lme4's ``summary(merMod)`` and statsmodels' tables."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..checks import check_level
from ..distributions import norm_sf
from ..errors import FitError
from ..posthoc.ddf import KENWARD_ROGER, SATTERTHWAITE, WALD, parse_ddf, test_method
from . import varcomp

__all__ = ["Summary"]


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    return f"{x:.{digits}f}"


def _wald_block(params: pd.Series | None, bse: pd.Series | None) -> pd.DataFrame | None:
    """Coefficients of a side part (zero-inflation, dispersion) with Wald z tests; None without one."""
    if params is None:
        return None
    z = params / bse
    return pd.DataFrame({"Estimate": params, "Std.Err.": bse, "z": z, "P>|z|": 2 * norm_sf(np.abs(z))})


class Summary:
    """Summary of a fit: a header, the random-effects table, the fixed-effects table, notes.

    ``str(summary)`` / ``summary.as_text()`` give text, ``summary.as_html()`` HTML; the tables
    are DataFrames in ``summary.tables``.
    """

    def __init__(
        self,
        res,
        alpha: float = 0.05,
        coef_table: pd.DataFrame | None = None,
        anova: pd.DataFrame | None = None,
        anova_ddf: str = "",
    ):
        self.res = res
        self.alpha = alpha
        self._anova_ddf = anova_ddf
        self.fixed = coef_table if coef_table is not None else self._wald_table()
        beta_mc = getattr(res.estimates.solver, "beta_mc_se", None)
        if beta_mc is not None:  # an iterative GLMM's β carries the probes' error too
            self.fixed = self.fixed.assign(**{"MC s.e.": beta_mc})
        self.random = self._random_table()
        self.anova = anova
        self.zero_inflation = self._zi_table()
        self.dispersion = self._disp_table()
        self.thresholds = _wald_block(res.thresholds, res.threshold_bse)
        self.tables = (
            [self.random, self.fixed]
            + ([self.thresholds] if self.thresholds is not None else [])
            + ([self.zero_inflation] if self.zero_inflation is not None else [])
            + ([self.dispersion] if self.dispersion is not None else [])
            + ([anova] if anova is not None else [])
        )

    @classmethod
    def of(cls, res, alpha: float = 0.05, ddf: str = "normal", anova: bool = False) -> Summary:
        """The summary of ``res``: Wald z tests of the fixed effects, or t tests with ``ddf``'s
        degrees of freedom (:func:`~midas_glmm.posthoc.hypotheses.coef_table`); with
        ``anova=True`` the type 3 table (Satterthwaite df unless ``ddf="kenward-roger"``)."""
        check_level(alpha, "alpha", "0.05 for 95% intervals")
        method = parse_ddf(ddf)
        table = None
        if method != WALD:
            ct = res.coef_table(ddf=method, level=1 - alpha)
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
        anova_table, label = None, ""
        if anova:  # Satterthwaite unless Kenward-Roger was asked for (a GLMM's table is Wald's)
            anova_ddf = test_method(res, KENWARD_ROGER if method == KENWARD_ROGER else None)
            anova_table = res.anova(type=3, ddf=anova_ddf)
            label = {SATTERTHWAITE: "Satterthwaite", KENWARD_ROGER: "Kenward-Roger", WALD: "Wald"}[anova_ddf]
        return cls(res, alpha=alpha, coef_table=table, anova=anova_table, anova_ddf=label)

    def _zi_table(self) -> pd.DataFrame | None:
        """The zero-inflation coefficients with Wald z tests (glmmTMB's "Zero-inflation model")."""
        return _wald_block(self.res.zi_params, self.res.zi_bse)

    def _disp_table(self) -> pd.DataFrame | None:
        """The dispersion coefficients with Wald z tests (glmmTMB's "Dispersion model")."""
        return _wald_block(self.res.disp_params, self.res.disp_bse)

    def _side_blocks(self) -> list[tuple[str, pd.DataFrame]]:
        """(title, table) of the parts beside the fixed effects: thresholds, zero-inflation, dispersion."""
        out = []
        if self.thresholds is not None:
            out.append((f"Threshold coefficients ({self.res.family.link_name} link):", self.thresholds))
        if self.zero_inflation is not None:
            out.append((f"Zero-inflation model ({self.res.design.zi.formula}, logit link):", self.zero_inflation))
        if self.dispersion is not None:
            out.append((self._disp_title(), self.dispersion))
        return out

    def _disp_title(self) -> str:
        fam = self.res.family
        scale = "sigma^2" if fam.residual_scale else (fam.dispersion_label or "phi").split(",")[0]
        return f"Dispersion model ({self.res.design.disp.formula}, log link: log {scale}):"

    def _wald_table(self) -> pd.DataFrame:
        r = self.res
        ci = r.conf_int(alpha=self.alpha)
        lo, hi = f"[{self.alpha / 2:g}", f"{1 - self.alpha / 2:g}]"
        return pd.DataFrame(
            {
                "Estimate": r.params,
                "Std.Err.": r.bse,
                "z": r.tvalues,
                "P>|z|": r.pvalues,
                lo: ci["lower"],
                hi: ci["upper"],
            }
        )

    def _random_table(self) -> pd.DataFrame:
        vc = self.res.varcorr()
        rows = []
        for grp, sub in vc.groupby("grp", sort=False):
            var = sub[sub["var2"].isna()]
            cov = sub[sub["var2"].notna()]
            names = list(var["var1"].fillna(""))
            for i, (_, v) in enumerate(var.iterrows()):
                corr = []
                for j in range(i):
                    c = cov[(cov["var1"] == names[j]) & (cov["var2"] == names[i])]
                    corr.append(f"{c['sdcor'].iloc[0]:.3f}" if len(c) else "")
                rows.append(
                    {
                        "Group": grp if i == 0 else "",
                        "Name": v["var1"] if isinstance(v["var1"], str) else "",
                        "Variance": v["vcov"],
                        "Std.Dev.": v["sdcor"],
                        "Corr": " ".join(corr),
                    }
                )
        table = pd.DataFrame(rows)
        mc = self.res.solver_error
        if mc is not None:  # the iterative solver's own error of each SD (σ is not probed)
            sd_mc = [v for k, v in mc.items() if k.startswith("sd_")]
            table["MC s.e."] = [f"{v:.2g}" for v in sd_mc] + [""] * (len(table) - len(sd_mc))
        # a structured term shows its own parameters on its first row, as glmmTMB prints them
        marks = varcomp.structure_notes(self.res.design.terms, self.res.theta)
        if marks:
            group = table["Group"].replace("", np.nan).ffill()
            for label, mark in marks.items():
                rows_of = np.flatnonzero(group.to_numpy() == label)
                table.loc[rows_of, "Corr"] = ""
                table.loc[rows_of[0], "Corr"] = mark
        return table

    def _header(self) -> list[str]:
        r = self.res
        fam = r.family
        if fam.is_lmm:
            title = f"Linear mixed model fit by {'REML' if r.is_reml else 'maximum likelihood'}"
        else:
            approx = "Laplace approximation" if r.nAGQ == 1 else f"adaptive Gauss-Hermite quadrature, nAGQ = {r.nAGQ}"
            if r.method.startswith("nAGQ=0"):
                approx = "PIRLS for beta, Laplace for theta (nAGQ = 0)"
            title = f"Generalized linear mixed model fit by maximum likelihood ({approx})"
        lines = [title, f" Formula: {r.design.formula}", f" Family: {fam.name} ( {fam.link_name} )"]
        if r.design.zi is not None:
            lines.insert(2, f" Zero inflation: {r.design.zi.formula}")
        if r.design.disp is not None and r.design.disp.no_residual:
            carrier = next((t.label for t in r.design.terms if t.carries_residual), "")
            lines.append(f" Dispersion: {r.design.disp.formula}, no residual ({carrier} carries it)")
        if r.is_reml:
            first = ("REML criterion", r.reml_criterion)
        elif fam.is_lmm:
            first = ("deviance", r.deviance)
        else:  # lme4's summary labels this "deviance"; res.deviance is deviance(m), another number
            first = ("-2 logLik", r.minus2llf)
        crit = [
            first,
            ("AIC", r.aic()),
            ("BIC", r.bic()),
            ("logLik", r.llf),
        ]
        lines.append(" " + "   ".join(f"{k}: {_fmt(v, 4)}" for k, v in crit))
        lines.append(self._solver_line())
        groups = ", ".join(f"{g}, {n}" for g, n in r.ngroups.items())
        lines.append(f" Number of obs: {r.nobs}, groups: {groups}")
        if r.n_dropped:
            lines.append(f" Rows dropped for missing values: {r.n_dropped}")
        return lines

    def _solver_line(self) -> str:
        r = self.res
        info = r.estimates.solver
        if info is None:
            return " Solver: direct (exact factorisation)"
        return (
            f" Solver: iterative (conjugate gradients, {info.probes} Hutchinson probes); Monte Carlo SE of "
            f"logLik {info.llf_mc_se:.2g}, of the estimates below in the 'MC s.e.' columns"
        )

    def _notes(self) -> list[str]:
        r = self.res
        notes = []
        if r.singular:
            notes.append(
                "boundary (singular) fit: a variance is (near) zero or a correlation is +/-1; "
                "simplify the random effects"
            )
        notes += [f"convergence: {m}" for m in r.convergence_messages]
        few = [g for g, n in r.ngroups.items() if n < 5]
        if few:
            notes.append(
                f"few groups ({', '.join(few)}): variance estimates are unreliable and Wald intervals too narrow"
            )
        notes += r.notes
        if r.design.dropped_columns:
            notes.append(f"rank-deficient design: dropped {', '.join(r.design.dropped_columns)}")
        return notes

    def as_text(self) -> str:
        """The summary as plain text."""
        out = self._header()
        fam = self.res.family
        if self.res.design.disp is not None:  # one dispersion per row: its model comes below
            pass
        elif fam.dispersion_label:  # glmmTMB's words
            out.append(
                f" Dispersion parameter for {fam.name} family ({fam.dispersion_label}): {self.res.dispersion:.5g}"
            )
        elif self.res.family.has_dispersion and not self.res.family.is_lmm:
            out.append(f" Dispersion (phi): {self.res.dispersion:.5g}")
        out += ["", "Random effects:"]
        rt = self.random.copy()
        for c in ("Variance", "Std.Dev."):
            rt[c] = rt[c].map(lambda v: _fmt(v, 4))
        out += [" " + line for line in rt.to_string(index=False).splitlines()]
        out += ["", "Fixed effects:"]
        ft = self.fixed.copy()
        for c in ft.columns:
            if pd.api.types.is_float_dtype(ft[c]):
                ft[c] = ft[c].map(
                    lambda v, c=c: (
                        f"{v:.4g}"
                        if c.startswith("P") or c == "p_value"
                        else (f"{v:.2g}" if c == "MC s.e." else _fmt(v, 4))
                    )
                )
        out += [" " + line for line in ft.to_string().splitlines()]
        for title, table in self._side_blocks():
            shown = table.copy()
            for c in shown.columns:
                shown[c] = shown[c].map(lambda v, c=c: f"{v:.4g}" if c.startswith("P") else _fmt(v, 4))
            out += ["", title] + [" " + line for line in shown.to_string().splitlines()]
        if self.anova is not None:
            at = self.anova.copy()
            for c in at.columns:
                if pd.api.types.is_float_dtype(at[c]):
                    at[c] = at[c].map(lambda v, c=c: f"{v:.4g}" if c.startswith("Pr") else _fmt(v, 4))
            out += ["", self._anova_title()] + [" " + line for line in at.to_string().splitlines()]
        icc = self._icc_line()
        if icc:
            out += ["", icc]
        notes = self._notes()
        if notes:
            out += ["", "Warnings:"] + [f" - {n}" for n in notes]
        return "\n".join(out)

    def _icc_line(self) -> str:
        try:
            icc = self.res.icc()
        except FitError:  # no random intercept: no ICC to show
            return ""
        return "ICC: " + ", ".join(f"{g} {v:.3f}" for g, v in icc.items())

    def __str__(self) -> str:
        return self.as_text()

    __repr__ = __str__

    def _anova_title(self) -> str:
        if not self.res.family.is_lmm:
            return "Type III Wald chi-square tests:"
        return f"Type III ANOVA table ({self._anova_ddf} denominator df):"

    def as_html(self) -> str:
        """The summary as HTML (for notebooks)."""
        head = "<br>".join(html.escape(x) for x in self._header())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self._notes())
        anova = "" if self.anova is None else f"<h4>{html.escape(self._anova_title())}</h4>{self.anova.to_html()}"
        sides = "".join(f"<h4>{html.escape(title)}</h4>{table.to_html()}" for title, table in self._side_blocks())
        anova = sides + anova
        return (
            f"<div><p>{head}</p><h4>Random effects</h4>{self.random.to_html(index=False)}"
            f"<h4>Fixed effects</h4>{self.fixed.to_html()}{anova}" + (f"<ul>{notes}</ul>" if notes else "") + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.as_html()
