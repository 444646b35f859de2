"""Throughput of the SEVIR / SEVIR-LR training loader: sequences per second for several worker counts.

    python scripts/bench_loader.py --root <dir> --workers 0 2 --batch-size 8 [--dataset sevir|sevirlr]
    python scripts/bench_loader.py --root /tmp/twin384 --generate-events 20 --img-size 384   # make a twin first

Frame size and length are read from the data, the rest from configs/dataset/<dataset>.yaml. Each setting
iterates the shuffled train loader (or --split) for up to --batches batches; the first batch (worker start-up,
file opening) is timed separately. Files read once sit in the OS page cache, so later settings read from
memory: run the script twice, or compare settings after a warm-up, for a fair comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
from hydra import compose, initialize_config_dir

from earthcast.config import config_dir, plain
from earthcast.data.sevir.reader import SevirDataModule
from earthcast.errors import UserError


def composed_dataset(name: str, *overrides: str) -> dict:
    """configs/dataset/<name>.yaml as `earthcast train dataset=<name> <overrides>` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"dataset={name}", *overrides, "paths.output_dir=."])
    return plain(cfg.dataset)


def dataset_config(name: str, root: Path, workers: int, batch_size: int) -> dict:
    """The reader's config for `root`, with frame size and length read from its first VIL file."""
    catalog = pd.read_csv(root / "CATALOG.csv")
    first_file = catalog.loc[catalog["img_type"] == "vil", "file_name"].iloc[0]
    with h5py.File(root / "data" / first_file, "r") as f:
        _, height, width, frames = f["vil"].shape
    return {**composed_dataset(name), "root": str(root), "seed": 0, "height": height, "width": width,
            "frames_per_event": frames, "num_workers": workers, "batch_size": batch_size,
            "eval_batch_size": batch_size}


def measure(cfg, split: str, max_batches: int) -> dict:
    datamodule = SevirDataModule(cfg)
    datamodule.setup({"train": "fit", "val": "validate", "test": "test"}[split])
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    start = time.perf_counter()
    batches = iter(loader)
    first = next(batches)
    first_s = time.perf_counter() - start
    sequences, timed, start = 0, 0, time.perf_counter()
    while timed < max_batches:  # further epochs when the split is small (workers persist between them)
        for batch in batches:
            sequences += len(batch["inputs"])
            timed += 1
            if timed >= max_batches:
                break
        batches = iter(loader)
    elapsed = time.perf_counter() - start
    del batches, loader
    datamodule.teardown()
    return {"workers": cfg["num_workers"], "first_batch_s": first_s, "sequences": sequences, "seconds": elapsed,
            "sequences_per_s": sequences / elapsed if elapsed else float("nan"),
            "shape": tuple(first["inputs"].shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--dataset", choices=["sevir", "sevirlr"], default="sevir")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--split", choices=["train", "val", "test"], default="train")
    parser.add_argument("--batches", type=int, default=50, help="batches timed per setting (after the first)")
    parser.add_argument("--generate-events", type=int, default=0,
                        help="if --root does not exist, write a synthetic SEVIR twin with this many events")
    parser.add_argument("--img-size", type=int, default=384, help="frame size of a generated twin")
    args = parser.parse_args()
    try:
        if not args.root.exists() and args.generate_events:
            from earthcast.data import synthesize

            started = time.perf_counter()
            synthesize(composed_dataset("sevir_synth", f"dataset.root={args.root}",
                                        f"dataset.synth.n_events={args.generate_events}",
                                        f"dataset.synth.img_size={args.img_size}"))
            print(f"generated {args.generate_events} events at {args.img_size}² in "
                  f"{time.perf_counter() - started:.1f} s")
        for workers in args.workers:
            result = measure(dataset_config(args.dataset, args.root, workers, args.batch_size), args.split,
                             args.batches)
            print(f"{args.dataset} {args.split} workers={workers} batch={args.batch_size} sample={result['shape']}: "
                  f"{result['sequences_per_s']:.1f} sequences/s ({result['sequences']} in {result['seconds']:.2f} s; "
                  f"first batch {result['first_batch_s']:.2f} s)")
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
