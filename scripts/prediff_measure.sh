#!/usr/bin/env bash
# The measurements of docs/prediff.md on a finished quickstart (scripts/prediff_quickstart.sh OUT_DIR):
# DDIM-50 vs DDPM-1000 (CRPS, wall time), knowledge control at n = -2, 0, 2 (mean intensity, CRPS), and the
# persistence ensemble, all on the same test sequences and initial noise.
#
#   scripts/prediff_measure.sh OUT_DIR [MEMBERS] [MAX_BATCHES]
#
# Writes OUT_DIR/measure/<name>/ (one `earthcast sample` run each) and prints OUT_DIR/measure/summary.md.
set -euo pipefail

OUT=${1:?usage: scripts/prediff_measure.sh OUT_DIR [MEMBERS] [MAX_BATCHES]}
MEMBERS=${2:-4}
MAX_BATCHES=${3:-1}
EARTHCAST=${EARTHCAST:-earthcast}
if ! command -v "$EARTHCAST" >/dev/null; then EARTHCAST=.venv/bin/earthcast; fi
PYTHON=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CKPT="$OUT/align/checkpoints/best.ckpt"
M="$OUT/measure"
mkdir -p "$M"
COMMON=("ckpt_path=$CKPT" "members=$MEMBERS" "max_batches=$MAX_BATCHES" "seed=0" figure_samples=0 \
        outputs.plot_samples=0)

sample() {  # sample <name> <overrides...>: one run, its command and the load around it kept beside it
    local name=$1
    shift
    mkdir -p "$M/$name"
    echo "$EARTHCAST sample ${COMMON[*]} $* hydra.run.dir=$M/$name" | tee "$M/$name/command.txt"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" > "$M/$name/load.txt"
    "$EARTHCAST" sample "${COMMON[@]}" "$@" "hydra.run.dir=$M/$name" > "$M/$name/stdout.txt" 2>&1
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$M/$name/load.txt"
}

sample ddim50 sampler=ddim sampler.steps=50 knowledge=none
sample ddpm1000 sampler=ddpm knowledge=none
for n in -2 0 2; do
    sample "guided_n${n}" sampler=ddim sampler.steps=50 knowledge=avg_intensity "knowledge.n_sigma=$n"
done
sample project_n2 sampler=ddim sampler.steps=50 knowledge=avg_intensity knowledge.mode=project knowledge.n_sigma=2

"$PYTHON" - "$M" <<'EOF' | tee "$M/summary.md"
import json, pathlib, sys

root = pathlib.Path(sys.argv[1])
keys = ["crps", "persistence_ensemble/crps", "spread_skill", "csi_m", "member/csi_m", "csi_m_pool16",
        "knowledge/forecast_mean_intensity", "knowledge/f0_mean_intensity", "knowledge/observed_mean_intensity",
        "mean_intensity_error", "knowledge/projection_mean_abs_change", "sampling_seconds", "n_samples", "members"]
print("| run | " + " | ".join(keys) + " | load |")
print("|---" * (len(keys) + 2) + "|")
for run in sorted(p for p in root.iterdir() if (p / "metrics.json").is_file()):
    scores = json.loads((run / "metrics.json").read_text())
    cells = ["–" if scores.get(k) is None else (f"{scores[k]:.4g}" if isinstance(scores[k], float) else str(scores[k]))
             for k in keys]
    load = " / ".join(line.split(": ")[1] for line in (run / "load.txt").read_text().splitlines())
    print(f"| {run.name} | " + " | ".join(cells) + f" | {load} |")
EOF
