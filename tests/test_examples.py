"""The example scripts run and print what they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
EXPECT = {
    "schools.py": ["Linear mixed model fit by REML", "Comparing fixed effects needs ML fits", "AIC"],
    "glmm_binomial_poisson.py": ["Laplace", "AGQ(25)", "rate ratio"],
    "random_slopes.py": ["P>|t|", "Pr(>Chisq)"],
    "crossed_effects.py": ["plate", "sample", "Kenward-Roger"],
    "shrinkage.py": ["BLUP", "keeps"],
    "from_fit_to_paper.py": [
        "Type III ANOVA table",
        "emmean",
        "conditional",
        "obs_ci_upper",
        "z.ratio",
        "dispersion",
        "DenDF",
        "Deviance residuals",
    ],
    "overdispersed_counts.py": ["Dispersion parameter for nbinom2 family", "[nbinom2]", "boundary", "precision phi"],
    "zero_inflated_counts.py": ["Zero-inflation model (~ spp + mined, logit link)", "(no zi)", "boundary", "zprob"],
    "many_responses.py": ["200 responses, 200 fitted", "found among them: 20", "rows used by gene005: 178"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECT))
def test_example_runs(script, tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for text in EXPECT[script]:
        assert text in out.stdout


def test_every_example_is_checked():
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECT)
