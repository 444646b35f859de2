#!/usr/bin/env python
"""The speed table of docs/benchmarks.md for this machine: `earthcast info +bench=true` over the published
Earthformer configs (SEVIR-LR and ICAR-ENSO at batch 2 and 8, float32 and bf16-mixed), the demo's quickstart,
and full SEVIR at batch 1 with and without activation checkpointing; one markdown row per run.

    python scripts/bench_cpu.py --out runs/bench            # every row (about 15 min on 2 cores)
    python scripts/bench_cpu.py --out runs/bench --only sevirlr enso
    python scripts/bench_cpu.py --out runs/bench-gpu trainer=gpu      # overrides go to every row

Each run's info.json lands in <out>/<row>/ and is reused when present, so an interrupted table resumes. The
machine's CPU model and the load averages before and after each run are recorded beside the table
(<out>/table.md): a step time from a busy machine is not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: row name → `earthcast info` overrides
ROWS = {
    **{f"sevirlr_b{b}_{p}": ["model=earthformer_sevirlr", "dataset=sevirlr", f"batch_size={b}",
                             f"trainer.precision={p}"] for b in (2, 8) for p in ("32-true", "bf16-mixed")},
    **{f"enso_b{b}_{p}": ["model=earthformer_enso", "dataset=enso", f"batch_size={b}", f"trainer.precision={p}"]
       for b in (2, 8) for p in ("32-true", "bf16-mixed")},
    **{f"quickstart_b8_{p}": ["+experiment=quickstart", "batch_size=8", f"trainer.precision={p}"]
       for p in ("32-true", "bf16-mixed")},
    **{f"sevir_b1_L{level}": ["model=earthformer_sevir", "dataset=sevir", "batch_size=1", "trainer.precision=32-true",
                              f"model.checkpoint_level={level}", "warmup=1", "repeats=3"] for level in (0, 3)},
    "sevir_b1_L1_stem_head": ["model=earthformer_sevir", "dataset=sevir", "batch_size=1", "trainer.precision=32-true",
                              "model.checkpoint_level=1", "model.recompute_stem_head=true", "warmup=1", "repeats=3"],
}
COLUMNS = ("train_step_s", "train_step_after_eval_s", "inference_s", "achieved_gflops_per_s_train",
           "matmul_gflops_per_s_fp32", "matmul_gflops_per_s_bf16", "train_fraction_of_matmul",
           "inference_fraction_of_matmul", "peak_memory_mb_train_step")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_row(name: str, overrides: list[str], out: Path, extra: list[str]) -> dict:
    run_dir = out / name
    info = run_dir / "info.json"
    if not info.exists():
        before = load()
        command = [str(Path(sys.executable).with_name("earthcast")), "info", "+bench=true", *overrides, *extra,
                   f"hydra.run.dir={run_dir}"]
        if not any(o.startswith("warmup=") for o in overrides):
            command += ["warmup=3", "repeats=10"]
        print("==", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        (run_dir / "load.txt").write_text(f"{before} → {load()}\n{' '.join(command)}\n")
    return json.loads(info.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None, help="row name prefixes")
    parser.add_argument("overrides", nargs="*", help="earthcast overrides added to every row")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"{cpu_model()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             "", "| run | " + " | ".join(COLUMNS) + " | load before → after |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for name, overrides in ROWS.items():
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        facts = run_row(name, overrides, args.out, args.overrides)
        cells = [f"{facts[c]:.3g}" if isinstance(facts.get(c), float) else str(facts.get(c, "–")) for c in COLUMNS]
        loads = (args.out / name / "load.txt").read_text().splitlines()[0]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {loads} |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
