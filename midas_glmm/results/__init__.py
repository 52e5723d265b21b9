"""Results of a fit: :class:`MixedModelResults` (``fitted``), its variance components in lme4's
layouts (``varcomp``), its printed summary (``summary``), and saving and loading (``persist``)."""

from __future__ import annotations

from .fitted import MixedModelResults, load

__all__ = ["MixedModelResults", "load"]
