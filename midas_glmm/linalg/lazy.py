"""Compiled kernel modules loaded on first use.

Importing :mod:`.kernels`, :mod:`.rowkernels` or :mod:`.matfree` imports numba and reads each
function's cached machine code: a fifth of a second before any model is fitted, and more for
paths a script never takes. A module that calls kernels holds ``kernels = lazy.load("kernels")``
instead; the first attribute read imports the real module, after which the proxy holds the
module's names itself. Code compiled by numba that calls a kernel must import the real module.
"""

from __future__ import annotations

import importlib

__all__ = ["load", "LazyModule"]


class LazyModule:
    """A stand-in for ``midas_glmm.linalg.<name>`` that imports it when an attribute is read."""

    def __init__(self, name: str):
        self._name = f"{__package__}.{name}"

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        self.__dict__.update(vars(module))  # later reads are plain attribute reads
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"


def load(name: str) -> LazyModule:
    """The kernel module ``name`` of this package, imported when first used."""
    return LazyModule(name)
