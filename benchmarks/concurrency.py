"""Concurrency benchmark: 1, 2 and 4 midas_glmm fits started at the same moment, each in its own
process, against one fit alone.

    python benchmarks/concurrency.py                      # both cases, 1 2 4 at once, 3 repetitions
    python benchmarks/concurrency.py --cases obslevel_poisson --n 1 2 --reps 5

Cases: "insteval_crossed" (cases.py's InstEval shape) fitted by ML, and "obslevel_poisson".
Each process loads the libraries, warms up and reads its data (worker.py --wait), says it is
ready, and starts its clock when all are released together; its time is its own fit (DataFrame to
results with standard errors). A batch's time per fit is its slowest fit (the one a user waits
for), and the table gives its ratio to a fit alone, with the median fit too. Issue 12's targets:
2 fits at once no slower than 2.5x a fit alone, 4 at once no slower than 5x (on 2 cores).
Writes benchmarks/RESULTS_CONCURRENCY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from cases import BY_NAME, make  # noqa: E402
from run import machine  # noqa: E402

RUNS = {"insteval_crossed": "ML", "obslevel_poisson": None}  # case -> method for the fit
TARGET = {1: 1.0, 2: 2.5, 4: 5.0}


def batch(name: str, method: str | None, n: int, datadir: Path, timeout: float) -> dict:
    """Start n fits, release them together; each fit's seconds, the wall time, errors."""
    cmd = [sys.executable, str(HERE / "worker.py"), "midas", name, str(datadir), "--wait"]
    if method:
        cmd += ["--method", method]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    for p in procs:  # all loaded and warmed up before any clock starts
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker did not start: {line!r} {p.stderr.read()[-500:]}")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    fits, errors, recs = [], [], []
    for p in procs:  # the result lines, as they come (the wall time is the last one's arrival)
        line = p.stdout.readline()
        while line and not line.startswith("{"):
            line = p.stdout.readline()
        recs.append(json.loads(line) if line else None)
    wall = time.perf_counter() - t0
    for p, rec in zip(procs, recs):
        out, err = p.communicate(timeout=timeout)
        if rec is None:
            rec = {"error": (err.strip().splitlines() or ["no output"])[-1]}
        if rec.get("error"):
            errors.append(rec["error"])
        else:
            fits.append(rec["seconds"])
    return {"fits": fits, "wall": wall, "errors": errors, "load": load}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(RUNS))
    ap.add_argument("--n", nargs="*", type=int, default=[1, 2, 4], help="fits at once")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--datadir", default=None)
    ap.add_argument("--out", default="RESULTS_CONCURRENCY.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    datadir = Path(args.datadir or tempfile.mkdtemp(prefix="midas_conc_"))
    datadir.mkdir(parents=True, exist_ok=True)
    ns = sorted(set(args.n) | {1})
    rows = []
    for name in args.cases:
        case, method = BY_NAME[name], RUNS.get(name)
        make(case).to_pickle(datadir / f"{name}.pkl")
        alone = None
        for n in ns:
            res = []
            for _ in range(args.reps):
                b = batch(name, method, n, datadir, args.timeout)
                res.append(b)
                print(
                    f"{name} x{n}: fits {', '.join(f'{s:.2f}' for s in b['fits'])} s; wall {b['wall']:.2f} s; "
                    f"load before {b['load']:.2f}" + (f"; errors {b['errors']}" if b["errors"] else ""),
                    flush=True,
                )
            errors = [e for b in res for e in b["errors"]]
            good = [b for b in res if b["fits"] and not b["errors"]]
            row = {"case": name + (f" ({method})" if method else ""), "fits at once": n}
            if not good:
                row.update(error=errors[0] if errors else "no fit")
                rows.append(row)
                continue
            slowest = median(max(b["fits"]) for b in good)  # median over repetitions
            typical = median(median(b["fits"]) for b in good)
            wall = median(b["wall"] for b in good)
            if n == 1:
                alone = slowest
            row.update(
                slowest=slowest,
                median_fit=typical,
                wall=wall,
                ratio=slowest / alone if alone else float("nan"),
                load=median(b["load"] for b in good),
                errors="; ".join(sorted(set(errors))),
            )
            rows.append(row)
    for r in rows:
        print(r)
    if not args.no_write:
        write(rows, args)


def write(rows: list[dict], args) -> None:
    lines = [
        "# Concurrent fits",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/concurrency.py --reps {args.reps} "
        f"--n {' '.join(map(str, args.n))} --cases {' '.join(args.cases)}`.",
        "",
        f"Machine: {machine()}",
        "",
        "Each fit runs in its own process; all processes of a batch load the libraries, warm up and read",
        "their data first, then start together. `time per fit` is the slowest fit of the batch (median over",
        "repetitions), `median fit` the middle one, `wall` the batch's time from release to the last result;",
        "`x alone` is `time per fit` over a fit alone. Targets (issue 12): 2 at once <= 2.5x, 4 at once <= 5x.",
        f"Thread settings: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS', 'unset')} (the libraries' defaults otherwise).",
        "`load` is the 1-minute load average just before the batch started: the machine has 2 cores and",
        "other work was running on it, so the times are indicative.",
        "",
        "| case | fits at once | time per fit s | median fit s | wall s | x alone | target | met | load | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['fits at once']} |  |  |  |  |  |  |  | {r['error']} |")
            continue
        n = r["fits at once"]
        tgt = TARGET.get(n)
        met = "" if tgt is None or n == 1 else ("yes" if r["ratio"] <= tgt else "NO")
        lines.append(
            f"| {r['case']} | {n} | {r['slowest']:.3g} | {r['median_fit']:.3g} | {r['wall']:.3g} | "
            f"{r['ratio']:.2f} | {'' if tgt is None or n == 1 else f'<= {tgt:g}x'} | {met} | {r['load']:.2f} | "
            f"{r['errors']} |"
        )
    (HERE / args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / args.out}")


if __name__ == "__main__":
    main()
