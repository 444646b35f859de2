#!/usr/bin/env python
"""The knowledge-control table of docs/prediff.md, for an alignment checkpoint (e.g. the quickstart's,
scripts/prediff_quickstart.sh OUT → OUT/align/checkpoints/best.ckpt).

For each sampler, the unguided ensemble and the ensembles guided to F₀ = τ + n·σ for each n, all on the same
test sequences from the same initial noise; per run the achieved mean intensity against F₀ and the CRPS.

    scripts/prediff_knowledge_table.py OUT/align/checkpoints/best.ckpt --out OUT/knowledge [--members 4] \\
        [--batches 1] [--n -4 -2 0 2 4] [--samplers ddim50 ddpm1000] [override ...]

Each run is one `earthcast sample` into <out>/<sampler>_<n or none>/ with its command.txt and load.txt (the
1/5/15-minute load averages before and after); a run that already has its metrics.json is reused, so an
interrupted table resumes. Overrides go to every run, knowledge.* ones (e.g. knowledge.scale=0.5) to the guided
runs only; e.g. dataset.eval_batch_size=4 samples fewer sequences per batch. The table is printed and written
to <out>/table.md.

Per guided run, over the sequences i (ā_i the ensemble's mean intensity, ū_i the unguided one, F₀_i the target):
    closed     = Σ(ā_i − ū_i) / Σ(F₀_i − ū_i)       the share of the mean gap closed (1 = on target)
    miss/gap   = Σ|ā_i − F₀_i| / Σ|F₀_i − ū_i|      per-sequence miss relative to per-sequence gap (0 = on target)
F₀_i is recomputed from the stored context with the checkpoint's own regression (what `earthcast sample` used).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import torch

from earthcast.data import build_datamodule
from earthcast.diffusion import KnowledgeControl, KnowledgeSettings
from earthcast.lightning import Checkpoint, build_module

SAMPLERS = {"ddim50": ["sampler=ddim", "sampler.steps=50"], "ddpm1000": ["sampler=ddpm"]}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def loads(run: Path) -> str:
    before, after = (line.split(": ")[1] for line in (run / "load.txt").read_text().splitlines())
    return f"{before} → {after}"


def earthcast() -> str:
    found = shutil.which(os.environ.get("EARTHCAST", "earthcast"))
    return found or str(Path(sys.executable).with_name("earthcast"))


def sample(run: Path, words: list[str]) -> dict:
    """One `earthcast sample` run (reused when its metrics.json exists); its scores."""
    metrics = run / "metrics.json"
    if not metrics.is_file():
        run.mkdir(parents=True, exist_ok=True)
        command = [earthcast(), "sample", *words, f"hydra.run.dir={run}"]
        (run / "command.txt").write_text(" ".join(command) + "\n")
        before = load()
        print("==", " ".join(command), flush=True)
        with open(run / "stdout.txt", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        (run / "load.txt").write_text(f"load before: {before}\nload after: {load()}\n")
    return json.loads(metrics.read_text())


def ensemble_means(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(per-sequence ensemble mean intensity, the context) from the run's predictions.nc (VIL 0–255)."""
    with netCDF4.Dataset(run / "predictions.nc") as nc:
        prediction = np.asarray(nc["prediction"][:], dtype=np.float64)
        context = np.asarray(nc["context"][:], dtype=np.float64)
    return prediction.reshape(prediction.shape[0], -1).mean(axis=1), context


def targets(ckpt_path: Path, context: np.ndarray, ns: list[float]) -> dict[float, np.ndarray]:
    """F₀ per sequence (VIL) for each n, from the stored context with the checkpoint's regression."""
    checkpoint = Checkpoint.read(ckpt_path)
    model = build_module(checkpoint.config, checkpoint)
    checkpoint.load_weights(model)
    units = build_datamodule(checkpoint.config["dataset"]).units
    control = KnowledgeControl(KnowledgeSettings(mode="guide", constraint=model.constraint.name), model)
    inputs = torch.as_tensor(units.to_model(context), dtype=torch.float32).unsqueeze(-1)  # B×T×H×W×1
    return {n: units(control.target(inputs, n, units).mean(dim=1)).numpy() for n in ns}


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a prediff_align checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="directory for the runs and table.md")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--batches", type=int, default=1, help="test batches of 16 sequences")
    parser.add_argument("--n", type=float, nargs="+", default=[-4.0, -2.0, 0.0, 2.0, 4.0])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (knowledge.*: guided runs only)")
    args = parser.parse_intermixed_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ckpt, root = args.ckpt, args.out
    args.n = sorted(args.n)  # "monotone" reads the rows in increasing n
    guided_only = [word for word in args.overrides if word.lstrip("+~").startswith("knowledge.")]
    common = [f"ckpt_path={ckpt}", f"members={args.members}", f"max_batches={args.batches}", "seed=0",
              "figure_samples=0", "outputs.plot_samples=0", *(w for w in args.overrides if w not in guided_only)]
    header = ("| sampler | n | F₀ | achieved | closed | miss/gap | CRPS | final energy | capped | sampling s | "
              "load before → after |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    verdicts = []
    f0 = None
    for name in args.samplers:
        plain_run = root / f"{name}_none"
        plain = sample(plain_run, [*common, *SAMPLERS[name], "knowledge=none"])
        plain_means, context = ensemble_means(plain_run)
        if f0 is None:
            f0 = targets(ckpt, context, args.n)
        observed = plain["knowledge/observed_mean_intensity"]
        lines.append(f"| {name} | none | (observed {observed:.2f}) | {plain_means.mean():.2f} | – | – | "
                     f"{fmt(plain['crps'])} | – | – | {plain['sampling_seconds']:.0f} | {loads(plain_run)} |")
        achieved, misses = [], []
        for n in args.n:
            run = root / f"{name}_n{n:+g}"
            scores = sample(run, [*common, *SAMPLERS[name], "knowledge=avg_intensity", f"knowledge.n_sigma={n}",
                                  *guided_only])
            means, _ = ensemble_means(run)
            gap = f0[n] - plain_means
            closed = float((means - plain_means).sum() / gap.sum())
            miss = float(np.abs(means - f0[n]).sum() / np.abs(gap).sum())
            achieved.append(means)
            misses.append(miss)
            lines.append(f"| {name} | {n:+g} | {f0[n].mean():.2f} | {means.mean():.2f} | {closed:.3f} | {miss:.3f} | "
                         f"{fmt(scores['crps'])} | {fmt(scores.get('knowledge/final_energy'), 3)} | "
                         f"{fmt(scores.get('knowledge/capped_fraction'), 3)} | {scores['sampling_seconds']:.0f} | "
                         f"{loads(run)} |")
        stacked = np.stack(achieved)  # n × sequences
        rising = np.diff(np.stack([f0[n] for n in args.n]), axis=0) > 0  # F₀ clipped at 0 ties for dry scenes
        monotone_seq = float(((np.diff(stacked, axis=0) > 0) | ~rising).all(axis=0).mean())
        monotone = bool((np.diff(stacked.mean(axis=1)) > 0).all())
        verdicts.append(f"{name}: mean intensity monotone in n: {'yes' if monotone else 'no'} "
                        f"(per sequence, where F₀ rises: {monotone_seq:.0%}); miss/gap ≤ 0.1 for every n: "
                        f"{'yes' if max(misses) <= 0.1 else 'no'} (largest {max(misses):.3f})")
    table = "\n".join(lines) + "\n\n" + "\n".join(verdicts) + "\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
