"""`earthcast <command> [Hydra words]`: the command's module (earthcast.commands) runs on the config Hydra
composes from configs/<command>.yaml.

The words after the command go to Hydra as they are (overrides, -m, --cfg, --help, ...), with two additions:
a command may turn its own words into Hydra's first (`prepare`, e.g. `earthcast data synth` → `action=synth`),
and `ckpt_path=<file>` puts the overrides the checkpoint's run was composed with in front of them, so eval,
predict, sample and a resumed train rebuild the run as trained (the command line wins). The checkpoint is
read here, once, and handed to the command.

Mistakes (a bad override, an unknown option, a UserError) print one line and exit with code 2;
HYDRA_FULL_ERROR=1 shows tracebacks. Lightning's DDP launcher re-executes sys.argv for every extra device,
so sys.argv holds `earthcast <command> <words>` while the command runs.
"""

from __future__ import annotations

import os
import re
import sys

from earthcast.commands import COMMANDS, load, summary, value_of, with_overrides
from earthcast.config import config_dir
from earthcast.errors import EXIT_USER_ERROR, UserError

EXAMPLES = """\
examples:
  earthcast train                                   # quickstart on the synthetic twin
  earthcast train model=unet trainer.max_epochs=3
  earthcast train -m model.base_units=16,32          # a sweep: one run per value
  earthcast train ckpt_path=<run>/checkpoints/last.ckpt   # resume
  earthcast eval ckpt_path=<run>/checkpoints/best.ckpt
  earthcast data synth dataset=enso_synth
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
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    try:
        command = load(name)
        if hasattr(command, "prepare"):
            words = command.prepare(words)
        checkpoint = None
        if value_of(words, "ckpt_path"):
            from earthcast.lightning.checkpoint import Checkpoint

            checkpoint = Checkpoint.read(value_of(words, "ckpt_path"))
            words = with_overrides(words, checkpoint.overrides)
        _run_hydra(name, command, words, checkpoint, argv[0], user_setting)
    except Exception as err:  # noqa: BLE001 - a mistake the user can fix becomes one line; the rest re-raises
        _fail_or_raise(name, err, user_setting)


def _run_hydra(name: str, command, words: list[str], checkpoint, program: str, user_setting: str | None) -> None:
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name=name, version_base="1.3")
    def app(cfg):
        _set_env("HYDRA_FULL_ERROR", user_setting)  # the command and its child processes see the user's setting
        sys.argv = [program, name, *words]  # Lightning's DDP launcher re-executes this command line
        try:
            return command.run(cfg, checkpoint)
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
    finally:
        _set_env("HYDRA_FULL_ERROR", user_setting)


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
        return UserError(f"unknown config key {key!r}; check the spelling (`earthcast {name} --cfg job` "
                         f"lists the keys) or add a new key with +{key}=...")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return UserError(f"bad configuration: {lines[0] if lines else type(err).__name__}")


def _fail(name: str, err: BaseException) -> None:
    print(f"earthcast{' ' + name if name else ''}: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
