"""A/B timing of two git revisions of midas_glmm on the benchmark cases (cases.py), written to Markdown.

    python benchmarks/ab.py                                   # HEAD against the working tree, every case
    python benchmarks/ab.py --base HEAD~3 --quick             # a commit against the working tree, cases.QUICK
    python benchmarks/ab.py --base v1 --new v2 --cases ri_lmm_1e5 binary_glmm_1e4 --reps 5
    python benchmarks/ab.py --skip ri_lmm_1e7 --timeout 600 --out /tmp/ab.md

--base (default HEAD), and --new when it names a revision, are checked out into temporary git
worktrees; by default new is the working tree as it is on disk, its midas_glmm/ copied at the start
(so that edits made during the run do not change what is timed); all are removed at the end. Every
fit runs the NEW tree's benchmarks/worker.py in a fresh process with PYTHONPATH set to its side's
tree, so only the package under test changes; before timing, `python -c "import midas_glmm"` under
the same environment checks that each side imports its own tree (PYTHONPATH's PathFinder comes
before the venv's editable finder). One untimed worker run per side first fills numba's on-disk
cache. Then, per case, --reps repetitions alternate base and new (new first on odd repetitions).
The results file (default benchmarks/RESULTS_AB.md) is rewritten after each case: median seconds
per side, new/base, every time, both log-likelihoods and their difference, errors, and a summary
with the largest |llf difference| and the cases where new is more than 10% slower than base.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from cases import BY_NAME, CASES, QUICK, make  # noqa: E402

SLOWER = 1.10  # new/base median ratio above which a case is listed as slower
NAN = float("nan")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def env_for(tree: Path) -> dict:
    """The environment under which `import midas_glmm` finds the package in `tree`."""
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def check_import(tree: Path, cwd: Path) -> str:
    """Which midas_glmm file a process started like the worker imports; it must be in `tree`."""
    cmd = [sys.executable, "-c", "import midas_glmm; print(midas_glmm.__file__)"]
    out = subprocess.run(cmd, env=env_for(tree), cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{tree}: cannot import midas_glmm:\n{out.stderr.strip()[-600:]}")
    path = Path(out.stdout.strip()).resolve()
    if not path.is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: midas_glmm is imported from {path}, not from this tree")
    return str(path)


def machine(tree: Path) -> str:
    """run.py's machine line, without its midas_glmm clause (computed under base: the harness imports no midas_glmm)."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); from run import machine; print(machine())"
    out = subprocess.run([sys.executable, "-c", code], env=env_for(tree), cwd=tree, capture_output=True, text=True)
    return re.sub(r"midas_glmm [^,]*, ", "", out.stdout.strip()) or f"? ({out.stderr.strip()[-200:]})"


def fit(worker: Path, tree: Path, case, datadir: Path, timeout: float) -> dict:
    """One fit in a fresh process (its own process group, killed on timeout): the worker's JSON line."""
    cmd = [sys.executable, str(worker), "midas", case.name, str(datadir)]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        cmd, env=env_for(tree), cwd=datadir, stdout=pipe, stderr=pipe, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as e:  # a timeout, or the harness stopped: end the worker and anything it started
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        return {"seconds": NAN, "llf": NAN, "error": f"timeout > {timeout:g} s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"seconds": NAN, "llf": NAN, "error": (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(lines[-1])


def working_tree_label() -> str:
    stat = git("diff", "--stat", "HEAD").splitlines()
    untracked = sum(ln.startswith("??") for ln in git("status", "--porcelain", "--untracked-files=all").splitlines())
    changes = stat[-1].strip() if stat else "no changes to tracked files"
    return f"working tree {ROOT} (HEAD `{git('rev-parse', '--short', 'HEAD')}`; {changes}; {untracked} untracked files)"


def case_row(case, runs: dict[str, list[dict]]) -> dict:
    good = {s: [r for r in rs if "error" not in r] for s, rs in runs.items()}
    med = {s: median(r["seconds"] for r in rs) if rs else NAN for s, rs in good.items()}
    llf = {s: rs[0]["llf"] if rs else NAN for s, rs in good.items()}
    errors = [f"{s}: {r['error'][:150]}" for s, rs in runs.items() for r in rs if "error" in r]
    return {
        "case": case.name,
        "rows x levels": case.rows_levels,
        "base s": med["base"],
        "new s": med["new"],
        "new/base": med["new"] / med["base"],
        "base times": " ".join(f"{r['seconds']:.3f}" for r in good["base"]),
        "new times": " ".join(f"{r['seconds']:.3f}" for r in good["new"]),
        "llf base": llf["base"],
        "llf new": llf["new"],
        "abs llf diff": abs(llf["new"] - llf["base"]),
        "errors": "; ".join(dict.fromkeys(errors)).replace("|", "/"),
    }


def fmt(key: str, v) -> str:
    if not isinstance(v, float):
        return str(v)
    if v != v:
        return ""
    return f"{v:.3f}" if key in ("base s", "new s", "new/base") else f"{v:.6f}" if key.startswith("llf") else f"{v:.2e}"


def write(out: Path, header: list[str], rows: list[dict], total: int) -> None:
    text = [*header, ""]
    if rows:
        text += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        text += ["| " + " | ".join(fmt(k, v) for k, v in r.items()) + " |" for r in rows]
        diffs = [r for r in rows if r["abs llf diff"] == r["abs llf diff"]]
        worst = max(diffs, key=lambda r: r["abs llf diff"]) if diffs else None
        slower = [f"{r['case']} ({r['new/base']:.2f})" for r in rows if r["new/base"] > SLOWER]
        text += [
            "",
            f"Summary ({len(rows)} of {total} cases done): largest |llf difference| "
            + (f"{worst['abs llf diff']:.2e} ({worst['case']})" if worst else "n/a")
            + f"; new slower than base by more than {SLOWER - 1:.0%} (median new/base): "
            + (", ".join(slower) or "none")
            + f"; cases with errors: {', '.join(r['case'] for r in rows if r['errors']) or 'none'}.",
        ]
    out.write_text("\n".join(text) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision to compare against (default HEAD)")
    ap.add_argument("--new", default=None, help="git revision (default: the working tree as it is on disk)")
    ap.add_argument("--cases", nargs="*", default=None, help="case names (default: every case in cases.CASES)")
    ap.add_argument("--quick", action="store_true", help="the cases of cases.QUICK")
    ap.add_argument("--skip", nargs="*", default=[], help="case names to leave out")
    ap.add_argument("--reps", type=int, default=3, help="fits per side and case (medians)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per fit")
    ap.add_argument("--out", default=str(HERE / "RESULTS_AB.md"))
    ap.add_argument("--datadir", default=None, help="where the cases' data are written (default: a temporary one)")
    args = ap.parse_args(argv)
    names = args.cases or (QUICK if args.quick else [c.name for c in CASES])
    cases = [BY_NAME[n] for n in names if n not in args.skip]
    if not cases:
        raise SystemExit("no cases to run")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the worktrees are removed when stopped
    tmp = Path(tempfile.mkdtemp(prefix="midas_ab_"))
    datadir = Path(args.datadir) if args.datadir else tmp / "data"
    datadir.mkdir(parents=True, exist_ok=True)
    worktrees = []
    try:
        trees, labels = {}, {}
        for side, rev in (("base", args.base), ("new", args.new)):
            if rev is None:  # a snapshot, so that edits made during the run do not change what is timed
                trees[side], labels[side] = tmp / side, working_tree_label() + f", its package copied to {tmp / side}"
                shutil.copytree(
                    ROOT / "midas_glmm", tmp / side / "midas_glmm", ignore=shutil.ignore_patterns("__pycache__")
                )
                continue
            trees[side] = tmp / side
            git("worktree", "add", "--detach", str(trees[side]), rev)
            worktrees.append(trees[side])
            labels[side] = f"`{git('rev-parse', '--short', rev)}` (`{rev}`), worktree {trees[side]}"
        worker = (ROOT if args.new is None else trees["new"]) / "benchmarks" / "worker.py"
        imports = {s: check_import(t, worker.parent) for s, t in trees.items()}  # sys.path[0] as the worker's
        for s in trees:
            log(f"{s}: {labels[s]}\n  imports {imports[s]}")
        header = [
            "# A/B timing: base against new",
            "",
            f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/ab.py {shlex.join(sys.argv[1:])}`.",
            "",
            f"Machine: {machine(trees['base'])}",
            "",
            *(f"- {s}: {labels[s]}; imports `{imports[s]}`" for s in trees),
            "",
            f"Each fit runs `{worker}` of the new tree in a fresh process (DataFrame to",
            f"fitted model with standard errors), {args.reps} per side, base and new alternating (new first on odd",
            "repetitions), after one untimed run per side for numba's on-disk cache. Seconds are medians;",
            "`base times` and `new times` list every fit; the log-likelihoods are each side's first fit.",
        ]
        write(Path(args.out), header, [], len(cases))
        warm = min(cases, key=lambda c: c.n)
        make(warm).to_pickle(datadir / f"{warm.name}.pkl")
        for side, tree in trees.items():
            t0 = time.perf_counter()
            r = fit(worker, tree, warm, datadir, max(args.timeout, 1800))
            cached = len(list(tree.glob("midas_glmm/**/*.nbi")))
            log(
                f"warm-up {side} on {warm.name}: {time.perf_counter() - t0:.1f} s wall, {r.get('error') or 'ok'}, "
                f"{cached} numba cache index files in its tree"
            )
        rows = []
        for case in cases:
            data = datadir / f"{case.name}.pkl"
            if not data.exists():
                make(case).to_pickle(data)
            runs = {"base": [], "new": []}
            for rep in range(args.reps):
                for side in ("base", "new") if rep % 2 == 0 else ("new", "base"):
                    r = fit(worker, trees[side], case, datadir, args.timeout)
                    runs[side].append(r)
                    log(
                        f"{case.name} rep {rep} {side:4s} "
                        + (r.get("error") or f"{r['seconds']:.3f} s llf {r['llf']:.6f}")
                    )
            if not args.datadir:
                data.unlink()
            rows.append(case_row(case, runs))
            row = rows[-1]
            log(f"{case.name}: base {row['base s']:.3f} s, new {row['new s']:.3f} s, new/base {row['new/base']:.3f}")
            write(Path(args.out), header, rows, len(cases))
        log(f"wrote {args.out}")
    finally:
        for tree in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if worktrees:
            git("worktree", "prune")


if __name__ == "__main__":
    main()
