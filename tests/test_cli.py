"""The midas-glmm command."""

import json
import subprocess
import sys

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


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", "as CSV: No columns to parse from file"),
        (b"y,g\n1,a\n2,b,3,4\n", "as CSV: Error tokenizing data. C error: Expected 2 fields in line 3, saw 4"),
        (b"y,g\n1,a\n\xf0\x28\x8c\xbc,b\n", "it is not UTF-8 text (byte 0xf0 at position"),
        (None, "is a directory, not a CSV file"),
        (b"y,g\n", "the data has no rows"),
    ],
    ids=["empty", "ragged", "binary", "directory", "header-only"],
)
def test_unreadable_csv_is_one_line_and_exit_2(tmp_path, capsys, content, pattern):
    path = tmp_path / "data.csv"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert main(["fit", str(path), "y ~ 1 + (1|g)"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("midas-glmm: error: ") and pattern in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "sleepstudy", "Reaction ~ Days + (Days | Subject)", "--json"],
        ["fit", "sleepstudy", "Reaction ~ Days + (Days | Subject)"],
        ["datasets"],
    ],
)
def test_a_reader_that_stops_early_is_not_an_error(args):
    # the reader closes the pipe before the fit is printed, as `| head -1` does
    proc = subprocess.Popen(
        [sys.executable, "-m", "midas_glmm.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_user_error_is_one_line_and_exit_2_when_piped():
    proc = subprocess.run(
        [sys.executable, "-m", "midas_glmm.cli", "fit", "sleepstudy", "Reaction ~ Days + (1 | Subjet)"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "midas-glmm: error: column 'Subjet' in formula 'Reaction ~ Days + (1 | Subjet)' is not in the data; "
        "did you mean 'Subject'?"
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_fit_many_writes_the_tidy_table(tmp_path, capsys, suffix):
    import numpy as np
    import pandas as pd

    sleep = datasets.load("sleepstudy")
    sleep.to_csv(tmp_path / "data.csv", index=False)
    rng = np.random.default_rng(1)
    Y = pd.DataFrame({f"g{k}": sleep.Reaction + rng.normal(0, 25, len(sleep)) for k in range(3)})
    Y.to_csv(tmp_path / "genes.csv", index=False)
    out = tmp_path / f"res{suffix}"
    args = ["fit-many", str(tmp_path / "data.csv"), "~ Days + (Days | Subject)", "--responses"]
    assert main(args + [str(tmp_path / "genes.csv"), "--out", str(out), "--fdr"]) == 0
    assert "3 responses, 3 fitted" in capsys.readouterr().out
    table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    ref = MixedModel.from_formula("y ~ Days + (Days | Subject)", sleep.assign(y=Y["g1"])).fit()
    row = table[(table.response == "g1") & (table.term == "Days")].iloc[0]
    assert row.estimate == pytest.approx(ref.params["Days"], rel=1e-8)
    assert row.p_value == pytest.approx(ref.pvalues["Days"], rel=1e-6) and row.p_adj >= row.p_value
    # a response file of the wrong length is a one-line user error
    Y.iloc[:10].to_csv(tmp_path / "short.csv", index=False)
    assert main(args + [str(tmp_path / "short.csv"), "--out", str(out)]) == 2
    assert "rows but the data has" in capsys.readouterr().err


def test_zero_inflation_and_link_options(capsys):
    f = "count ~ mined + (1|site)"
    assert main(["fit", "salamanders", f, "--family", "poisson", "--ziformula", "~ mined", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    res = MixedModel.from_formula(f, datasets.load("salamanders"), family="poisson", ziformula="~ mined").fit()
    assert got["loglik"] == pytest.approx(res.llf, abs=1e-8)
    assert got["zi_params"] == pytest.approx(res.zi_params.to_dict())
    assert main(["fit", "salamanders", f, "--family", "nbinom1", "--link", "sqrt"]) == 0
    assert "Family: nbinom1 ( sqrt )" in capsys.readouterr().out
    assert main(["fit", "salamanders", f, "--family", "nbinom1", "--link", "sqrtt"]) == 2
    assert "unknown link 'sqrtt'" in capsys.readouterr().err


def test_fit_many_checks_its_output_before_fitting(tmp_path, capsys, monkeypatch):
    """--out in a folder that does not exist is a user error before any response is fitted."""
    import midas_glmm.cli as cli

    sleep = datasets.load("sleepstudy")
    sleep.to_csv(tmp_path / "data.csv", index=False)
    sleep[["Reaction"]].to_csv(tmp_path / "genes.csv", index=False)

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the output was checked")

    monkeypatch.setattr(cli.MixedModel, "fit_many", no_fit)
    args = [
        "fit-many",
        str(tmp_path / "data.csv"),
        "~ Days + (Days | Subject)",
        "--responses",
        str(tmp_path / "genes.csv"),
    ]
    assert main(args + ["--out", str(tmp_path / "missing" / "o.csv")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    (tmp_path / "out.csv").mkdir()
    assert main(args + ["--out", str(tmp_path / "out.csv")]) == 2
    assert "is a folder" in capsys.readouterr().err
