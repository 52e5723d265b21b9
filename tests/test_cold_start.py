"""What a fresh process loads: ``import midas_glmm`` reads only the exceptions; a small LMM
fit, and a small GLMM with one random intercept, load neither numba (its kernels) nor
statsmodels, scipy.stats, matplotlib, dask or tqdm.
Each import is a fraction of a second a script, a CLI call or a bootstrap worker pays."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["numba", "statsmodels", "scipy.stats", "scipy.optimize", "matplotlib", "dask", "tqdm", "formulaic"]


def _loaded(code: str) -> list[str]:
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_nothing_heavy():
    assert _loaded("import midas_glmm") == []


def test_public_names_resolve_lazily():
    import midas_glmm

    assert midas_glmm.MixedModel.__name__ == "MixedModel"
    assert set(midas_glmm.__all__) <= set(dir(midas_glmm))
    assert callable(midas_glmm.datasets.load)


def test_a_small_lmm_fit_loads_no_kernels_nor_statsmodels():
    code = (
        "from midas_glmm import MixedModel, datasets\n"
        "res = MixedModel.from_formula('Reaction ~ Days + (Days|Subject)', datasets.load('sleepstudy')).fit()\n"
        "res.summary(); res.ranef(); res.conf_int()\n"
        "assert abs(res.llf - (-871.8141)) < 1e-3\n"
    )
    assert _loaded(code) == ["formulaic"]


def test_a_glmm_fit_loads_no_statsmodels():
    code = (
        "from midas_glmm import MixedModel, datasets\n"
        "d = datasets.load('cbpp')\n"
        "res = MixedModel.from_formula('cbind(incidence, size - incidence) ~ period + (1|herd)', d,"
        " family='binomial').fit()\n"
        "res.summary(); res.ranef()\n"
        "assert abs(res.llf - (-92.02628)) < 1e-4\n"
    )
    loaded = _loaded(code)
    assert "statsmodels" not in loaded and "scipy.stats" not in loaded and "matplotlib" not in loaded
    # one random intercept, few rows: PIRLS group by group and numpy's passes, no kernel to compile
    assert "numba" not in loaded


def test_a_random_slope_lmm_fit_loads_no_kernels():
    """One term of two columns over many levels (not the all-dense plan): the LevelSystem for the
    optimizer and the closed-form 2 × 2 factor and inverse after it (conditional variances
    included), no kernel to compile."""
    code = (
        "import numpy as np, pandas as pd\n"
        "from midas_glmm import MixedModel\n"
        "r = np.random.default_rng(1); n, g = 3000, 60\n"
        "d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, g, n)})\n"
        "d['y'] = d.x * (1 + r.normal(0, .5, g)[d.g]) + r.normal(0, 1, g)[d.g] + r.normal(size=n)\n"
        "res = MixedModel.from_formula('y ~ x + (x|g)', d).fit()\n"
        "res.summary(); res.ranef(condvar=True); res.predict(d)\n"
        "assert res.converged and res.llf < 0\n"
    )
    assert "numba" not in _loaded(code)


def test_a_small_crossed_or_nested_lmm_fit_loads_no_kernels():
    """Several terms, at most 100 random effects (engine.sparsity.small_model), crossed with
    random slopes too (six θ), and crossed with a compound-symmetry term of 220 (λ not linear in
    θ; up to SMALL_Q_CROSSED): the all-dense plan, its levels not reordered, so nothing is
    compiled, conditional variances included (the sparse block kernels took 9-17 s to compile
    on a first fit)."""
    code = (
        "import numpy as np, pandas as pd\n"
        "from midas_glmm import MixedModel\n"
        "r = np.random.default_rng(1); n = 2000\n"
        "d = pd.DataFrame({'x': r.normal(size=n), 'a': r.integers(0, 60, n), 'b': r.integers(0, 40, n)})\n"
        "d['c'] = d.a // 6\n"
        "d['y'] = d.x + r.normal(size=60)[d.a] + r.normal(size=40)[d.b] + r.normal(size=n)\n"
        "d['f'] = np.array(list('ABC'))[d.b % 3]\n"
        "forms = ('y ~ x + (1|a) + (1|b)', 'y ~ x + (1|c/a)', 'y ~ x + (x|c) + (x|b)', 'y ~ f + cs(0 + f|a) + (1|b)')\n"
        "for f in forms:\n"
        "    res = MixedModel.from_formula(f, d).fit()\n"
        "    res.summary(); res.ranef(condvar=True); res.predict(d)\n"
        "    assert res.converged and res.llf < 0\n"
    )
    assert "numba" not in _loaded(code)


def test_fit_many_of_one_term_loads_no_kernels():
    """fit_many of a random intercept and of a random slope (the simulation study's shapes): the
    numpy batch criterion (LevelBatch) and data pass, and the full result of one response, compile
    nothing; the first call after install took 23 s of compilation before."""
    code = (
        "import numpy as np, pandas as pd, warnings\n"
        "from midas_glmm import MixedModel\n"
        "warnings.simplefilter('ignore')\n"
        "rng = np.random.default_rng(1)\n"
        "g = rng.integers(0, 30, 600); x = rng.normal(size=600)\n"
        "df = pd.DataFrame({'x': x, 'g': g.astype(str)})\n"
        "for f in ['~ x + (1|g)', '~ x + (x|g)']:\n"
        "    Y = x[:, None] + rng.normal(size=(30, 8))[g] * (1 + x[:, None]) + rng.normal(size=(600, 8))\n"
        "    res = MixedModel.from_formula(f, df).fit_many(Y)\n"
        "    assert all(r['opt'][5] == 'newton' for r in res.records), [r['opt'][5] for r in res.records]\n"
        "    res['y0'].summary()\n"
    )
    assert "numba" not in _loaded(code)


def test_a_nested_lmm_of_many_levels_loads_no_kernels():
    """Pupils in 240 classes in 60 schools (300 random effects, above the all-dense plan): the
    factor eliminated term by term in numpy (linalg.stages) and the levels' order left alone
    without the compiled cliques; it compiled the block kernels for 13 s on a first fit before."""
    code = (
        "import numpy as np, pandas as pd\n"
        "from midas_glmm import MixedModel\n"
        "r = np.random.default_rng(1); school = np.repeat(np.arange(60), 32); cls = np.repeat(np.arange(240), 8)\n"
        "d = pd.DataFrame({'x': r.normal(size=1920), 'school': school, 'cls': cls})\n"
        "d['y'] = d.x + r.normal(size=60)[school] + r.normal(0, .6, 240)[cls] + r.normal(size=1920)\n"
        "res = MixedModel.from_formula('y ~ x + (1|school/cls)', d).fit()\n"
        "res.summary(); res.ranef(condvar=True); res.predict(d)\n"
        "assert res.converged and res.llf < 0\n"
    )
    assert "numba" not in _loaded(code)


def test_kernels_pass_no_literal_constants_to_kernels():
    """A compiled kernel that calls another with a bare constant (``f(x, 0)``, ``f(x, True)``) or
    a variable first set to one (``n = 0`` ... ``f(x, n)``) makes numba compile the callee again
    for that Literal type, beside the int64 / bool version its other callers compile: 0.2-0.7 s
    of a first fit each. Constants go as np.int64(...), np.bool_(...)."""
    import ast
    from pathlib import Path

    import midas_glmm

    found = []
    for name in ("kernels", "rowkernels", "batchkernels", "matfree"):
        tree = ast.parse((Path(midas_glmm.__file__).parent / "linalg" / f"{name}.py").read_text())
        funcs = [f for f in tree.body if isinstance(f, ast.FunctionDef)]
        jitted = {f.name for f in funcs if any("njit" in ast.unparse(d) for d in f.decorator_list)}
        for f in (f for f in funcs if f.name in jitted):
            literal_names = {
                t.id
                for node in ast.walk(f)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for t in node.targets
                if isinstance(t, ast.Name) and isinstance(node.value.value, (int, bool))
            }
            for node in ast.walk(f):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in jitted:
                    for a in node.args:
                        inner = a.operand if isinstance(a, ast.UnaryOp) else a
                        if (isinstance(inner, ast.Constant) and isinstance(inner.value, (int, bool))) or (
                            isinstance(a, ast.Name) and a.id in literal_names
                        ):
                            found.append(f"{name}.{f.name} -> {node.func.id}({ast.unparse(a)}), line {node.lineno}")
    assert found == []


def test_kernels_release_the_gil_except_the_parallel_ones():
    """Every compiled kernel releases the GIL (``nogil=True``), so that fits in threads of one
    process run their kernels at once (benchmarks/threads.py: crossed models 1.1-1.4x on two
    threads, 0.7-1.0x before); the kernels with numba's own threads (``parallel=True``) keep it:
    two threads launching them at once would abort the process under numba's workqueue layer."""
    import ast
    from pathlib import Path

    import midas_glmm

    found, seen = [], 0
    for name in ("kernels", "rowkernels", "batchkernels", "matfree"):
        tree = ast.parse((Path(midas_glmm.__file__).parent / "linalg" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "njit"):
                    continue
                seen += 1
                options = {k.arg: ast.literal_eval(k.value) for k in dec.keywords if k.arg in ("nogil", "parallel")}
                if options.get("parallel", False) == options.get("nogil", False):
                    found.append(f"{name}.{node.name}: {ast.unparse(dec)}")
    assert seen > 60
    assert found == []
