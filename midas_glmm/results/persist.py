"""Saving and loading fitted results (``res.save(path)``, ``midas_glmm.load(path)``).

``remove_data=True`` (the default) leaves out everything with one entry per row — the response,
the fixed and random design columns, weights, offsets, group codes — and keeps what a fit is
and what ``predict(newdata)`` needs: estimates, covariances, random effects and their
conditional variances, the formula's encodings and the grouping levels. A 1e6-row fit then
takes kilobytes to megabytes, not the size of its data. Anything that needs the rows (fitted
values, residuals, simulation, profiles, degrees of freedom of tests) raises a FitError that says
so. Files are Python pickles: load only files you trust.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import numpy as np

from ..errors import DataError, FitError

__all__ = ["save", "read", "RemovedRows"]

#: cached results that hold one value per row: not saved without the data
_ROW_SIZED_CACHE = ("fittedvalues", "resid", "resid_pearson", "resid_deviance")


class RemovedRows:
    """Stands for row-sized data a saved result left out: any use raises a FitError."""

    def __init__(self, what: str):
        self.what = what

    def __reduce__(self):
        return (RemovedRows, (self.what,))

    def _fail(self, *args, **kwargs):
        raise FitError(
            f"this result was saved without its data (remove_data=True) and this needs the rows ({self.what}); "
            "fit the model again from the data, or save with remove_data=False"
        )

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._fail()

    __array__ = __len__ = __iter__ = __getitem__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail
    __truediv__ = __rtruediv__ = __matmul__ = __rmatmul__ = __neg__ = _fail
    __eq__ = __ne__ = __lt__ = __gt__ = __le__ = __ge__ = _fail
    __hash__ = None


def _without_rows(res):
    """A copy of ``res`` whose design and terms hold no row-sized arrays."""
    d = res.design
    terms = []
    for t in d.terms:
        _ = t.is_intercept  # computed now (it reads the rows) and kept
        stripped = replace(t, codes=RemovedRows("group codes"), Zcols=RemovedRows("random-effects columns"))
        stripped.__dict__["is_intercept"] = t.is_intercept
        terms.append(stripped)
    design = replace(
        d,
        y=RemovedRows("response"),
        X=RemovedRows("fixed-effects design"),
        weights=RemovedRows("weights"),
        # an all-zero offset stays known (predict(newdata) asks whether there was one)
        offset=0.0 if not np.any(d.offset) else RemovedRows("offset"),
        trials=None if d.trials is None else RemovedRows("trials"),
        row_index=RemovedRows("row index"),
        terms=terms,
        zi=None if d.zi is None else replace(d.zi, X=RemovedRows("zero-inflation design")),
        disp=None if d.disp is None else replace(d.disp, X=RemovedRows("dispersion design")),
    )
    est = copy.copy(res.estimates)
    est.__dict__["condvar"] = res.estimates.condvar  # computed now: it needs the factor
    est.condvar_fn = None
    model = copy.copy(res.model)
    model.design = design
    if model.built_from is not None:  # the data it was built from: by name only
        model.built_from = dict(model.built_from, data=RemovedRows("data the model was built from"))
        for key in ("weights", "offset"):
            if not (model.built_from[key] is None or isinstance(model.built_from[key], str)):
                model.built_from[key] = RemovedRows(key)
    out = copy.copy(res)
    out.__dict__ = {k: v for k, v in res.__dict__.items() if k not in _ROW_SIZED_CACHE}
    out.model, out.design, out.estimates = model, design, est
    return out


def save(res, path, remove_data: bool = True) -> None:
    """Pickle a fitted result to ``path`` (without its rows unless ``remove_data=False``)."""
    if res.design.source is not None and not remove_data:
        raise FitError("a Dask fit's rows live on the cluster: save it with remove_data=True")
    obj = _without_rows(res) if remove_data else res
    if not remove_data:
        _ = res.estimates.condvar  # the factor behind it is not needed after this
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


#: where the classes of a result saved before the package's subpackages (0.1.0, 2026-11) live now
_MOVED = {
    "midas_glmm.results": "midas_glmm.results.fitted",
    "midas_glmm.persist": "midas_glmm.results.persist",
    "midas_glmm.design": "midas_glmm.design.design",
    "midas_glmm.formula": "midas_glmm.design.formula",
    "midas_glmm.reterms": "midas_glmm.design.reterms",
    "midas_glmm.zeroinfl": "midas_glmm.design.zeroinfl",
    "midas_glmm.daskdata": "midas_glmm.design.daskdata",
    "midas_glmm.estimates": "midas_glmm.engine.estimates",
    "midas_glmm.optimize": "midas_glmm.engine.optimize",
    "midas_glmm.families": "midas_glmm.families.base",
}


class _Legacy:
    """Stands in, while a file is read, for a class that no longer exists (the family's old
    wrapper of statsmodels' families); the family rebuilds itself from its name and link."""


class _Reader(pickle.Unpickler):
    """Reads results saved by this version and by the one before its subpackages."""

    def find_class(self, module: str, name: str):
        if module == "midas_glmm.families" and name == "_Named":
            return _Legacy
        return super().find_class(_MOVED.get(module, module), name)


#: what unpickling a truncated or foreign file raises
_UNREADABLE = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError)


def read(path):
    """The object pickled in ``path`` (:func:`~midas_glmm.results.fitted.load` checks it is a
    result); a DataError for a file that is not a whole pickle."""
    with open(path, "rb") as f:
        try:
            return _Reader(f).load()
        except _UNREADABLE as exc:
            raise DataError(
                f"cannot read {str(path)!r} as a saved midas_glmm result: it is truncated or not a result file "
                f"({type(exc).__name__}: {exc}). Load only files you trust: loading a pickle can run code"
            ) from None
