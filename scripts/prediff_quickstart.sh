#!/usr/bin/env bash
# PreDiff quickstart on the synthetic SEVIR-LR twin: VAE → latent diffusion → knowledge alignment → sampling,
# each stage handed the best checkpoint of the one before (experiment/prediff_quickstart*.yaml).
#
#   scripts/prediff_quickstart.sh [OUT_DIR] [override ...]     # overrides go to every `earthcast train`
#   make prediff-demo
#
# Writes OUT_DIR/{vae,ldm,align,sample}/ and OUT_DIR/timings.txt (wall time and load of each stage).
set -euo pipefail

OUT=${1:-outputs/prediff_quickstart/$(date +%Y-%m-%d_%H-%M-%S)}
shift $(( $# > 0 ? 1 : 0 ))
EARTHCAST=${EARTHCAST:-earthcast}
if ! command -v "$EARTHCAST" >/dev/null; then EARTHCAST=.venv/bin/earthcast; fi
# One torch thread per process unless told otherwise: these models are small, and on a 2-core machine
# shared with other jobs a second thread mostly waits for the first (docs/prediff.md has the measurement).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

mkdir -p "$OUT"
TIMINGS="$OUT/timings.txt"
echo "OMP_NUM_THREADS=$OMP_NUM_THREADS  $(nproc --all) cores" > "$TIMINGS"

run() {  # run <label> <earthcast args...>: time one stage and note the machine's load around it
    local label=$1 start end
    shift
    echo "== $label: $EARTHCAST $*"
    start=$(date +%s)
    local before
    before=$(cut -d' ' -f1-3 /proc/loadavg)
    "$EARTHCAST" "$@"
    end=$(date +%s)
    printf '%-8s %5ds  load before %s, after %s\n' "$label" $((end - start)) "$before" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$TIMINGS"
}

t0=$(date +%s)
run vae train experiment=prediff_quickstart "hydra.run.dir=$OUT/vae" "$@"
run ldm train experiment=prediff_quickstart_ldm "model.vae_ckpt=$OUT/vae/checkpoints/best.ckpt" \
    "hydra.run.dir=$OUT/ldm" "$@"
run align train experiment=prediff_quickstart_align "model.ldm_ckpt=$OUT/ldm/checkpoints/best.ckpt" \
    "hydra.run.dir=$OUT/align" "$@"
t1=$(date +%s)
printf '%-8s %5ds\n' "training" $((t1 - t0)) | tee -a "$TIMINGS"
# two test batches (32 sequences) × 4 members keep the demo's sampling to minutes on a CPU; drop max_batches
# (and raise members) for the whole test split
run sample sample "ckpt_path=$OUT/align/checkpoints/best.ckpt" knowledge=avg_intensity knowledge.n_sigma=2 \
    members=4 max_batches=2 sampler=ddim sampler.steps=50 "hydra.run.dir=$OUT/sample"
echo "outputs: $OUT (figure: $OUT/sample/knowledge.png)"
