"""glmmTMB's families nbinom2 (variance μ + μ²/θ), nbinom1 (μ(1 + φ)) and beta (μ(1 − μ)/(1 + φ))
against glmmTMB (issue 15, without zero-inflation).

References: tests/reference/tmb_families/ (make_tmb_families.R: glmmTMB 1.1.5, Laplace with the
dispersion estimated jointly): glmmTMB's Salamanders (NB2, NB1), lme4's grouseticks (NB2, two
grouping factors), glmmTMB's Owls (NB1 with an offset and an interaction), simulated NB2 and beta
cases. Tolerances are the reference README's for GLMMs: logLik 1e-3, fixed effects 5e-3 SE, SEs
5e-3 relative, dispersion and variances 5e-3 relative."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ZI_CASES

import midas_glmm as mg
from midas_glmm import MixedModel
from midas_glmm.errors import BoundaryTestWarning, DataError, FitError

REF = Path(__file__).resolve().parents[1] / "reference" / "tmb_families"
CASES = ["salamanders_nb2", "grouseticks_nb2", "simulated_nb2", "salamanders_nb1", "owls_nb1", "simulated_beta"]


def load(case):
    ref = json.loads((REF / f"{case}.json").read_text())
    df = pd.read_csv(REF / ref["data"])
    for col, levels in (ref.get("factor_levels") or {}).items():  # R's level order (first = reference)
        df[col] = pd.Categorical(df[col].astype(str), categories=levels)
    formula = ref["formula_py"].replace("C(spp)", "spp").replace("C(mined)", "mined")
    return ref, df, formula


@pytest.fixture(scope="module", params=CASES + ZI_CASES)
def fitted(request):
    ref, df, formula = load(request.param)
    family = mg.family(ref["family"], link=ref["link"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedModel.from_formula(formula, df, family=family, ziformula=ref.get("ziformula_py"))
        return ref, model.fit()


def test_loglik_aic_bic(fitted):
    ref, res = fitted
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-3)
    assert res.llf >= ref["loglik"] - 1e-6  # never worse than glmmTMB
    assert res.aic() == pytest.approx(ref["aic"], abs=1e-2) and res.bic() == pytest.approx(ref["bic"], abs=1e-2)
    assert res.df_modelwc == ref["df"]


def test_fixed_effects_and_standard_errors(fitted):
    ref, res = fitted
    se = np.array(ref["fixef_se"])
    assert np.all(np.abs(res.params.to_numpy() - np.array(ref["fixef"])) <= 5e-3 * se)
    assert np.allclose(res.bse.to_numpy(), se, rtol=5e-3)


def test_dispersion_and_variances(fitted):
    ref, res = fitted
    assert res.dispersion == pytest.approx(ref["sigma_glmmTMB"], rel=5e-3)  # glmmTMB's sigma(m) = θ
    assert res.sigma == res.dispersion
    vc = res.varcorr()
    assert "Residual" not in set(vc["grp"])  # θ is no residual SD (glmmTMB's VarCorr has none)
    for row in ref["varcorr"]:
        ours = vc[(vc["grp"] == row["grp"]) & (vc["var1"] == row["var1"])]["vcov"].iloc[0]
        assert ours == pytest.approx(row["vcov"], rel=5e-3)


def test_conditional_modes(fitted):
    ref, res = fitted
    table = res.ranef(condvar=True)  # lme4's as.data.frame(ranef(m, condVar = TRUE)) layout
    for group, r in ref["ranef"].items():
        ours = table[table["grpvar"] == group].set_index("grp")
        ours.index = ours.index.astype(str)
        ours = ours.reindex([str(v) for v in r["levels"]])
        assert np.all(np.abs(ours["condval"].to_numpy() - np.array(r["values"])) <= 5e-3 * np.array(r["condsd"]))
        # condsd is lme4's (the modes' conditional SD given β̂, θ̂); glmmTMB's condVar also carries
        # β̂'s uncertainty, so it is a little larger: not the same quantity, not compared
        assert np.all(ours["condsd"].to_numpy() <= np.array(r["condsd"]) * (1 + 1e-6))


def test_summary_predict_simulate_residuals():
    ref, df, formula = load("salamanders_nb2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, df, family="nbinom2").fit()
    text = str(res.summary())
    assert "Dispersion parameter for nbinom2 family (size theta): 0.9424" in text
    mu = res.predict(kind="response") if "kind" in res.predict.__code__.co_varnames else np.exp(res.predict())
    assert np.all(np.asarray(mu) > 0)
    sims = res.simulate(n=200, seed=1)
    sims = np.asarray(sims)
    assert np.all(sims >= 0) and np.all(sims == np.round(sims))
    # NB2 variance μ + μ²/θ with the conditional μ: the simulated variance of a row's draws
    y = sims.reshape(len(df), -1)
    assert np.mean(y) == pytest.approx(np.mean(res.fittedvalues), rel=0.1)
    pearson = res.resid_pearson.to_numpy()
    fitted_mu = res.fittedvalues.to_numpy()
    expected = (df["count"].to_numpy() - fitted_mu) / np.sqrt(fitted_mu + fitted_mu**2 / res.dispersion)
    assert np.allclose(pearson, expected, rtol=1e-8)
    with pytest.raises(FitError, match="not available for nbinom2"):
        res.icc()


def test_poisson_against_nb2_is_a_boundary_test():
    ref, df, formula = load("salamanders_nb2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nb = MixedModel.from_formula(formula, df, family="nbinom2").fit()
        po = MixedModel.from_formula(formula, df, family="poisson").fit()
    with pytest.warns(BoundaryTestWarning, match="50:50 mixture"):
        table = mg.compare(po, nb)
    assert table["Df"].iloc[1] == 1 and table["Chisq"].iloc[1] == pytest.approx(2 * (nb.llf - po.llf))
    assert table.index[1].endswith("[nbinom2]") and table.index[0].endswith("[poisson]")
    g = MixedModel.from_formula(formula, df.assign(count=(df["count"] > 0).astype(float)), family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gb = g.fit()
    with pytest.raises(FitError, match="not nested"):
        mg.compare(gb, nb)


@pytest.mark.parametrize("family", ["nbinom1", "beta"])
def test_simulate_and_pearson_residuals_of_nb1_and_beta(family):
    case = {"nbinom1": "owls_nb1", "beta": "simulated_beta"}[family]
    ref, df, formula = load(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, df, family=family).fit()
    assert res.sigma == res.dispersion == pytest.approx(ref["sigma_glmmTMB"], rel=5e-3)
    sims = np.asarray(res.simulate(n=300, seed=2)).reshape(len(df), -1)
    mu = res.fittedvalues.to_numpy()
    # glmmTMB's Pearson residuals divide by its variance function: μ(1 + φ) for nbinom1, μ(1 − μ)
    # for beta (the precision left out; tests/reference/issue24/beta_pearson.json)
    V = mu * (1 + res.dispersion) if family == "nbinom1" else mu * (1 - mu)
    # the draws have the family's conditional mean and variance (given the fitted random effects
    # they are unconditional on them: compare the average over rows, loosely)
    y = df[formula.split("~")[0].strip()].to_numpy()
    assert np.allclose(res.resid_pearson.to_numpy(), (y - mu) / np.sqrt(V), rtol=1e-8)
    assert np.all(np.isfinite(sims))
    if family == "beta":
        assert np.all((sims > 0) & (sims < 1))
    else:
        assert np.all(sims == np.round(sims)) and np.all(sims >= 0)
    with pytest.raises(FitError, match="not defined here"):
        _ = res.resid_deviance
    assert f"Dispersion parameter for {family} family" in str(res.summary())


def test_beta_outside_the_open_interval_is_refused():
    df = pd.DataFrame({"y": [0.2, 0.5, 0.0, 0.7, 0.4, 0.6] * 3, "g": list("abc") * 6})
    with pytest.raises(DataError, match="0 < y < 1 strictly. Exact 0s and 1s need another family"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df, family="beta")
    with pytest.raises(DataError, match="0 < y < 1"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df.assign(y=df.y + 0.5), family="beta")


def test_bad_counts_are_refused():
    df = pd.DataFrame({"y": [1, 2, -1, 4, 0, 3] * 3, "g": list("abc") * 6})
    with pytest.raises(DataError, match="negative binomial response 'y' has negative values"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df, family="nbinom2")
    with pytest.raises(DataError, match="non-integer"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df.assign(y=df.y.abs() + 0.5), family="nbinom2")
    with pytest.raises(DataError, match="negative binomial response 'y' has negative values"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df, family="nbinom1")


def test_nb2_data_from_nb2_recovers_theta():
    """A property a bug in the likelihood or the weights would break: θ and β come back."""
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(60), 25)
    x = rng.normal(size=len(g))
    mu = np.exp(1.0 + 0.5 * x + rng.normal(0, 0.4, 60)[g])
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ x + (1|g)", pd.DataFrame({"y": y, "x": x, "g": g}), family="nbinom2").fit()
    assert res.dispersion == pytest.approx(3.0, rel=0.25)
    assert res.params["x"] == pytest.approx(0.5, abs=4 * res.bse["x"])


def test_bundled_datasets_keep_r_level_order():
    from midas_glmm import datasets

    sal = datasets.load("salamanders")
    assert list(sal["spp"].cat.categories)[:2] == ["GP", "PR"] and list(sal["mined"].cat.categories) == ["yes", "no"]
    ref, _, formula = load("salamanders_nb2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, sal, family="nbinom2").fit()
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-3)


@pytest.mark.parametrize("family", ["nbinom1", "beta", "nbinom2"])
def test_results_of_the_new_families_save_and_load(family, tmp_path):
    import copy
    import pickle

    case = {"nbinom1": "owls_nb1", "beta": "simulated_beta", "nbinom2": "simulated_nb2"}[family]
    ref, df, formula = load(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, df, family=family).fit()
    path = tmp_path / "fit.pkl"
    res.save(path)
    back = mg.load(path)
    assert back.llf == res.llf and back.family.name == family
    assert copy.deepcopy(res.family).name == family and pickle.loads(pickle.dumps(res.family)).name == family


def test_cli_json_for_a_family_without_deviance(tmp_path, capsys):
    from midas_glmm.cli import main

    ref, df, formula = load("simulated_beta")
    df.to_csv(tmp_path / "d.csv", index=False)
    assert main(["fit", str(tmp_path / "d.csv"), formula, "--family", "beta", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deviance"] is None and out["loglik"] == pytest.approx(ref["loglik"], abs=1e-3)


def test_a_fixed_statsmodels_alpha_is_refused():
    import statsmodels.api as sm

    from midas_glmm.errors import FamilyError

    with pytest.raises(FamilyError, match="fixed negative binomial alpha"):
        MixedModel.from_formula(
            "y ~ x + (1|g)",
            pd.DataFrame({"y": [1, 2] * 6, "x": range(12), "g": list("abc") * 4}),
            family=sm.families.NegativeBinomial(alpha=0.3),
        )


def test_nb2_loglik_tends_to_poisson_as_theta_grows():
    """log NB2(y; μ, θ) → log Poisson(y; μ) as θ → ∞, without losing digits on the way."""
    from scipy import stats

    from midas_glmm.families import ResponseTerms, resolve_family

    y = np.array([0.0, 1, 3, 7, 20])
    mu = np.array([0.4, 1.5, 2.5, 6.0, 18.0])
    terms = ResponseTerms(resolve_family("nbinom2"), y, np.ones(5))
    poisson = stats.poisson.logpmf(y, mu)
    for theta in (1e4, 1e6, 1e8):
        assert np.allclose(terms.rows(mu, theta), poisson, atol=50 * float(np.max(y + mu)) / theta + 1e-7)
    assert np.allclose(terms.rows(mu, 2.5), stats.nbinom.logpmf(y, 2.5, 2.5 / (2.5 + mu)), rtol=1e-12)


def test_gamma_function_differences_keep_their_digits_for_large_sizes():
    """log Γ(y+s) − log Γ(s), ψ(y+s) − ψ(s) and ψ'(y+s) − ψ'(s) against their exact sums for
    whole y (Σ log(s+k), Σ 1/(s+k), −Σ 1/(s+k)²), from small s to 1e20: scipy's differences
    lose 8 digits at s = 1e8 and all of them beyond."""
    from midas_glmm.families.special import digamma_difference, lgamma_ratio, trigamma_difference

    for s in [0.3, 5.0, 29.9, 30.0, 1e3, 1e8, 1e20]:
        for y in [0, 1, 3, 40]:
            k = np.arange(y, dtype=np.longdouble) + np.longdouble(s)
            exact = [float(np.sum(np.log(k))), float(np.sum(1 / k)), -float(np.sum(1 / k**2))]
            got = [f(np.array([y]), np.array([s]))[0] for f in (lgamma_ratio, digamma_difference, trigamma_difference)]
            assert np.allclose(got, exact, rtol=1e-12, atol=1e-300)


def test_negative_binomials_on_underdispersed_counts_reach_the_poisson_limit():
    """Binomial counts (variance below the mean): NB1's φ goes to 0 and NB2's θ to infinity, where
    both are the Poisson model: their log-likelihoods equal Poisson's (before the gamma-function
    differences were written for large sizes, NB1 reported +55 and NB2 +198 here)."""
    rng = np.random.default_rng(11)
    g, x = rng.integers(0, 40, 2000), rng.normal(size=2000)
    y = rng.binomial(20, 1 / (1 + np.exp(-(-1.0 + 0.3 * x + rng.normal(0, 0.4, 40)[g]))))
    df = pd.DataFrame({"g": g, "x": x, "y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        poisson = MixedModel.from_formula("y ~ x + (1|g)", df, family="poisson").fit()
        nb1 = MixedModel.from_formula("y ~ x + (1|g)", df, family="nbinom1").fit()
        nb2 = MixedModel.from_formula("y ~ x + (1|g)", df, family="nbinom2").fit()
    assert nb1.dispersion < 1e-6 and nb2.dispersion > 1e6
    for r in (nb1, nb2):
        assert r.llf == pytest.approx(poisson.llf, abs=1e-6)
        assert np.allclose(r.params, poisson.params, atol=1e-3 * poisson.bse.min())


def test_nb2_log_density_kept_per_size_equals_a_fresh_one():
    """NB2's log Γ(y + θ) − log Γ(θ) is kept per size θ across PIRLS steps: revisiting sizes in any
    order gives scipy's log-density every time."""
    from scipy import stats

    from midas_glmm.families import ResponseTerms, resolve_family

    fam = resolve_family("nbinom2")
    rng = np.random.default_rng(8)
    y = rng.negative_binomial(2.0, 0.3, 200).astype(float)
    terms = ResponseTerms(fam, y, np.ones_like(y))
    for size in (0.7, 3.0, 0.7, 45.0, 3.0, 0.2, 9.0, 0.7):
        mu = rng.uniform(0.5, 8.0, y.size)
        want = stats.nbinom.logpmf(y, size, size / (size + mu))
        assert np.allclose(terms.rows(mu, size), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "family, link",
    [("nbinom2", "log"), ("nbinom2", "sqrt"), ("nbinom2", "identity"), ("gamma", "log"), ("gamma", "inverse")],
)
@pytest.mark.parametrize("theta", [0.7, 40.0, "rows"])
def test_log_dispersion_derivatives_equal_central_differences(family, link, theta):
    """NB2's and Gamma's (∂ℓ, ∂ℓ', ∂w)/∂ log φ in closed form (the Laplace gradient's dispersion
    channel) against central differences of their own log f, score and observed information,
    with one φ or one per row (a dispersion model), prior weights, and counts of 0 among NB2's."""
    from midas_glmm.families import ResponseTerms

    fam = mg.family(family, link=link)
    rng = np.random.default_rng(3)
    n = 200
    mu = rng.uniform(0.2, 9.0, n)
    if family == "nbinom2":
        y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    else:
        y = rng.gamma(3.0, mu / 3.0)
    prior = rng.uniform(0.5, 2.0, n)
    eta = fam.link(mu)
    th = rng.uniform(0.5, 30.0, n) if theta == "rows" else theta
    terms = ResponseTerms(fam, y, prior)

    def rows(t):
        score, obs, _ = fam.eta_derivatives(y, mu, eta, t)
        return terms.rows(mu, t), prior * score, prior * obs

    h = 1e-5
    plus, minus = rows(th * np.exp(h)), rows(th * np.exp(-h))
    got = fam.log_phi_rows(y, mu, eta, prior, th)
    for g, p, m in zip(got, plus, minus):
        want = (p - m) / (2 * h)
        assert np.allclose(g, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    # the caller's prior-weighted ℓ' and w at φ (the Laplace gradient has them) give the same rows
    given = fam.log_phi_rows(y, mu, eta, prior, th, derivs=rows(th)[1:])
    for g, d in zip(got, given):
        assert np.allclose(g, d, rtol=1e-13, atol=0)
