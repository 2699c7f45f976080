"""Run the whole benchmark suite with one command and collect the Markdown tables into bench/results/REPORT.md.

    python bench/run_all.py            # the full suite (about 30-40 min on 2 busy cores)
    python bench/run_all.py --quick    # fewer repetitions / images, for a smoke test (about 8 min)
    python bench/run_all.py --only throughput,memory

Installs torch==2.13.0 (the CPU build) into the running interpreter's environment if it is missing: the plain
PyTorch VGG16 is one of the throughput peers. Needs /usr/bin/time (apt-get install time) for the memory benchmark.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TORCH = "torch==2.13.0"


def ensure_torch():
    if importlib.util.find_spec("torch") is not None:
        return
    print(f"installing {TORCH} (CPU build) for the PyTorch peer ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", TORCH], check=True)


def suite(quick: bool):
    q = quick
    return [
        ("throughput", ["bench_throughput.py", "--reps", "2" if q else "5"]),
        ("files", ["bench_files.py", "--precision", "bf16"] + (["--limit", "160", "--chunks", "2"] if q else [])),
        (
            "head",
            ["bench_head.py"]
            + (
                ["--reps", "2", "--recompute-steps", "4", "--images", "12"]
                if q
                else ["--reps", "5", "--recompute-steps", "25"]
            ),
        ),
        ("memory", ["bench_memory.py", "--reps", "1" if q else "3"]),
        ("bf16_accuracy", ["bench_bf16_accuracy.py"] + (["--datasets", "signs"] if q else [])),
        ("e2e", ["bench_e2e.py"] + (["--epochs", "20", "--limit", "40"] if q else [])),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(n for n, _ in suite(False)))
    args = p.parse_args(argv)
    ensure_torch()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    only = set(filter(None, args.only.split(",")))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    sections, t_all = [], time.perf_counter()
    for name, cmd in suite(args.quick):
        if only and name not in only:
            continue
        shown = "python bench/" + " ".join(cmd)
        print(f"== {name}: {shown}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / cmd[0])] + cmd[1:], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        secs = time.perf_counter() - t
        text = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("wrote "))
        print(text, flush=True)
        status = "" if proc.returncode == 0 else f" **FAILED (exit {proc.returncode})**"
        sections.append(f"### {name}{status}\n\nCommand: `{shown}` ({secs:.0f} s)\n\n{text}\n")
        (out_dir / f"{name}.md").write_text(sections[-1])
    total = time.perf_counter() - t_all
    # REPORT.md: the latest section of every benchmark (also those from an earlier, partial run).
    names = [n for n, _ in suite(args.quick)]
    parts = [(out_dir / f"{n}.md").read_text() for n in names if (out_dir / f"{n}.md").exists()]
    what = f"--only {args.only}" if only else ("--quick" if args.quick else "")
    report = "\n".join(parts) + f"\nLast invocation: `python bench/run_all.py {what}` took {total / 60:.1f} min.\n"
    (out_dir / "REPORT.md").write_text(report)
    print(f"\nwrote {out_dir / 'REPORT.md'} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
