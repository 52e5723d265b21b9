"""The midas-glmm command."""

import json

import pytest

from midas_glmm import MixedModel, datasets
from midas_glmm.cli import main


def test_fit_prints_the_summary(capsys):
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (Days | Subject)"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion: 1743.6283" in out and "Fixed effects:" in out


def test_json_output_matches_the_python_api(tmp_path, capsys):
    path = tmp_path / "cbpp.csv"
    datasets.load("cbpp").to_csv(path, index=False)
    f = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)"
    assert main(["fit", str(path), f, "--family", "binomial", "--nagq", "5", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    res = MixedModel.from_formula(f, datasets.load("cbpp"), family="binomial").fit(nAGQ=5)
    assert got["loglik"] == pytest.approx(res.llf, abs=1e-8)
    assert got["method"] == "AGQ" and got["nAGQ"] == 5
    assert list(got["fixef"]) == list(res.params.index)


def test_user_errors_are_one_line_not_a_traceback(capsys):
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (Days | Subjct)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("midas-glmm: error: column 'Subjct'") and "Traceback" not in err
    assert main(["fit", "missing.csv", "y ~ (1|g)"]) == 2


def test_help_and_dataset_list(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "lme4" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "sleepstudy" in capsys.readouterr().out.split()
