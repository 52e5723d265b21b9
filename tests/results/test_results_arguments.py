"""Bad arguments to the results' public calls are the library's errors, naming the argument and the
value (they used to escape as raw numpy/pandas TypeErrors and ValueErrors, or pass silently)."""

import pandas as pd
import pytest

from midas_glmm import MixedModel, compare, datasets, plots
from midas_glmm.errors import DataError, FitError


@pytest.fixture(scope="module")
def slope():
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()


CALLS = {
    "simulate n negative": (lambda r: r.simulate(-1), r"n must be a positive integer, not -1"),
    "simulate n text": (lambda r: r.simulate("2"), r"n must be a positive integer, not '2'"),
    "simulate seed": (lambda r: r.simulate(1, seed="x"), r"seed must be None, a non-negative integer"),
    "bootstrap seed": (
        lambda r: r.conf_int(method="bootstrap", n_boot=2, seed=-3),
        r"seed must be None, a non-negative integer",
    ),
    "coef_table level": (lambda r: r.coef_table(level=95), r"level must be in \(0, 1\).*did you mean 0.95\?"),
    "coef_table ddf": (lambda r: r.coef_table(ddf="satterthwait"), r"unknown ddf 'satterthwait'"),
    "summary alpha": (lambda r: r.summary(alpha=5), r"alpha must be in \(0, 1\).*did you mean 0.05\?"),
    "caterpillar level": (lambda r: plots.caterpillar(r, level=1.5), r"level must be in \(0, 1\)"),
    "icc latent variance": (lambda r: r.icc(latent_variance="pi"), r"latent_variance must be a non-negative number"),
    "compare non-results": (lambda r: compare(r, 3), r"compare\(\) takes fitted models .*not int"),
    "prediction alpha": (lambda r: r.get_prediction().summary_frame(alpha=1.5), r"alpha must be in \(0, 1\)"),
    "prediction alpha percent": (lambda r: r.get_prediction().summary_frame(alpha=5), r"did you mean 0.05\?"),
    "anova ddf": (lambda r: r.anova(ddf="bogus"), r"unknown ddf 'bogus'"),
    "wald_test rhs length": (lambda r: r.wald_test([[0.0, 1.0]], rhs=[1.0, 2.0]), r"rhs must be one finite number"),
    "t_test rhs text": (lambda r: r.t_test([[0.0, 1.0]], rhs="x"), r"rhs must be numbers"),
    "t_test unknown coefficient": (
        lambda r: r.t_test(pd.DataFrame({"Day": [1.0]})),
        r"column 'Day'; did you mean 'Days'\?.*not a fixed effect",
    ),
    "simulate too many": (lambda r: r.simulate(10**12), r"GiB, more than half of this machine's memory"),
    "residuals too many": (lambda r: r.simulate_residuals(n=10**12), r"more than half of this machine's memory"),
    "fit_many ddf": (lambda r: r.model.fit_many(r.design.y[:, None], ddf="kr"), r"not available for fit_many"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_bad_argument_is_a_clear_fit_error(slope, call):
    fn, message = CALLS[call]
    with pytest.raises(FitError, match=message):
        fn(slope)


@pytest.fixture(scope="module")
def cbpp():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = datasets.load("cbpp")
        return MixedModel.from_formula(
            "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", data, family="binomial"
        ).fit()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.anova(ddf="kenward-roger"),
        lambda r: r.anova(ddf="satterthwaite"),
        lambda r: r.wald_test([[0, 1.0, 0, 0]], ddf="kenward-roger"),
        lambda r: r.t_test([[0, 1.0, 0, 0]], ddf="satterthwaite"),
        lambda r: r.emmeans("period", ddf="kenward-roger"),
    ],
)
def test_a_glmm_refuses_lmm_degrees_of_freedom_asked_for_by_name(cbpp, call):
    """A GLMM's tests are Wald tests (car, emmeans): Satterthwaite or Kenward-Roger asked for by
    name is refused, as coef_table refuses it, not ignored."""
    with pytest.raises(FitError, match="defined for linear mixed models; for a GLMM use ddf='normal'"):
        call(cbpp)
    assert list(cbpp.anova().columns) == ["Chisq", "Df", "Pr(>Chisq)"]  # the default stays Wald's


def test_a_wald_table_for_an_lmm_when_asked(slope):
    """anova(ddf="normal") of an LMM: the Wald chi-square of each term (it used to end in a KeyError)."""
    table = slope.anova(ddf="normal")
    assert list(table.columns) == ["Chisq", "Df", "Pr(>Chisq)"]
    b, se = slope.params["Days"], slope.bse["Days"]
    assert table.loc["Days", "Chisq"] == pytest.approx((b / se) ** 2, rel=1e-10)
    assert slope.drop1(ddf="asymptotic").equals(table)


def test_a_labelled_contrast_matrix_is_read_by_name(slope):
    """t_test / wald_test of a DataFrame L align its columns to the coefficients by name (they
    were read by position): columns in another order, or a subset, test the same hypothesis."""
    by_position = slope.t_test([[0.0, 1.0], [1.0, 0.0]])
    shuffled = pd.DataFrame({"Days": [1.0, 0.0], "(Intercept)": [0.0, 1.0]})
    assert slope.t_test(shuffled).estimate.tolist() == pytest.approx(by_position.estimate.tolist(), rel=1e-12)
    assert slope.wald_test(pd.Series({"Days": 1.0}))["F value"] == pytest.approx(
        slope.wald_test([[0.0, 1.0]])["F value"], rel=1e-12
    )
    with pytest.raises(FitError, match="names a fixed effect twice"):
        slope.t_test(pd.DataFrame([[1.0, 0.0]], columns=["Days", "Days"]))


def test_emmeans_refuses_a_variable_in_specs_and_by():
    data = datasets.load("cbpp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("incidence ~ C(period) + (1 | herd)", data).fit()
    with pytest.raises(FitError, match="'period' is in both specs and by"):
        res.emmeans("period", by="period")
    with pytest.raises(FitError, match="specs names a variable twice"):
        res.emmeans(["period", "period"])
    with pytest.raises(FitError, match="specs must be a variable name or a list of them"):
        res.emmeans(3)


def test_text_in_a_numeric_predictor_of_newdata_is_named(slope):
    with pytest.raises(DataError, match=r"newdata column 'Days' holds \w+ values but the fit used it as a number"):
        slope.predict(pd.DataFrame({"Days": ["2"], "Subject": ["308"]}))
    numbers_as_objects = pd.DataFrame({"Days": pd.Series([2, 3.0], dtype=object), "Subject": ["308", "308"]})
    as_floats = numbers_as_objects.astype({"Days": float})
    assert list(slope.predict(numbers_as_objects)) == list(slope.predict(as_floats))
