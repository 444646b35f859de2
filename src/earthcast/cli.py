"""`earthcast <subcommand> [hydra overrides]`: one command, subcommands over Hydra.

Each subcommand is a Hydra app whose primary config is configs/<subcommand>.yaml. Hydra parses the words
after the subcommand (overrides, -m, --cfg, --help); the full argv (subcommand included) is restored before
the task runs, because Lightning's DDP launcher re-executes sys.argv for every extra device and the children
must re-enter the same subcommand.

Before Hydra runs we
  * replay a checkpoint's own overrides (ckpt_path=...) so eval/predict/resume rebuild the trained run;
  * point a resumed `train` at the checkpoint's run directory;
  * compose once to turn config mistakes into one-line errors with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from earthcast.errors import EXIT_USER_ERROR, UserError

SUBCOMMANDS = {
    "train": "train a model (no arguments: the quickstart on the synthetic SEVIR twin), then test it",
    "eval": "score a checkpoint (ckpt_path=...) or a stored forecast file (predictions=...)",
    "predict": "write forecasts of a checkpoint to predictions.nc",
    "data": "data tools: synth (synthetic twins), sevirlr (build SEVIR-LR), check (validate a root)",
    "sample": "draw ensemble forecasts from a diffusion checkpoint (PreDiff), with knowledge control",
    "info": "model facts: shapes, parameters, GFLOPs, memory and timing of a training step",
    "convert": "published Earthformer weights (weights=<.pt>) → an earthcast checkpoint for eval/predict/init_from",
}
DATA_ACTIONS = ("synth", "sevirlr", "check")
# Hydra flags that take a value in the next word
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--shell-completion", "-sc", "--info", "-i"}


def config_dir() -> Path:
    """configs/ of the source checkout, or EARTHCAST_CONFIG_DIR."""
    override = os.environ.get("EARTHCAST_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / "configs", Path(__file__).resolve().parent / "configs"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise UserError("cannot find earthcast's configs/ directory; set EARTHCAST_CONFIG_DIR=<repo>/configs")


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: earthcast <subcommand> [key=value ...] [-m] [--cfg job] [--help]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "examples:",
              "  earthcast train                                   # quickstart on the synthetic twin",
              "  earthcast train model=unet trainer.max_epochs=3",
              "  earthcast train -m model.base_units=16,32          # a sweep: one run per value",
              "  earthcast train ckpt_path=<run>/checkpoints/last.ckpt   # resume",
              "  earthcast eval ckpt_path=<run>/checkpoints/best.ckpt",
              "  earthcast data synth dataset=enso_synth",
              "  earthcast info model=earthformer_sevir dataset=sevir",
              "  earthcast convert weights=earthformer_sevir.pt model=earthformer_sevir dataset=sevir",
              "", "`earthcast <subcommand> --help` shows its config groups; HYDRA_FULL_ERROR=1 shows tracebacks."]
    return "\n".join(lines)


def split_flags(words: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags (with their values) from key=value overrides."""
    flags, overrides, i = [], [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            flags.append(word)
            takes_value = word in _FLAGS_WITH_VALUE or (word in ("--info", "-i") and i + 1 < len(words)
                                                        and words[i + 1] in _INFO_VALUES)
            if takes_value and i + 1 < len(words):
                flags.append(words[i + 1])
                i += 1
        else:
            overrides.append(word)
        i += 1
    return flags, overrides


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(replayed: list[str], given: list[str]) -> list[str]:
    """Replayed overrides first, minus any key the command line sets again (the command line wins)."""
    given_keys = {_override_key(o) for o in given}
    return [o for o in replayed if _override_key(o) not in given_keys] + given


def _value_of(overrides: list[str], key: str) -> str | None:
    for override in reversed(overrides):
        if _override_key(override) == key and "=" in override:
            value = override.split("=", 1)[1].strip()
            return value.strip("'\"") or None if value not in ("null", "None") else None
    return None


def replay_checkpoint(subcommand: str, overrides: list[str]) -> list[str]:
    ckpt = _value_of(overrides, "ckpt_path")
    if not ckpt or subcommand not in ("train", "eval", "predict", "sample"):
        return overrides
    from earthcast.tasks.runtime import checkpoint_overrides, load_checkpoint

    checkpoint = load_checkpoint(ckpt)
    merged = merge_overrides(checkpoint_overrides(checkpoint), overrides)
    ckpt_path = Path(ckpt)
    if subcommand == "train" and _value_of(overrides, "hydra.run.dir") is None \
            and ckpt_path.resolve().parent.name == "checkpoints":
        # resume in the same run directory: checkpoints and loggers continue there
        merged.append(f"hydra.run.dir={ckpt_path.resolve().parent.parent}")
    return merged


# `earthcast info +bench=true` (as documented) and `bench=true` both work: these keys already exist in
# info.yaml, where Hydra would refuse to append them again
_INFO_KEYS = ("bench", "warmup", "repeats", "batch_size")


def plain_info_keys(overrides: list[str]) -> list[str]:
    return [o[1:] if o.startswith("+") and not o.startswith("++") and _override_key(o) in _INFO_KEYS else o
            for o in overrides]


def _first_sweep_value(override: str) -> str:
    """Compose-check a sweep (`k=a,b` or range/choice) with its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()))
    return f"{parsed.get_key_element()}={first}"


def _composition_error(err: Exception, subcommand: str) -> UserError:
    import re

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
        return UserError(f"unknown config key {key!r}; check the spelling (`earthcast {subcommand} --cfg job` "
                         f"lists the keys) or add a new key with +{key}=...")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return UserError(f"bad configuration: {lines[0] if lines else type(err).__name__}")


def validate(subcommand: str, overrides: list[str]) -> None:
    """Compose the config once so mistakes surface as one line (Hydra would print a multi-line report)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        checked = [_first_sweep_value(o) for o in overrides]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            # with the hydra node, so hydra.* keys and launcher presets (hydra/launcher=slurm) are checked too
            compose(config_name=subcommand, overrides=checked, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise _composition_error(err, subcommand) from None


def _fail(subcommand: str, err: BaseException) -> None:
    print(f"earthcast{' ' + subcommand if subcommand else ''}: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_subcommand(subcommand: str, hydra_words: list[str], relaunch_argv: list[str]) -> None:
    import hydra
    from omegaconf.errors import OmegaConfBaseException

    from earthcast.tasks import dispatch

    @hydra.main(config_path=str(config_dir()), config_name=subcommand, version_base="1.3")
    def app(cfg):
        sys.argv = relaunch_argv  # Lightning's DDP launcher re-executes this command line
        try:
            return dispatch(subcommand, cfg)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(subcommand, err)
        except OmegaConfBaseException as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(subcommand, UserError(f"bad configuration: {str(err).splitlines()[0]}"))

    sys.argv = [relaunch_argv[0], *hydra_words]
    app()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv) if argv is None else ["earthcast", *argv]
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[1] == "--version":
        from earthcast import __version__

        print(f"earthcast {__version__}")
        return
    subcommand, words = argv[1], argv[2:]
    if subcommand not in SUBCOMMANDS:
        _fail("", UserError(f"unknown subcommand {subcommand!r}; choose one of {', '.join(SUBCOMMANDS)} "
                            f"(earthcast --help)"))
    if subcommand == "data" and words and words[0] in DATA_ACTIONS:
        words = [f"action={words[0]}", *words[1:]]
    flags, overrides = split_flags(words)
    if subcommand == "info":
        overrides = plain_info_keys(overrides)
    if not any(f in _HELP_FLAGS for f in flags):
        try:
            overrides = replay_checkpoint(subcommand, overrides)
            validate(subcommand, overrides)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(subcommand, err)
    run_subcommand(subcommand, [*flags, *overrides], [argv[0], subcommand, *flags, *overrides])


if __name__ == "__main__":
    main()
