"""Lightning tasks and the subcommands that drive them."""

from __future__ import annotations


def dispatch(subcommand: str, cfg):
    if subcommand == "train":
        from earthcast.tasks.commands import run_train as run
    elif subcommand == "eval":
        from earthcast.tasks.commands import run_eval as run
    elif subcommand == "predict":
        from earthcast.tasks.commands import run_predict as run
    elif subcommand == "sample":
        from earthcast.tasks.sample import run_sample as run
    elif subcommand == "info":
        from earthcast.tasks.info import run_info as run
    elif subcommand == "data":
        from earthcast.tasks.data_command import run_data as run
    elif subcommand == "convert":
        from earthcast.tasks.convert import run_convert as run
    else:  # pragma: no cover - cli validates the name
        raise ValueError(subcommand)
    return run(cfg)
