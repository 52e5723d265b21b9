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
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_bad_argument_is_a_clear_fit_error(slope, call):
    fn, message = CALLS[call]
    with pytest.raises(FitError, match=message):
        fn(slope)


def test_text_in_a_numeric_predictor_of_newdata_is_named(slope):
    with pytest.raises(DataError, match=r"newdata column 'Days' holds \w+ values but the fit used it as a number"):
        slope.predict(pd.DataFrame({"Days": ["2"], "Subject": ["308"]}))
    numbers_as_objects = pd.DataFrame({"Days": pd.Series([2, 3.0], dtype=object), "Subject": ["308", "308"]})
    as_floats = numbers_as_objects.astype({"Days": float})
    assert list(slope.predict(numbers_as_objects)) == list(slope.predict(as_floats))
