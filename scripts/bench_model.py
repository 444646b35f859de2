#!/usr/bin/env python
"""Benchmark a model config: training step (forward + backward + AdamW) and inference, median of repeats.

    python scripts/bench_model.py --model earthformer_sevirlr --batch-size 2
    python scripts/bench_model.py --model earthformer --batch-size 8 --height 64 --width 64 --compile
    python scripts/bench_model.py --model earthformer_sevirlr --profile      # top ops by self CPU time

Loads configs/model/<model>.yaml with OmegaConf and fills its ${dataset.*} interpolations from the flags (or
from the dataset the config is named after). Reports s/step, samples/s, peak memory (CPU: peak RSS of the
process; CUDA: max_memory_allocated) and GFLOPs per sample of one forward pass (FlopCounterMode).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from earthcast.models import build_model  # noqa: E402
from earthcast.tasks.allocator import keep_freed_memory  # noqa: E402
from earthcast.tasks.info import forward_gflops  # noqa: E402

# (in_len, out_len, height, width, channels) of the data each config is made for
DATA_SHAPES = {
    "sevir": (13, 12, 384, 384, 1),
    "sevirlr": (7, 6, 128, 128, 1),
    "enso": (12, 14, 24, 48, 1),
    "default": (13, 12, 64, 64, 1),  # the quickstart: synthetic SEVIR at 64×64
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="earthformer_sevirlr", help="config name under configs/model/")
    p.add_argument("--batch-size", type=int, default=2)
    for name in ("in-len", "out-len", "height", "width", "channels"):
        p.add_argument(f"--{name}", type=int, default=None, help="override the data shape")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of one training step")
    p.add_argument("--default-allocator", action="store_true",
                   help="CPU: leave glibc's malloc as it is (default: keep freed memory, earthcast.tasks.allocator)")
    p.add_argument("--matmul", type=int, default=0, metavar="N",
                   help="also time an N×N float32 matmul (GFLOP/s of the machine, for context)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override model config keys (repeatable)")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace):
    path = ROOT / "configs" / "model" / f"{args.model}.yaml"
    model_cfg = OmegaConf.load(path)
    suffix = args.model.split("_", 1)[1] if "_" in args.model else "default"
    defaults = DATA_SHAPES.get(suffix, DATA_SHAPES["default"])
    values = [getattr(args, k) for k in ("in_len", "out_len", "height", "width", "channels")]
    in_len, out_len, height, width, channels = (v if v is not None else d for v, d in zip(values, defaults))
    dataset = dict(in_len=in_len, out_len=out_len, height=height, width=width, channels=channels)
    cfg = OmegaConf.merge({"dataset": dataset}, {"model": model_cfg}, OmegaConf.from_dotlist(
        [f"model.{kv}" for kv in args.set]))
    return cfg.model, dataset


def timed(fn, device: str, warmup: int, repeats: int) -> list[float]:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_gflops(n: int, device: str, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = timed(lambda: a @ b, device, 2, repeats)
    return 2 * n**3 / statistics.median(times) / 1e9


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    allocator = "default"
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        if not args.default_allocator and keep_freed_memory():
            allocator = "glibc, freed memory kept"
    torch.manual_seed(0)
    model_cfg, data = load_config(args)
    model = build_model(model_cfg).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    shape_in = (args.batch_size, data["in_len"], data["height"], data["width"], data["channels"])
    shape_out = (args.batch_size, data["out_len"], data["height"], data["width"], data["channels"])
    inputs = torch.rand(shape_in, device=args.device)
    targets = torch.rand(shape_out, device=args.device)
    gflops = forward_gflops(model, inputs)
    # static shapes: a benchmark runs one shape, and dynamic-shape tracing fails on the cuboid reshapes
    runner = torch.compile(model, dynamic=False) if args.compile else model
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)
    autocast = (torch.autocast(args.device.split(":")[0], dtype=amp_dtype) if amp_dtype
                else contextlib.nullcontext())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step():
        with autocast:
            loss = torch.nn.functional.mse_loss(runner(inputs).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer():
        with autocast:
            runner(inputs)

    rows = []
    if not args.skip_train:
        model.train()
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            train_step()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device != "cpu" else [])
            with profile(activities=activities) as prof:
                train_step()
            sort = "self_cuda_time_total" if args.device != "cpu" else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=sort, row_limit=30))
        times = timed(train_step, args.device, args.warmup, args.repeats)
        rows.append(("train (fwd+bwd+AdamW)", times, peak_memory_mb(args.device)))
    model.eval()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = timed(infer, args.device, args.warmup, args.repeats)
    rows.append(("inference (no_grad)", times, peak_memory_mb(args.device)))

    threads = f", {torch.get_num_threads()} threads, allocator: {allocator}" if args.device == "cpu" else ""
    print(f"model {args.model}: {params:,} parameters, {gflops:.2f} GFLOPs/sample forward; "
          f"input {tuple(shape_in)} on {args.device}{threads}; compile={args.compile}, autocast={args.autocast}")
    print(f"{'mode':<24}{'median s/step':>14}{'min':>8}{'max':>8}{'samples/s':>11}{'GFLOP/s':>9}{'peak MB':>9}")
    # peak MB: CUDA max_memory_allocated; CPU: the process's peak RSS so far (`earthcast info` counts tensors)
    for mode, times, mem in rows:
        median = statistics.median(times)
        work = gflops * args.batch_size * (3 if mode.startswith("train") else 1)  # backward ≈ 2 × forward
        print(f"{mode:<24}{median:>14.3f}{min(times):>8.3f}{max(times):>8.3f}"
              f"{args.batch_size / median:>11.2f}{work / median:>9.1f}{mem:>9.0f}")
    if args.matmul:
        print(f"matmul {args.matmul}×{args.matmul} float32: {matmul_gflops(args.matmul, args.device):.1f} GFLOP/s "
              f"(median of 10)")
    # the machine may be shared: the load average says whether these timings had the cores to themselves
    print("load average (1/5/15 min): before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg()))


if __name__ == "__main__":
    main()
