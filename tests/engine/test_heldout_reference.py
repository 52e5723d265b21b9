"""Held-out cases of covariance structures and dispersion models (tests/reference/covstruct/
heldout, made by make_heldout.R there, after the library was written against the first set):
glmmTMB 1.1.5's and nlme's fits of new data, other sizes and other combinations (REML ar1 and
toep, a binomial cs, a 3 × 3 us, crossed ar1 + diag in a Poisson model, two-variable and factor
dispersion models, NB1 and beta with ar1, nlme's corAR1 by REML and varIdent with four arms).
The same tolerances as the first set: log-likelihood within 1e-3 or higher, fixed effects 1e-3
relative, SDs 2e-3 relative, correlations and dispersion coefficients 2e-3."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midas_glmm import MixedModel

DIR = Path(__file__).parents[1] / "reference" / "covstruct" / "heldout"
FAMILIES = {"gaussian": None, "beta": "beta"}


def _cases():
    out = []
    for path in sorted(DIR.glob("*.json")):
        ref = json.loads(path.read_text())
        for key, fit in ref["fits"].items():
            if fit.get("engine") == "glmmTMB":
                out.append(pytest.param((path.stem, key), id=f"{path.stem}-{key}"))
    return out


def _data(ref):
    data = pd.read_csv(DIR / ref["data"]["file"], dtype=str)
    levels = ref["data"].get("factor_levels", {})
    for c in data.columns:
        data[c] = pd.Categorical(data[c], categories=levels[c]) if c in levels else pd.to_numeric(data[c])
    return data


def _fit(ref, call):
    family = FAMILIES.get(call["family"], call["family"])
    if family == "beta_family":
        family = "beta"
    disp = None if call.get("dispformula", "~1").replace(" ", "") == "~1" else call["dispformula"]
    model = MixedModel.from_formula(call["formula"], _data(ref), family=family, dispformula=disp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family is None:
            return model.fit(method="REML" if call.get("REML") else "ML")
        return model.fit()


def _same_columns(ours, theirs) -> bool:
    """glmmTMB's column names (tft1, condctrl, (Intercept)) against formulaic's (tf[t1], C(t)[1.0])."""
    strip = [re.sub(r"^C\((\w+)\)", r"\1", c).replace("[", "").replace("]", "").replace("T.", "") for c in ours]
    return strip == list(theirs)


@pytest.fixture(scope="module", params=_cases())
def case(request):
    name, key = request.param
    ref = json.loads((DIR / f"{name}.json").read_text())
    fit = ref["fits"][key]
    return name, _fit(ref, fit["call"]), fit, ref


def test_log_likelihood(case):
    name, res, fit, _ = case
    ref = fit["loglik"] if fit.get("loglik") is not None else fit["loglik_objective"]
    assert res.llf > ref - 1e-3, name


def test_fixed_effects_and_standard_errors(case):
    name, res, fit, _ = case
    np.testing.assert_allclose(res.params.to_numpy(), fit["fixef"], rtol=1e-3, atol=1e-3 * min(fit["fixef_se"]))
    se = fit["gaussian_check"]["fixef_se_gls"] if fit.get("gaussian_check") else fit["fixef_se"]
    np.testing.assert_allclose(res.bse.to_numpy(), se, rtol=2e-3)


def test_sds_and_correlations(case):
    name, res, fit, _ = case
    covs = {(t.group_name, tuple(t.columns)): S for t, S in zip(res.design.terms, res.term_covariances())}
    for term in fit["re_terms"]:
        match = [k for k in covs if k[0] == term["group"] and _same_columns(k[1], term["stddev_names"])]
        assert match, (term["term"], list(covs))
        S = covs[match[0]]
        sd = np.sqrt(np.diag(S))
        np.testing.assert_allclose(sd, term["stddev"], rtol=2e-3, err_msg=f"{name} {term['term']}")
        if len(sd) > 1:
            np.testing.assert_allclose(S / np.outer(sd, sd), np.array(term["correlation"], dtype=float), atol=2e-3)


def test_dispersion_coefficients(case):
    name, res, fit, _ = case
    if res.design.disp is not None and res.design.disp.no_residual:  # glmmTMB's is fixed at log(1.5e-8)
        assert res.disp_params is None and np.all(res.predict(kind="dispersion") == 0)
        return
    if not fit.get("disp"):
        assert res.disp_params is None
        return
    np.testing.assert_allclose(res.disp_params.to_numpy(), fit["disp"]["fixef"], atol=2e-3)
    np.testing.assert_allclose(res.disp_bse.to_numpy(), fit["disp"]["se"], rtol=2e-2)


def test_nlme_fits_of_the_same_data(case):
    """Where nlme fitted the same model (corAR1, varIdent): its log-likelihood and estimates."""
    name, res, fit, ref = case
    nlme = [f for f in ref["fits"].values() if f.get("engine") == "nlme"]
    reml = bool(fit["call"].get("REML"))
    same = [f for f in nlme if (f["call"].get("method") == "REML") == reml]
    for nl in same:
        assert res.llf == pytest.approx(nl["loglik"], abs=1e-5)
        np.testing.assert_allclose(res.params.to_numpy(), nl["fixef"], rtol=1e-4, atol=1e-6)
