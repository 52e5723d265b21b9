"""The first fit after install, and a fresh process's fit, of cases of cases.py in two source trees.

    git worktree add --detach /tmp/w/base HEAD~1
    python benchmarks/ab_firstfit.py --base /tmp/w/base --new . --reps 3 salamanders_nb2 ordinal_wine

Per case and tree: a fresh copy of the tree's midas_glmm/ (no __pycache__, so the first run writes
the .pyc files as pip would at install) with NUMBA_CACHE_DIR pointed at an empty directory, then
one process that imports it, makes the case's data (cases.make) and fits the case as worker.py
does: "first" is that process's wall time, compiling whatever the fit compiles; then ``--reps``
more processes with the same, now warm, cache ("again": best and all). The trees alternate.
Prints, and with --out writes as Markdown, the seconds and the numba cache files each leaves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CODE = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import cases
from ab_inprocess import case_of
import midas_glmm
assert midas_glmm.__file__.startswith({pkg!r}), midas_glmm.__file__
data, formula, model_kw, fit_kw = case_of({name!r}, {{"midas_glmm": midas_glmm}})
print(midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw).llf)
"""


def run(pkg_parent: Path, cache: Path, name: str) -> tuple[float, float]:
    """(wall seconds, log-likelihood) of one fresh process fitting case ``name``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(pkg_parent))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    code = CODE.format(bench=str(HERE), pkg=str(pkg_parent / "midas_glmm"), name=name)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=pkg_parent)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{name} in {pkg_parent}: {out.stderr[-2000:]}")
    return wall, float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(HERE))
    import cases
    from ab_inprocess import DATASETS, GAMMA, NESTED, ab_arguments

    args = ab_arguments(__doc__, 3, [*DATASETS, *GAMMA, *NESTED, *(c.name for c in cases.CASES)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.cases:
            res = {}
            for side in ("base", "new"):
                parent = work / f"{name}-{side}"
                shutil.copytree(
                    Path(getattr(args, side)).resolve() / "midas_glmm",
                    parent / "midas_glmm",
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
                (work / f"{name}-{side}-cache").mkdir()
            for side in ("base", "new"):
                first, llf = run(work / f"{name}-{side}", work / f"{name}-{side}-cache", name)
                files = sorted(p.name for p in (work / f"{name}-{side}-cache").rglob("*.nbi"))
                res[side] = {"first": first, "llf": llf, "files": files, "again": []}
            for _ in range(args.reps):
                for side in ("base", "new"):
                    res[side]["again"].append(run(work / f"{name}-{side}", work / f"{name}-{side}-cache", name)[0])
            b, n = res["base"], res["new"]
            rows.append(
                (
                    name,
                    f"{b['first']:.2f}",
                    f"{n['first']:.2f}",
                    f"{min(b['again']):.2f} ({' '.join(f'{t:.2f}' for t in b['again'])})",
                    f"{min(n['again']):.2f} ({' '.join(f'{t:.2f}' for t in n['again'])})",
                    f"{len(b['files'])} / {len(n['files'])}",
                    f"{n['llf'] - b['llf']:+.1e}",
                )
            )
            print(" | ".join(rows[-1]), flush=True)
    head = (
        "| case | first fit after install, base s | new s | a fresh process again (cache warm), base s "
        "| new s | numba cache files base / new | llf new - base |\n|---|---|---|---|---|---|---|\n"
    )
    table = head + "".join("| " + " | ".join(r) + " |\n" for r in rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
