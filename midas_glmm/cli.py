"""The ``midas-glmm`` command: fit a model to a CSV file (or a bundled dataset) and print it.

midas-glmm fit DATA FORMULA [--family F] [--link L] [--ziformula "~ X"] [--method REML|ML] [--nagq K] [--json]
midas-glmm fit-many DATA "~ RHS" --responses Y.csv --out results.parquet [--n-jobs J] [--fdr]
midas-glmm datasets
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets
from .errors import DataError, MidasError
from .families import family
from .model import MixedModel

__all__ = ["main", "results_to_dict"]


FAMILY_HELP = "gaussian (default), binomial, poisson, gamma, nbinom2, nbinom1 or beta"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="midas-glmm",
        description="Fit linear and generalized linear mixed models written as lme4 formulas.",
        epilog='example: midas-glmm fit sleepstudy "Reaction ~ Days + (Days | Subject)"',
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser(
        "fit",
        help="fit a model and print its summary",
        description="Fit FORMULA to DATA (a CSV file, or the name of a bundled dataset).",
    )
    _model_arguments(f, "CSV file, or a bundled dataset name (see 'midas-glmm datasets')", "y ~ x + (1 | g)")
    f.add_argument("--nagq", type=int, default=1, help="GLMM quadrature points: 1 = Laplace (default)")
    f.add_argument("--weights", default=None, help="column of prior weights")
    f.add_argument("--json", action="store_true", help="write the results as JSON instead of the summary")
    fm = sub.add_parser(
        "fit-many",
        help="fit one model to many responses and write a tidy table",
        description="Fit FORMULA (its right-hand side) to every column of RESPONSES, on the rows of DATA.",
    )
    _model_arguments(fm, "CSV file (or bundled dataset): predictors and grouping factors", "~ age + (1 | donor)")
    fm.add_argument("--responses", required=True, help="CSV file: one column per response, one row per row of DATA")
    fm.add_argument("--out", required=True, help="output table: .parquet (needs pyarrow) or .csv")
    fm.add_argument("--n-jobs", type=int, default=1, help="processes to use (-1: every core)")
    fm.add_argument("--fdr", action="store_true", help="add Benjamini-Hochberg adjusted p-values (p_adj)")
    fm.add_argument("--progress", action="store_true", help="show progress on stderr")
    sub.add_parser("datasets", help="list the bundled datasets")
    return p


def _model_arguments(parser: argparse.ArgumentParser, data_help: str, formula_example: str) -> None:
    """DATA, FORMULA, --family and --method: what every fitting command takes."""
    parser.add_argument("data", help=data_help)
    parser.add_argument("formula", help=f'lme4-style formula, e.g. "{formula_example}"')
    parser.add_argument("--family", default=None, help=FAMILY_HELP)
    parser.add_argument(
        "--link", default=None, help="a link other than the family's default (logit, probit, sqrt, ...)"
    )
    parser.add_argument("--method", default=None, help="REML (Gaussian default) or ML")
    parser.add_argument(
        "--ziformula", default=None, help='zero-inflation part for poisson, nbinom2, nbinom1, e.g. "~ 1" or "~ x"'
    )


def _read(data: str) -> pd.DataFrame:
    """The CSV file ``data`` or, if no such file, the bundled dataset of that name; a file that is
    not a readable CSV is a DataError saying why."""
    path = Path(data)
    if path.is_dir():
        raise DataError(f"'{data}' is a directory, not a CSV file")
    if path.suffix.lower() not in (".csv", ".txt") and not path.exists():
        return datasets.load(data)
    if not path.exists():
        raise DataError(f"file '{data}' does not exist")
    try:
        return pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot read '{data}' as CSV: it is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
            f"{exc.start}); save it as CSV (UTF-8)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        reason = " ".join(str(exc).split())  # pandas' messages may span lines
        raise DataError(f"cannot read '{data}' as CSV: {reason}") from None


def _clean(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def results_to_dict(res) -> dict:
    """The numbers of a fit as plain JSON-ready Python objects."""
    vc = res.varcorr().astype(object).where(res.varcorr().notna(), None)
    out = {
        "formula": res.design.formula,
        "family": res.family.name,
        "link": res.family.link_name,
        "method": res.method,
        "nAGQ": res.nAGQ,
        "nobs": res.nobs,
        "n_dropped": res.n_dropped,
        "ngroups": res.ngroups,
        "fixef": {k: _clean(v) for k, v in res.params.items()},
        "fixef_se": {k: _clean(v) for k, v in res.bse.items()},
        "pvalues": {k: _clean(v) for k, v in res.pvalues.items()},
        "theta": [_clean(v) for v in res.theta],
        "sigma": _clean(res.sigma),
        "varcorr": [{k: _clean(v) for k, v in row.items()} for row in vc.to_dict("records")],
        "loglik": _clean(res.llf),
        "aic": _clean(res.aic()),
        "bic": _clean(res.bic()),
        "reml_criterion": _clean(res.reml_criterion) if res.reml_criterion is not None else None,
        "deviance": _deviance(res),
        "singular": bool(res.singular),
        "converged": bool(res.converged),
        "zi_params": None if res.zi_params is None else {k: _clean(v) for k, v in res.zi_params.items()},
        "zi_bse": None if res.zi_bse is None else {k: _clean(v) for k, v in res.zi_bse.items()},
        "ranef": {
            g: {"levels": [str(i) for i in df.index], "columns": list(df.columns), "values": df.to_numpy().tolist()}
            for g, df in res.ranef().items()
        },
    }
    return out


def _family(args):
    """--family with --link: a name, or the family with that link."""
    if args.link is None:
        return args.family
    return family(args.family or "gaussian", link=args.link)


def _deviance(res):
    """lme4's deviance(), or None where the family has none (NB1, beta) or a REML fit."""
    try:
        d = res.deviance
    except MidasError:
        return None
    return None if d is None else _clean(d)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``midas-glmm`` command: 0 on success, 2 for a user error (one line
    on stderr), as argparse does for a bad command line."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        return _emit("\n".join(datasets.names()))
    if args.command == "fit-many":
        return _fit_many(args)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = _read(args.data)
            model = MixedModel.from_formula(
                args.formula, data, family=_family(args), weights=args.weights, ziformula=args.ziformula
            )
            res = model.fit(method=args.method, nAGQ=args.nagq)
    except MidasError as exc:
        print(f"midas-glmm: error: {exc}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return _emit(json.dumps(results_to_dict(res), indent=2) if args.json else str(res.summary()))


def _fit_many(args) -> int:
    """``midas-glmm fit-many``: the tidy table of every response's fixed effects to ``--out``."""
    out = Path(args.out)
    try:
        if out.suffix.lower() not in (".parquet", ".csv"):
            raise DataError(f"--out must end in .parquet or .csv, not '{out.suffix or out.name}'")
        if out.suffix.lower() == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError("writing .parquet needs pyarrow (pip install pyarrow); or --out x.csv") from None
        _check_writable(out)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = _read(args.data)
            Y = _read(args.responses)
            if len(Y) != len(data):
                raise DataError(
                    f"--responses has {len(Y)} rows but the data has {len(data)}; give one row per row of the data"
                )
            Y.index = data.index
            model = MixedModel.from_formula(args.formula, data, family=_family(args), ziformula=args.ziformula)
            res = model.fit_many(Y, method=args.method, n_jobs=args.n_jobs, progress=args.progress)
            table = res.to_frame()
            if args.fdr:
                adj = res.pvalues_adjusted("fdr_bh")
                table["p_adj"] = adj.to_numpy().ravel()
            if out.suffix.lower() == ".parquet":
                table.to_parquet(out, index=False)
            else:
                table.to_csv(out, index=False)
    except MidasError as exc:
        print(f"midas-glmm: error: {exc}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return _emit(f"{res!r}\nwrote {len(table)} rows to {out}")


def _check_writable(out: Path) -> None:
    """Refuse, before any fitting, an --out whose folder does not exist or cannot be written."""
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"--out {str(out)!r}: the folder {str(folder)!r} does not exist; create it first")
    if out.is_dir():
        raise DataError(f"--out {str(out)!r} is a folder; give a file name ending in .csv or .parquet")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise DataError(f"--out {str(out)!r} cannot be written here (permissions); choose another path")


def _emit(text: str) -> int:
    """Print ``text`` to stdout; a reader that stops early (``| head``) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout is gone: point it at devnull so that Python's own flush at exit stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
