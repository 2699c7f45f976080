"""Benchmark 1: conv-stack throughput (img/s) at 224 px batch 1/8/32 and 64 px batch 64, vggtransfer FP32 and bf16
versus keras.applications.VGG16(include_top=False).predict and a plain PyTorch VGG16 conv stack, with the FLOP/s
peak measured in the same run (numpy/TF fp32 matmul, TF oneDNN bf16 matmul) and the theoretical peak.

Each framework lives in its own worker process; measurements are interleaved (for each repetition, for each
configuration: A B C D), and every ratio is taken within one repetition, then the median over repetitions.

    python bench/bench_throughput.py --reps 5 [--frameworks vggtransfer-fp32,vggtransfer-bf16,keras] [--name throughput]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WEIGHTS, environment, fmt_env, median, quiet_tf, save, vgg16_conv_flops  # noqa: E402

CONFIGS = [(224, 1), (224, 8), (224, 32), (64, 64)]
#: images per timed call (enough for a few seconds of fp32 compute each)
IMAGES = {(224, 1): 4, (224, 8): 16, (224, 32): 32, (64, 64): 128}
FRAMEWORKS = ["vggtransfer-fp32", "vggtransfer-bf16", "keras", "torch"]

#: Zen 4: two 256-bit FMA pipes per core (AVX-512 runs double-pumped) -> 16 fp32 FMA = 32 FLOP/cycle/core;
#: VDPBF16PS doubles that for bf16.
FLOP_PER_CYCLE = {"fp32": 32, "bf16": 64}


#: All-core boost clock of these Zen 4 cores (measured earlier on this machine); /proc/cpuinfo in this VM reports
#: the nominal 2.6 GHz, which would understate the peak.
BOOST_GHZ = 3.57


def cpu_ghz() -> float:
    """The clock /proc/cpuinfo reports (max 'cpu MHz'; a VM reports the host's nominal frequency)."""
    mhz = []
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("cpu MHz"):
                mhz.append(float(line.split(":")[1]))
    return max(mhz) / 1000 if mhz else float("nan")


def measured_peak(n: int = 4096, reps: int = 5) -> dict:
    """Best-of-``reps`` GFLOP/s of an n x n matmul: numpy fp32 (OpenBLAS), TF fp32 and TF bf16 (oneDNN)."""
    import numpy as np
    import tensorflow as tf

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    out = {}
    best = min(_time(lambda: a @ a) for _ in range(reps))
    out["numpy_fp32"] = 2 * n**3 / best / 1e9
    ta = tf.constant(a)
    tb = tf.cast(ta, tf.bfloat16)
    for key, x in (("tf_fp32", ta), ("tf_bf16", tb)):
        tf.linalg.matmul(x, x).numpy()
        best = min(_time(lambda: tf.linalg.matmul(x, x).numpy()) for _ in range(reps))
        out[key] = 2 * n**3 / best / 1e9
    return out


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Worker:
    def __init__(self, framework: str, threads: int):
        self.name = framework
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("throughput_worker.py")),
                framework,
                str(WEIGHTS),
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="0 = the library default (all cores)")
    p.add_argument(
        "--ghz",
        type=float,
        default=None,
        help="clock for the theoretical peak (default: the Zen 4 boost on AMD CPUs; elsewhere none is computed, since "
        "FLOP_PER_CYCLE is Zen 4's)",
    )
    p.add_argument("--name", default="throughput", help="results file bench/results/NAME.json")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    args = p.parse_args(argv)
    quiet_tf()
    import numpy as np

    env = environment()
    frameworks = args.frameworks.split(",")
    workers = {f: Worker(f, args.threads) for f in frameworks}
    # Agreement: every framework's pool5 on the same 2 images vs vggtransfer-fp32.
    ref = None
    agreement = {}
    for f, w in workers.items():
        out = np.asarray(w.ask(op="output", size=224, batch=2, images=2)["pool5"])
        ref = out if ref is None else ref
        agreement[f] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    peaks = []
    times = {f: {str(c): [] for c in CONFIGS} for f in frameworks}
    for rep in range(args.reps):
        peaks.append(measured_peak())
        for size, batch in CONFIGS:
            order = frameworks if rep % 2 == 0 else frameworks[::-1]
            for f in order:
                n = IMAGES[(size, batch)]
                times[f][str((size, batch))].append(workers[f].ask(size=size, batch=batch, images=n)["seconds"])
        print(f"rep {rep + 1}/{args.reps} done, load {open('/proc/loadavg').read().split()[0]}", file=sys.stderr)
    for w in workers.values():
        w.close()

    ghz = args.ghz if args.ghz else (max(cpu_ghz(), BOOST_GHZ) if "AMD" in env["cpu"] else None)
    theo = {k: v * ghz * env["cores"] for k, v in FLOP_PER_CYCLE.items()} if ghz else None
    peak_meas = {k: max(p[k] for p in peaks) for k in peaks[0]}
    rows = []
    for size, batch in CONFIGS:
        key, n = str((size, batch)), IMAGES[(size, batch)]
        thr = {f: [n / t for t in times[f][key]] for f in frameworks}
        row = {
            "size": size,
            "batch": batch,
            "images_per_call": n,
            "img_s": {f: median(v) for f, v in thr.items()},
            "img_s_all": thr,
        }
        gflop = vgg16_conv_flops(size) / 1e9
        row["gflop_s"] = {f: row["img_s"][f] * gflop for f in frameworks}
        ratios = {}
        for a in ("vggtransfer-fp32", "vggtransfer-bf16"):
            if a not in frameworks:
                continue
            for b in frameworks:
                if b != a:
                    ratios[f"{a}/{b}"] = median([x / y for x, y in zip(thr[a], thr[b])])
        row["ratios"] = ratios
        rows.append(row)
    result = {
        "env": env,
        "reps": args.reps,
        "agreement_rel_err_vs_vggtransfer_fp32": agreement,
        "peak_gflop_s_measured": peak_meas,
        "peak_gflop_s_measured_all": peaks,
        "peak_gflop_s_theoretical": theo,
        "cpu_ghz": ghz,
        "cpuinfo_ghz": cpu_ghz(),
        "rows": rows,
    }
    path = save(args.name, result)
    print(report(result))
    print(f"wrote {path}")


def report(r: dict) -> str:
    fws = list(r["rows"][0]["img_s"])
    pm, pt = r["peak_gflop_s_measured"], r["peak_gflop_s_theoretical"]
    lines = [
        f"Environment: {fmt_env(r['env'])}; medians of {r['reps']} interleaved repetitions.",
        "",
        "| size | batch | " + " | ".join(fws) + " | fp32 / best peer | bf16 / fp32 |",
        "|---|---|" + "---|" * (len(fws) + 2),
    ]
    for row in r["rows"]:
        cells = [f"{row['img_s'][f]:.2f}" for f in fws]
        peers = [k for k in row["ratios"] if k.startswith("vggtransfer-fp32/") and "vggtransfer" not in k.split("/")[1]]
        best = min((row["ratios"][k] for k in peers), default=float("nan"))
        bf = row["ratios"].get("vggtransfer-bf16/vggtransfer-fp32", float("nan"))
        lines.append(f"| {row['size']} | {row['batch']} | " + " | ".join(cells) + f" | {best:.2f} | {bf:.2f} |")
    lines += [
        "",
        "Fraction of peak (median img/s x GFLOP/image / peak):",
        "",
        "| size | batch | framework | GFLOP/s | / measured peak | / theoretical peak |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        for f in fws:
            dt = "bf16" if f.endswith("bf16") else "fp32"
            meas = pm["tf_bf16"] if dt == "bf16" else max(pm["numpy_fp32"], pm["tf_fp32"])
            g = row["gflop_s"][f]
            theo = f"{g / pt[dt]:.0%}" if pt else "-"
            lines.append(f"| {row['size']} | {row['batch']} | {f} | {g:.1f} | {g / meas:.0%} | {theo} |")
    lines += [
        "",
        "Peak: measured (best of 5 per repetition, 4096^2 matmul) "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in pm.items())
        + (
            f"; theoretical {pt['fp32']:.0f} fp32 / {pt['bf16']:.0f} bf16 GFLOP/s ({r['cpu_ghz']:.2f} GHz boost "
            f"(/proc/cpuinfo says {r['cpuinfo_ghz']:.2f}) x {r['env']['cores']} cores x 32 / 64 FLOP/cycle)."
            if pt
            else "; no theoretical peak (FLOP_PER_CYCLE is Zen 4's; pass --ghz to apply it)."
        ),
        "Pool5 agreement with vggtransfer-fp32 (relative L2 error, 2 images): "
        + ", ".join(f"{k} {v:.1e}" for k, v in r["agreement_rel_err_vs_vggtransfer_fp32"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
