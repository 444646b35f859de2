"""model facts: shapes, parameters, GFLOPs, memory and timing of a training step

Everything needed to size a run before queueing it, written to info.json:
    earthcast info model=earthformer_sevirlr dataset=sevirlr            # shapes, parameters, GFLOPs, memory
    earthcast info model=earthformer_sevirlr dataset=sevirlr +bench=true warmup=3 repeats=10   # + timings
A training step is forward + backward + AdamW on random inputs of the dataset's shape, in
`trainer.precision`, on the trainer's accelerator; OMP_NUM_THREADS sets the CPU threads.

With bench=true the same run also times a plain square matmul in float32 and bfloat16 on the same device and
threads, and reports the model's achieved GFLOP/s as a fraction of the matmul rate of the precision it ran in:
a number comparable across machines (a step time alone is not).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
import weakref
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from earthcast.errors import UserError
from earthcast.io import write_json
from earthcast.lightning.allocator import keep_freed_memory
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.trainer import NATIVE_BF16, native_bf16_or_fp32
from earthcast.models import build_model

#: keys of configs/info.yaml: `+bench=true` (the documented form) and `bench=true` both set them
OWN_KEYS = ("bench", "warmup", "repeats", "batch_size")
#: Lightning precisions that run under autocast, and the dtype they autocast to
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def prepare(words: list[str]) -> list[str]:
    """`+bench=true` → `bench=true`: Hydra refuses to append a key that info.yaml already has."""
    return [w[1:] if w.startswith("+") and not w.startswith("++") and w[1:].split("=", 1)[0] in OWN_KEYS else w
            for w in words]


def example_inputs(cfg_dataset, batch_size: int) -> torch.Tensor:
    shape = (batch_size, int(cfg_dataset.in_len), int(cfg_dataset.height), int(cfg_dataset.width),
             int(cfg_dataset.channels))
    return torch.rand(shape)


def forward_gflops(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """GFLOPs of one forward pass per sample (torch's FLOP counter: matmuls and convolutions)."""
    # with autograd on: under no_grad, FlopCounterMode's module tracker fails on views of parameters
    # (e.g. the expanded global vectors), which then require grad without a grad_fn
    with FlopCounterMode(display=False) as counter:
        model(inputs[:1])
    return counter.get_total_flops() / 1e9


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of tensor storages created while active, on any device.

    The CPU has no allocator statistics like CUDA's max_memory_allocated, and the process's RSS high-water
    mark only grows (it says nothing about a step after a larger one). So every op's outputs are seen here,
    each new storage is counted once, and a finalizer subtracts it when it is freed (autograd's saved
    tensors stay alive until backward releases them). Slow (a Python call per op): for one step, not timing."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self._seen:  # a view or an in-place result: no new memory
                continue
            nbytes = storage.nbytes()
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def _resident_bytes(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Memory already held when the step starts: parameters, buffers and the input batch."""
    tensors = [*model.parameters(), *model.buffers(), inputs]
    return sum(t.numel() * t.element_size() for t in tensors)


def train_step_fn(model: torch.nn.Module, inputs: torch.Tensor, autocast=contextlib.nullcontext):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if any(p.requires_grad for p in model.parameters()) \
        else None

    def step():
        with autocast():
            output = model(inputs)
        if optimizer is None:
            return output
        loss = output.float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_calls(fn, warmup: int, repeats: int, sync=None) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (all its threads) of fn() after warm-up
    calls. On a shared machine other jobs stretch the wall time; the CPU time of a one-thread run
    (OMP_NUM_THREADS=1) much less, which makes it the figure to compare across loads."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if sync:
            sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return statistics.median(walls), statistics.median(cpus)


def time_after_eval(model: torch.nn.Module, inputs: torch.Tensor, step, autocast, repeats: int, sync=None) -> float:
    """Median wall seconds of a training step taken right after an inference call in eval mode."""
    walls = []
    for _ in range(repeats):
        model.eval()
        with torch.no_grad(), autocast():
            model(inputs)
        model.train()
        if sync:
            sync()
        start = time.perf_counter()
        step()
        if sync:
            sync()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def matmul_rates(device: torch.device, size: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of a size×size matmul (2·size³ FLOPs) in float32 and bfloat16: the machine's practical peak
    for dense arithmetic, as the model's kernels see it (same device, same threads)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        seconds, _ = time_calls(lambda a=a, b=b: a @ b, warmup=2, repeats=repeats, sync=sync)
        rates[f"matmul_gflops_per_s_{name}"] = 2 * size**3 / seconds / 1e9
    return rates


def measure(model: torch.nn.Module, inputs: torch.Tensor, *, bench: bool, warmup: int, repeats: int,
            autocast=contextlib.nullcontext) -> dict:
    device = inputs.device
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    facts: dict = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops_forward_per_sample": forward_gflops(model, inputs),
    }
    step = train_step_fn(model, inputs, autocast)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        facts["peak_memory_mb_train_step"] = torch.cuda.max_memory_allocated() / 2**20
        facts["peak_memory_method"] = "torch.cuda.max_memory_allocated"
    else:
        # the first step, as on a GPU after reset: parameters and batch, then activations, gradients and
        # the optimizer's state as they are allocated and freed
        resident = _resident_bytes(model, inputs)
        with TensorMemoryTracker() as tracker:
            step()
        facts["peak_memory_mb_train_step"] = (resident + tracker.peak) / 2**20
        facts["peak_memory_method"] = "tensor storages live at once"
        facts["peak_rss_mb"] = _peak_rss_mb()
    if bench:
        facts["train_step_s"], train_cpu = time_calls(step, warmup, repeats, sync)
        if not cuda:
            facts["train_step_cpu_s"] = train_cpu
        model.eval()  # inference as deployed: no dropout (and the fused attention kernels)
        with torch.no_grad(), autocast():
            facts["inference_s"], _ = time_calls(lambda: model(inputs), warmup, repeats, sync)
        model.train()
        # validation every epoch: a training step right after an evaluation step must not rebuild anything
        facts["train_step_after_eval_s"] = time_after_eval(model, inputs, step, autocast, repeats, sync)
        batch = inputs.shape[0]
        # backward costs about twice the forward (gradients for inputs and weights)
        facts["achieved_gflops_per_s_train"] = 3 * facts["gflops_forward_per_sample"] * batch / facts["train_step_s"]
        facts["achieved_gflops_per_s_inference"] = facts["gflops_forward_per_sample"] * batch / facts["inference_s"]
        facts.update(matmul_rates(device))
        peak = facts["matmul_gflops_per_s_bf16" if autocast is not contextlib.nullcontext else
                     "matmul_gflops_per_s_fp32"]
        facts["train_fraction_of_matmul"] = facts["achieved_gflops_per_s_train"] / peak
        facts["inference_fraction_of_matmul"] = facts["achieved_gflops_per_s_inference"] / peak
    return facts


def _choice(group: str) -> str | None:
    """The config file picked for a group (e.g. earthformer_sevirlr for model), when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _check_settings(cfg: DictConfig) -> None:
    if not isinstance(cfg.bench, bool):
        raise UserError(f"bench={cfg.bench!r}: use bench=true or bench=false")
    for key, low in (("batch_size", 1), ("warmup", 0), ("repeats", 1)):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"{key}={value!r}: use a whole number >= {low}")


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None) -> dict:
    _check_settings(cfg)
    run_dir = Path(cfg.paths.output_dir)
    model = build_model(cfg.model)
    batch_size = int(cfg.batch_size)
    inputs = example_inputs(cfg.dataset, batch_size)
    device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
                          else "cpu")
    model, inputs = model.to(device), inputs.to(device)
    precision = str(cfg.trainer.precision)
    if precision == NATIVE_BF16:
        precision = native_bf16_or_fp32(device.type)
    dtype = AUTOCAST.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    # timed CPU steps without re-faulting big tensors every step (see earthcast.lightning.allocator)
    kept = device.type == "cpu" and bool(cfg.bench) and bool(cfg.cpu_keep_freed_memory) and keep_freed_memory()
    with torch.no_grad():
        output = model(inputs[:1])
    facts = {
        "model": cfg.model.name,
        "model_config_name": _choice("model"),
        "dataset": cfg.dataset.name,
        "input_shape": list(inputs.shape[1:]),
        "output_shape": list(output.shape[1:]),
        "layout": "T x H x W x C per sample",
        "batch_size": batch_size,
        "device": str(device),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "cpu_allocator": "glibc, freed memory kept" if kept else "default",
        **measure(model, inputs, bench=bool(cfg.bench), warmup=int(cfg.warmup), repeats=int(cfg.repeats),
                  autocast=autocast),
        "model_config": OmegaConf.to_container(cfg.model, resolve=True),
    }
    write_json(run_dir / "info.json", facts)
    console = Console()
    console.print(f"[bold]{cfg.model.name}[/bold] on {cfg.dataset.name}")
    for key, value in facts.items():
        if key == "model_config":
            continue
        console.print(f"  {key:<28} {value:,.4g}" if isinstance(value, float) else f"  {key:<28} {value}")
    console.print(f"wrote {run_dir / 'info.json'}")
    return facts
