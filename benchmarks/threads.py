"""Several fits at once in threads of one process (a thread pool over models, as a script or a
service would run them), against the same fits one after another, in two source trees.

    git worktree add --detach /tmp/w/base HEAD~1
    python benchmarks/threads.py --base /tmp/w/base --new . --reps 3 crossed_binary_6e4 insteval_crossed

Per tree and case, one process (midas_glmm imported from the tree): two untimed fits (compiling),
then ``--reps`` times, alternately, ``--fits`` fits one after another and the same fits on
``--threads`` threads (concurrent.futures), with the libraries' thread settings as a user has them
(a fit holds BLAS to one thread in its optimizer loop, ``linalg.threads``). Reports the best and
median seconds of each, the speed-up of the medians (sequential / threaded: the number of threads
where nothing serialises the fits) and how many distinct log-likelihoods the fits gave.
Timings only: benchmarks/concurrency.py runs fits in separate processes.

(Held to one BLAS thread by threadpoolctl *before the first fit*, the threaded fits ran 0.65-0.7x
the speed of the same fits in turn on this machine, with or without the GIL released: OpenBLAS set
up for one thread from its first call appears to serialise calls from several threads. The fits
of a process that loaded it with its defaults do not.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab_inprocess import append_table  # noqa: E402

CODE = """
import json, sys, time, warnings
from concurrent.futures import ThreadPoolExecutor
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import numpy as np
import midas_glmm
assert midas_glmm.__file__.startswith({tree!r}), midas_glmm.__file__
from ab_inprocess import case_of
data, formula, model_kw, fit_kw = case_of({name!r}, {{"midas_glmm": midas_glmm}})
def one(_=None):
    return midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw).llf
seq, par, llfs = [], [], set()
one(); one()
with ThreadPoolExecutor({threads}) as pool:
    for _ in range({reps}):
        t = time.perf_counter(); llfs.update(one() for _ in range({fits})); seq.append(time.perf_counter() - t)
        t = time.perf_counter(); llfs.update(pool.map(one, range({fits}))); par.append(time.perf_counter() - t)
print(json.dumps({{"seq": seq, "par": par, "llfs": sorted(llfs)}}))
"""


def run(tree: Path, name: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    code = CODE.format(
        bench=str(HERE), tree=str(tree / "midas_glmm"), name=name, reps=args.reps, fits=args.fits, threads=args.threads
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{name} in {tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--new", type=Path, default=HERE.parent)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for name in args.cases:
        for label, tree in (("base", args.base.resolve()), ("new", args.new.resolve())):
            r = run(tree, name, args)
            seq, par = np.array(r["seq"]), np.array(r["par"])
            rows.append(
                f"| {name} | {label} | {seq.min():.3f} / {np.median(seq):.3f} | {par.min():.3f} / {np.median(par):.3f} "
                f"| {np.median(seq) / np.median(par):.2f} | {len(r['llfs'])} |"
            )
            print(rows[-1], flush=True)
    append_table(
        args.out,
        f"python benchmarks/threads.py --reps {args.reps} --fits {args.fits} --threads {args.threads} ...",
        ["case", "tree", f"{args.fits} fits in turn, best / median s", f"on {args.threads} threads, best / median s"]
        + ["speed-up (medians)", "distinct log-likelihoods"],
        rows,
    )


if __name__ == "__main__":
    main()
