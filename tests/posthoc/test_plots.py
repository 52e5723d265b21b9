"""The optional figures render to files and show what they claim."""

import numpy as np
import pytest

from midas_glmm import MixedModel, datasets, plots
from midas_glmm.errors import FitError


@pytest.fixture(scope="module")
def slope():
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()


def test_caterpillar_has_one_interval_per_level_and_term(slope, tmp_path):
    path = tmp_path / "cat.png"
    fig = plots.caterpillar(slope, path=path)
    assert path.stat().st_size > 5000
    assert len(fig.axes) == 2
    sds = slope.ranef(condvar=True)
    for ax, term in zip(fig.axes, ["(Intercept)", "Days"]):
        points = ax.lines[0].get_xdata()
        assert len(points) == 18
        assert np.allclose(np.sort(points), np.sort(sds[sds.term == term]["condval"]))


def test_shrinkage_plot_points_are_blups_against_raw_means(tmp_path):
    res = MixedModel.from_formula("score ~ hours + (1|school)", datasets.load("schools")).fit()
    fig = plots.shrinkage(res, path=tmp_path / "s.png")
    xy = fig.axes[0].collections[0].get_offsets()
    assert len(xy) == 40
    assert np.all(np.abs(xy[:, 1]) <= np.abs(xy[:, 0]) + 1e-12)  # BLUPs are shrunk
    assert (tmp_path / "s.png").exists()


def test_diagnostics_and_errors(slope, tmp_path):
    fig = plots.diagnostics(slope, path=tmp_path / "d.png")
    assert len(fig.axes) == 2 and (tmp_path / "d.png").stat().st_size > 5000
    assert len(fig.axes[0].collections[0].get_offsets()) == 180
    with pytest.raises(FitError, match="no random effects for grouping factor 'nope'"):
        plots.caterpillar(slope, group="nope")


def test_plots_leave_the_users_backend_and_pyplot_alone(slope):
    """Figures are built without pyplot: a notebook's backend and open figures stay as they were."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        open_figures = plt.get_fignums()
        schools = MixedModel.from_formula("score ~ hours + (1|school)", datasets.load("schools")).fit()
        figs = [plots.caterpillar(slope), plots.shrinkage(schools), plots.diagnostics(slope)]
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures
        assert all(isinstance(f, Figure) for f in figs)
    finally:
        matplotlib.use(before)
