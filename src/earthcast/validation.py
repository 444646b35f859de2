"""Every value a command reads, checked in one place: right after Hydra composes the config, before any work.

`validate(cfg, command)` walks `RULES` (dotted key → type and range), then the checks a table cannot hold:
known precisions, the accelerator this machine has, an empty data root, and (with `outputs=True`) that the run
directory and the checkpoint directory can be written. A key absent from the composed config is skipped (each
command composes only the groups it reads), so one table serves every command. The first problem becomes a
`UserError`: one line naming the key, the value and what to use instead (exit code 2).

For a sweep (`-m`) the CLI checks every job's config this way before the first job starts.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from earthcast.errors import UserError

MISSING = object()


@dataclass(frozen=True)
class Rule:
    """`kind`: int, float (an int also fits), bool, str or "limit" (Lightning's limit_*_batches: a count ≥ 0 or
    a fraction in [0, 1]); `low`/`high` inclusive bounds (`above`: exclusive lower bound); `each`: a list of
    such values is also accepted, each checked."""

    kind: Any
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple = ()
    nullable: bool = False
    each: bool = False
    hint: str = ""


COUNT = Rule(int, low=1)
FRACTION = Rule(float, low=0.0, high=1.0)

RULES: dict[str, Rule] = {
    "seed": Rule(int, low=0, high=2**32 - 1),
    "trainer.max_epochs": Rule(int, low=1, hint="train at least one epoch; to score a model without training "
                                                "use `earthcast eval ckpt_path=...`"),
    "trainer.min_epochs": Rule(int, low=0, nullable=True),
    "trainer.max_steps": Rule(int, low=-1, nullable=True),
    "trainer.num_nodes": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.check_val_every_n_epoch": Rule(int, low=1, nullable=True),
    "trainer.num_sanity_val_steps": Rule(int, low=-1),
    "trainer.limit_train_batches": Rule("limit", above=0, nullable=True,
                                        hint="training needs at least one batch"),
    "trainer.limit_val_batches": Rule("limit", low=0, nullable=True),
    "trainer.limit_test_batches": Rule("limit", above=0, nullable=True),
    "trainer.limit_predict_batches": Rule("limit", above=0, nullable=True),
    "trainer.deterministic": Rule(bool, nullable=True),
    "trainer.benchmark": Rule(bool, nullable=True),
    "dataset.batch_size": COUNT,
    "dataset.eval_batch_size": Rule(int, low=1, nullable=True),
    "dataset.num_workers": Rule(int, low=0, hint="0 reads in the main process"),
    "dataset.in_len": COUNT,
    "dataset.out_len": COUNT,
    "dataset.stride": COUNT,
    "dataset.height": COUNT,
    "dataset.width": COUNT,
    "dataset.channels": COUNT,
    "dataset.max_pct_missing": Rule(float, low=0.0, high=100.0),
    "dataset.augment": Rule(bool),
    "dataset.predict_split": Rule(str, choices=("train", "val", "test")),
    "dataset.synth.n_events": Rule(int, low=3),
    "dataset.synth.img_size": COUNT,
    "dataset.synth.random_fraction": FRACTION,
    "optim.lr": Rule(float, above=0.0, hint="e.g. optim.lr=1e-3"),
    "optim.weight_decay": Rule(float, low=0.0),
    "optim.warmup_fraction": Rule(float, low=0.0, high=1.0),
    "optim.warmup_start_factor": Rule(float, low=0.0, high=1.0),
    "optim.min_lr_ratio": Rule(float, low=0.0, high=1.0),
    "optim.total_batch_size": Rule(int, low=1, nullable=True),
    "optim.gradient_clip_val": Rule(float, low=0.0, nullable=True),
    "model.base_units": COUNT,
    "model.depth": Rule(int, low=1, each=True),
    "model.num_heads": COUNT,
    "model.dropout": Rule(float, low=0.0, high=0.99),
    "model.attn_drop": Rule(float, low=0.0, high=0.99),
    "model.proj_drop": Rule(float, low=0.0, high=0.99),
    "model.ffn_drop": Rule(float, low=0.0, high=0.99),
    "outputs.max_prediction_samples": Rule(int, low=0, nullable=True),
    "outputs.plot_samples": Rule(int, low=0),
    "outputs.report": Rule(bool),
    "test_after_fit": Rule(bool),
    "cpu_keep_freed_memory": Rule(bool),
    "init_strict": Rule(bool),
    "monitor.mode": Rule(str, choices=("max", "min")),
    "split": Rule(str, choices=("train", "val", "test")),
    "members": COUNT,
    "max_batches": Rule(int, low=1, nullable=True),
    "chunk_size": COUNT,
    "nan_policy": Rule(str, choices=("fail", "exclude", "mask"), nullable=True),
    "range_policy": Rule(str, choices=("warn", "fail")),
    "preemption.requeue": Rule(bool),
}


def validate(cfg, command: str, outputs: bool = True) -> None:
    """Raise a one-line UserError for the first bad value of the composed `cfg` (see the module docstring)."""
    for key, rule in RULES.items():
        value = _select(cfg, key)
        if value is not MISSING:
            check(key, value, rule)
    _check_precision(_select(cfg, "trainer.precision"))
    device = _select(cfg, "device")
    if device is MISSING or device is None:  # `device` (sample, predict) replaces the trainer's accelerator
        _check_accelerator(_select(cfg, "trainer.accelerator"), _select(cfg, "trainer.devices"))
    _check_device(device)
    _check_epochs(_select(cfg, "trainer.min_epochs"), _select(cfg, "trainer.max_epochs"))
    signal = _select(cfg, "preemption.signal")
    if signal is not MISSING:
        from earthcast.signals import parse_signal

        parse_signal(signal)
    if _select(cfg, "paths.data_root") == "":
        raise UserError("paths.data_root is empty (is EARTHCAST_DATA_ROOT exported but empty?); set it to the "
                        "directory holding the datasets, or unset EARTHCAST_DATA_ROOT to use ./data")
    if outputs:
        _check_outputs(cfg, command)


def check(key: str, value: Any, rule: Rule) -> None:
    if value is None:
        if rule.nullable:
            return
        _bad(key, value, "must be set", rule)
    if rule.each and isinstance(value, (list, tuple)):
        if not value:
            _bad(key, value, "must list at least one value", rule)
        for item in value:
            check(key, item, Rule(rule.kind, rule.low, rule.high, rule.above, rule.choices, hint=rule.hint))
        return
    kind = rule.kind
    if kind == "limit":
        kind = int if isinstance(value, int) and not isinstance(value, bool) else float
        if kind is float and _is_number(value) and not 0.0 <= float(value) <= 1.0:
            _bad(key, value, "must be a batch count or a fraction in [0, 1]", rule)
    if kind is bool and not isinstance(value, bool):
        _bad(key, value, "must be true or false", rule)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        _bad(key, value, "must be an integer", rule)
    if kind is float and not _is_number(value):
        _bad(key, value, "must be a number", rule)
    if kind is str and not isinstance(value, str):
        _bad(key, value, "must be a string", rule)
    if rule.choices and value not in rule.choices:
        _bad(key, value, f"must be one of {', '.join(map(str, rule.choices))}", rule)
    if rule.low is not None and value < rule.low:
        _bad(key, value, f"must be ≥ {_number(rule.low)}", rule)
    if rule.high is not None and value > rule.high:
        _bad(key, value, f"must be ≤ {_number(rule.high)}", rule)
    if rule.above is not None and value <= rule.above:
        _bad(key, value, f"must be > {_number(rule.above)}", rule)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _bad(key: str, value: Any, problem: str, rule: Rule | None = None) -> None:
    hint = f"; {rule.hint}" if rule is not None and rule.hint else ""
    raise UserError(f"{key}={value!r} {problem}{hint}")


def _select(cfg, key: str) -> Any:
    """The resolved value at `key`, MISSING when absent or not resolvable here (e.g. Hydra's runtime keys in a
    config composed outside a job)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    try:
        value = OmegaConf.select(cfg, key, default=MISSING, throw_on_missing=False)
    except OmegaConfBaseException:
        return MISSING
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def known_precisions() -> tuple:
    """Lightning's precision values, and earthcast's bf16-mixed-if-native."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    from earthcast.lightning.trainer import NATIVE_BF16

    values = [v for literal in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(literal)]
    return (*values, NATIVE_BF16)


def _check_precision(precision: Any) -> None:
    if precision is MISSING or precision is None:
        return
    known = known_precisions()
    if precision not in known:
        names = ", ".join(str(p) for p in known if isinstance(p, str) and "-" in p)
        raise UserError(f"trainer.precision={precision!r} is not a precision; use one of {names}")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: commands that keep no run directory of their own (they write where they are told, or nothing)
READ_ONLY_COMMANDS = ("data", "runs")


def _check_accelerator(accelerator: Any, devices: Any) -> None:
    if accelerator is MISSING:
        return
    if accelerator not in ACCELERATORS:
        raise UserError(f"trainer.accelerator={accelerator!r}; use one of {', '.join(ACCELERATORS)}")
    import torch

    if accelerator in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU that torch "
                            f"can use (torch {torch.__version__}); use trainer=cpu, or install a CUDA build of torch")
        wanted = _device_count(devices)
        if wanted is not None and wanted > count:
            raise UserError(f"trainer.devices={devices!r} but this machine has {count} GPU(s); "
                            f"use trainer.devices={count} or -1 (all)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.accelerator=mps but Apple's MPS backend is not available here; use trainer=cpu")
    if devices is not MISSING:
        _device_count(devices)


def _device_count(devices: Any) -> int | None:
    """How many devices `trainer.devices` asks for (None: all / auto); one line when it is not a device spec."""
    if devices in ("auto", -1, "-1") or devices is MISSING:
        return None
    if isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) and d >= 0 for d in devices):
        return max(devices) + 1
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) >= 1:
        return int(devices)
    raise UserError(f"trainer.devices={devices!r}; use a count ≥ 1, -1 (all), auto, or a list of device indices")


def _check_device(device: Any) -> None:
    """`earthcast sample device=`: auto | cpu | cuda | cuda:N | null."""
    if device is MISSING or device in (None, "auto", "cpu"):
        return
    import torch

    if not isinstance(device, str) or not (device == "cuda" or device.startswith("cuda:")):
        raise UserError(f"device={device!r}; use auto, cpu, cuda or cuda:<index>")
    index = device.partition(":")[2] or "0"
    if not index.isdigit():
        raise UserError(f"device={device!r}; use auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available() or int(index) >= torch.cuda.device_count():
        raise UserError(f"device={device} but torch sees {torch.cuda.device_count()} CUDA GPU(s) here; "
                        f"use device=cpu or device=auto")


def _check_epochs(min_epochs: Any, max_epochs: Any) -> None:
    if _is_number(min_epochs) and _is_number(max_epochs) and min_epochs > max_epochs:
        raise UserError(f"trainer.min_epochs={min_epochs} exceeds trainer.max_epochs={max_epochs}; "
                        f"lower min_epochs or raise max_epochs")


def _check_outputs(cfg, command: str) -> None:
    """The run directory, and the checkpoint directory a training run saves to, can be written."""
    from earthcast.rundir import check_writable

    run_dir = _select(cfg, "paths.output_dir")
    if isinstance(run_dir, str) and command not in READ_ONLY_COMMANDS:
        check_writable(run_dir)
    dirpath = _select(cfg, "callbacks.model_checkpoint.dirpath")
    if command == "train" and isinstance(dirpath, str):
        check_writable(dirpath, "checkpoint directory",
                       "point callbacks.model_checkpoint.dirpath= (or the run directory) at a writable directory",
                       create=False)

