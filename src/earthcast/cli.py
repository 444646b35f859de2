"""`earthcast <command> [Hydra words]`: the command's module (earthcast.commands) runs on the config Hydra
composes from configs/<command>.yaml.

The words after the command go to Hydra as they are (overrides, -m, --cfg, --help, ...), with two additions:
a command may turn its own words into Hydra's first (`prepare`, e.g. `earthcast data synth` → `action=synth`),
and `ckpt_path=<file>` puts the overrides the checkpoint's run was composed with in front of them, so eval,
predict, sample and a resumed train rebuild the run as trained (the command line wins). The checkpoint is
read here, once, and handed to the command.

Before a command runs, its composed config is validated (earthcast.validation; for a sweep, every job's config
before the first job starts), its run directory is checked and locked (earthcast.rundir), and the signal
guard is installed (earthcast.signals).

Mistakes (a bad override, an unknown option, a bad value, a UserError, an unwritable output directory) print
one line and exit with code 2; HYDRA_FULL_ERROR=1 shows tracebacks. A signal prints one line and exits with
128 + its number (SIGINT 130, SIGTERM 143). Lightning's DDP launcher re-executes sys.argv for every extra
device, so sys.argv holds `earthcast <command> <words>` while the command runs.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from contextlib import nullcontext

from earthcast.commands import COMMANDS, is_override, load, override_key, summary, value_of, with_overrides
from earthcast.config import config_dir
from earthcast.errors import EXIT_USER_ERROR, UserError
from earthcast.signals import GUARD, Stopped

#: commands that write into a run directory of their own, which is therefore locked while they run
WRITES_RUN_DIR = ("train", "eval", "predict", "sample")
#: file errors the user fixes (space, permissions, a read-only place, a file for a directory): one line
WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR)
#: keys whose override came from the ckpt_path= checkpoint rather than the command line → that checkpoint
REPLAYED: dict = {}

EXAMPLES = """\
examples:
  earthcast train                                   # quickstart on the synthetic twin
  earthcast train model=unet trainer.max_epochs=3
  earthcast train -m model.base_units=16,32          # a sweep: one run per value
  earthcast train ckpt_path=<run>/checkpoints/last.ckpt   # resume
  earthcast eval ckpt_path=<run>/checkpoints/best.ckpt
  earthcast data synth dataset=enso_synth
  earthcast train dataset=gridded dataset.path='era5/*.nc' dataset.variable=t2m evaluator=gridded ...
  earthcast predict ckpt_path=<run>/checkpoints/best.ckpt inputs=latest.nc   # no targets needed
  earthcast runs outputs/train                      # past runs: status, scores, overrides
  earthcast info model=earthformer_sevir dataset=sevir
  earthcast convert weights=earthformer_sevir.pt model=earthformer_sevir dataset=sevir

`earthcast <command> --help` shows its config groups; HYDRA_FULL_ERROR=1 shows tracebacks."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: earthcast <command> [key=value ...] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
    return "\n".join([*lines, "", EXAMPLES])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv) if argv is None else ["earthcast", *argv]
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[1] == "--version":
        from earthcast import __version__

        print(f"earthcast {__version__}")
        return
    name, words = argv[1], argv[2:]
    if name not in COMMANDS:
        _fail("", UserError(f"unknown subcommand {name!r}; choose one of {', '.join(COMMANDS)} (earthcast --help)"))
    GUARD.install()  # from here on SIGTERM and SIGINT stop with one line and 128 + the signal number
    REPLAYED.clear()
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    try:
        command = load(name)
        if hasattr(command, "prepare"):
            words = command.prepare(words)
        checkpoint = None
        if value_of(words, "ckpt_path"):
            from earthcast.lightning.checkpoint import Checkpoint

            checkpoint = Checkpoint.read(value_of(words, "ckpt_path"))
            given = {override_key(word) for word in words if is_override(word)}
            REPLAYED.update({override_key(o): checkpoint.path for o in checkpoint.overrides
                             if override_key(o) not in given})
            words = with_overrides(words, checkpoint.overrides)
        if _is_sweep(words):
            _check_sweep(name, words)
        with _early_lock(name, words):
            _run_hydra(name, command, words, checkpoint, argv[0], user_setting)
    except Stopped as stop:
        _stop(name, stop)
    except KeyboardInterrupt:  # SIGINT before the guard was installed (while Python started)
        _stop(name, Stopped(signal.SIGINT))
    except Exception as err:  # noqa: BLE001 - a mistake the user can fix becomes one line; the rest re-raises
        _fail_or_raise(name, err, user_setting)


def _run_hydra(name: str, command, words: list[str], checkpoint, program: str, user_setting: str | None) -> None:
    import hydra

    started = False

    @hydra.main(config_path=str(config_dir()), config_name=name, version_base="1.3")
    def app(cfg):
        nonlocal started
        started = True
        _set_env("HYDRA_FULL_ERROR", user_setting)  # the command and its child processes see the user's setting
        sys.argv = [program, name, *words]  # Lightning's DDP launcher re-executes this command line
        try:
            return _run_command(name, command, cfg, checkpoint)
        except Stopped as stop:  # here too: under submitit this job runs without main() around it
            _stop(name, stop)
        except Exception as err:  # noqa: BLE001 - as in main(), inside Hydra's job
            _fail_or_raise(name, err, user_setting)
        finally:
            os.environ["HYDRA_FULL_ERROR"] = "1"

    # Hydra reports composition errors itself (several lines, exit 1) unless HYDRA_FULL_ERROR is set; with it
    # they reach main() as exceptions and become one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [program, *words]
    try:
        app()
    except OSError as err:
        from hydra.errors import HydraException

        if started or isinstance(err, HydraException):  # Hydra's MissingConfigException is an IOError too
            raise
        from earthcast.rundir import WHERE_TO_WRITE, describe_os_error

        # Hydra creates the run directory (and writes .hydra/ there) before the job starts
        raise UserError(f"cannot create the run directory ({describe_os_error(err)}); {WHERE_TO_WRITE}") from None
    finally:
        _set_env("HYDRA_FULL_ERROR", user_setting)


def _run_command(name: str, command, cfg, checkpoint):
    """Validate the composed config, then run the command in its locked run directory."""
    from omegaconf import OmegaConf

    from earthcast.rundir import RunLock
    from earthcast.signals import parse_signal
    from earthcast.validation import validate

    validate(cfg, name)
    warning = OmegaConf.select(cfg, "preemption.signal")
    GUARD.install(*([parse_signal(warning)] if warning else []))
    lock = RunLock(cfg.paths.output_dir, name) if name in WRITES_RUN_DIR else nullcontext()
    with lock:
        return command.run(cfg, checkpoint)


def _early_lock(name: str, words: list[str]):
    """An explicit run directory (a resume names its own) is locked before Hydra writes .hydra/ into it, so a
    second process never overwrites the record of the run in progress."""
    run_dir = value_of(words, "hydra.run.dir")
    if (name not in WRITES_RUN_DIR or not run_dir or "${" in run_dir or _is_sweep(words)
            or any(w.startswith("--") for w in words)):
        return nullcontext()  # no directory yet, or one Hydra has to resolve: locked once the job starts
    from earthcast.rundir import RunLock

    return RunLock(run_dir, name)


def _is_sweep(words: list[str]) -> bool:
    return any(word in ("-m", "--multirun") for word in words)


def _check_sweep(name: str, words: list[str]) -> None:
    """Every job of a basic sweep composed and validated before the first one starts: a bad later value fails
    in one line now, not after the earlier jobs ran."""
    overrides = [word for word in words if is_override(word)]
    if any(w.startswith("--") for w in words) or any(override_key(o).startswith(("hydra/sweeper", "hparams_search"))
                                                     for o in overrides):
        return  # Hydra's info/config views, or a sweeper that draws its own values
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from earthcast.validation import validate

    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    except (HydraException, ValueError):
        return  # sweep syntax of another sweeper: Hydra reports what it cannot read
    jobs = [job for batch in batches for job in batch]
    swept = {override_key(o) for o in overrides if "," in o.split("=", 1)[1]}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for number, job in enumerate(jobs):
            try:
                validate(compose(config_name=name, overrides=list(job)), name, outputs=False)
            except UserError as err:
                values = " ".join(o for o in job if override_key(o) in swept)
                raise UserError(f"sweep job #{number} ({values}): {err}; no job was started") from None


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _fail_or_raise(name: str, err: Exception, user_setting: str | None) -> None:
    problem = None if user_setting == "1" else _user_problem(err, name)
    if problem is None:
        raise err
    _fail(name, problem)


def _user_problem(err: Exception, name: str) -> UserError | None:
    """The one-line error for a mistake the user can fix; None for anything else (a bug: full traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, UserError):
        return err
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return _config_problem(err, name)
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        from earthcast.rundir import describe_os_error

        return UserError(f"{describe_os_error(err)}; check that path (free space, permissions, a directory where a "
                         f"file belongs), or write elsewhere with hydra.run.dir= / paths.output_root=")
    return None


def _config_problem(err: Exception, name: str) -> UserError:
    text = str(err)
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        choices = sorted(p.stem for p in (config_dir() / group).glob("*.yaml")) if group else []
        hint = f"available: {', '.join(choices)}" if choices else "check the name"
        return UserError(f"unknown {group or 'config'} {option!r} ({hint}; configs/{group}/)")
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if unknown:
        key = unknown.group(1)
        source = REPLAYED.get(key)
        if source is not None:
            return UserError(f"{source} was trained with the override {key}=..., a key today's configs do not "
                             f"have; evaluate it with the earthcast version that wrote it, or retrain")
        return UserError(f"unknown config key {key!r}; check the spelling (`earthcast {name} --cfg job` "
                         f"lists the keys) or add a new key with +{key}=...")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return UserError(f"bad configuration: {lines[0] if lines else type(err).__name__}")


def _stop(name: str, stop: Stopped) -> None:
    message = stop.message or (f"stopped by {stop.name}; every output is published only once complete, so "
                               f"nothing partial was left")
    print(f"earthcast {name}: {message}", file=sys.stderr)
    sys.exit(stop.exit_code)


def _fail(name: str, err: BaseException) -> None:
    print(f"earthcast{' ' + name if name else ''}: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
