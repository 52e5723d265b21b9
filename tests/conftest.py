import functools
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import statsmodels.api as sm

from midas_glmm import MixedModel

REF = Path(__file__).parent / "reference"


def _case_path(name: str) -> Path:
    path = REF / f"{name}.json"
    return path if path.exists() else REF / "extra" / f"{name}.json"


def load_case(name: str) -> dict:
    ref = json.loads(_case_path(name).read_text())
    ref["_dir"] = str(_case_path(name).parent)
    return ref


def read_reference_csv(path) -> pd.DataFrame:
    """Read a reference CSV with every non-numeric column as strings (R factor labels)."""
    df = pd.read_csv(path, dtype=str)
    for c in df.columns:
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().sum() == df[c].notna().sum():
            df[c] = num
    return df


def case_data(ref: dict, key: str = "data") -> pd.DataFrame:
    """The reference case's CSV (:func:`read_reference_csv`)."""
    return read_reference_csv(Path(ref["_dir"]) / ref[key])


def case_names(kind: str) -> list[str]:
    out = []
    for p in sorted(REF.glob("*.json")) + sorted((REF / "extra").glob("*.json")):
        fam = json.loads(p.read_text())["family"]
        if (fam == "gaussian") == (kind == "lmm"):
            out.append(p.stem)
    return out


#: tests/reference/covstruct: glmmTMB 1.1.5 and nlme fits of structured terms and dispersion models
COVSTRUCT = REF / "covstruct"


def covstruct_case(name: str) -> dict:
    """A case of tests/reference/covstruct (make_covstruct.R)."""
    return json.loads((COVSTRUCT / f"{name}.json").read_text())


def covstruct_data(ref: dict) -> pd.DataFrame:
    """The case's CSV with its factors as categoricals in R's level order (the time factors'
    order is what ar1 and toep read)."""
    data = pd.read_csv(COVSTRUCT / ref["data"]["file"], dtype=str)
    levels = ref["data"].get("factor_levels", {})
    for c in data.columns:
        data[c] = pd.Categorical(data[c], categories=levels[c]) if c in levels else pd.to_numeric(data[c])
    return data


@pytest.fixture
def ref_loader():
    return load_case


#: tests/reference/tmb_families/make_tmb_zi.R's cases (zero-inflation, a probit link): test_tmb_families.py
#: checks their likelihoods and estimates, test_zero_inflation.py the rest
ZI_CASES = [
    "salamanders_poisson",
    "salamanders_zip",
    "salamanders_zinb2",
    "salamanders_zinb1",
    "salamanders_zinb2_zi1",
    "simulated_zinb2",
    "simulated_zip_offset",
    "simulated_beta_probit",
]


ALL = case_names("lmm") + case_names("glmm")


@functools.cache
def fitted(case: str):
    ref = load_case(case)
    family = None
    if ref["family"] != "gaussian":
        links = {
            "log": sm.families.links.Log(),
            "logit": sm.families.links.Logit(),
            "probit": sm.families.links.Probit(),
        }
        fams = {"binomial": sm.families.Binomial, "poisson": sm.families.Poisson, "Gamma": sm.families.Gamma}
        family = fams[ref["family"]](links[ref["link"]])
    model = MixedModel.from_formula(ref["formula_py"], case_data(ref), family=family, weights=ref.get("weights"))
    method = ref["method"] if ref["method"] in ("REML", "ML") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(method=method, nAGQ=max(ref["nAGQ"], 1), fast=ref["nAGQ"] == 0)
    return ref, res


def is_target(case):
    return case != "gamma_log_lme4"  # lme4's Gamma scale differs: kept for information (README)


TARGETS = [c for c in ALL if is_target(c)]
