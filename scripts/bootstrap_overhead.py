"""What the event bootstrap costs on a checkpoint's test split, measured back to back in one process.

    .venv/bin/python scripts/bootstrap_overhead.py <run>/checkpoints/best.ckpt [REPLICATES ...]

The checkpoint's forecasts of its test split are made once (timed: the model's share of an eval) and kept in
memory; then the test evaluator scores them with each number of replicates (0 = no bootstrap), alternating,
three times each: update() over all batches, results() (syncing and scoring every replicate), and writing the
outputs (metrics, tables, replicates.nc, report.md, card.md) into a temporary directory. Prints a markdown
table of median seconds, the state memory, the replicates.nc size and the load average around the run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from earthcast.data import build_datamodule
from earthcast.data.base import metadata
from earthcast.lightning import Checkpoint, build_module
from earthcast.metrics import build_evaluator
from earthcast.metrics.report import write_evaluation


def forecasts(checkpoint: Checkpoint):
    config = checkpoint.config
    datamodule = build_datamodule(config["dataset"], split="test")
    checkpoint.restore_datamodule(datamodule)
    datamodule.setup("test")
    module = build_module(config, checkpoint)
    checkpoint.load_weights(module)
    module.eval()
    units = datamodule.units
    batches, start = [], time.perf_counter()
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            prediction = module.model(batch["inputs"])
            batches.append((units(prediction), units(batch["targets"]), units(batch["inputs"]), metadata(batch)))
    return config, batches, time.perf_counter() - start


def score(config, batches, replicates: int, out: Path) -> dict[str, float]:
    evaluator = build_evaluator(config["evaluator"], bootstrap={"replicates": replicates, "level": 0.95, "seed": 0})
    timings = {}
    start = time.perf_counter()
    for prediction, target, context, meta in batches:
        evaluator.update(prediction, target, context=context, meta=meta)
    timings["update"] = time.perf_counter() - start
    start = time.perf_counter()
    results = evaluator.results()
    timings["results"] = time.perf_counter() - start
    start = time.perf_counter()
    write_evaluation(out, results, split="test", predictions=None, plot_samples=0, report=True,
                     frame_minutes=config["dataset"]["frame_minutes"], about={"model": config["model"]["name"]},
                     record={"dataset": config["dataset"]["name"], "synthetic": "synth" in config["dataset"],
                             "model": {"name": config["model"]["name"]}, "recipe": None})
    timings["write"] = time.perf_counter() - start
    timings["state_mb"] = sum(getattr(evaluator, name).numel() * getattr(evaluator, name).element_size()
                              for name in evaluator._defaults) / 2**20
    replicates_file = out / "replicates.nc"
    timings["replicates_nc_mb"] = replicates_file.stat().st_size / 2**20 if replicates_file.exists() else 0.0
    timings["n_samples"] = results["scores"]["n_samples"]
    return timings


def main() -> None:
    checkpoint = Checkpoint.read(sys.argv[1])
    counts = [int(value) for value in sys.argv[2:]] or [0, 1000]
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    config, batches, forward = forecasts(checkpoint)
    runs: dict[int, list[dict]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(3):
            for count in counts:
                runs[count].append(score(config, batches, count, Path(tmp) / f"{count}_{repeat}"))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"model forecasts of the test split: {forward:.2f} s ({len(batches)} batches, threads "
          f"{torch.get_num_threads()}); load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    print("| replicates | samples | update s | results s | write s | state MiB | replicates.nc MiB |")
    print("|---|---|---|---|---|---|---|")
    for count, timings in runs.items():
        median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        print(f"| {count} | {int(median['n_samples'])} | {median['update']:.2f} | {median['results']:.2f} | "
              f"{median['write']:.2f} | {median['state_mb']:.1f} | {median['replicates_nc_mb']:.1f} |")


if __name__ == "__main__":
    main()
