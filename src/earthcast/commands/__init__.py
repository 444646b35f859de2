"""One module per `earthcast <command>`, run on the config Hydra composes from configs/<command>.yaml.

A command module has
    a docstring          its first line is the command's line in `earthcast --help`
    run(cfg, checkpoint) what the command does; `checkpoint` is the `ckpt_path=` checkpoint the CLI already
                         read (earthcast.lightning.checkpoint.Checkpoint), or None
    prepare(words)       optional: turns the command's own words into Hydra's (e.g. `data synth`)
A new command is a module here, its configs/<name>.yaml, and its name in COMMANDS.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from types import ModuleType

#: the commands, in the order `earthcast --help` lists them
COMMANDS = ("train", "eval", "report", "predict", "data", "sample", "info", "convert", "runs")


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def summary(name: str) -> str:
    """The first line of a command's docstring, read without importing the module (help stays fast)."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    docstring = ast.get_docstring(ast.parse(spec.loader.get_source(spec.name))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def override_key(word: str) -> str:
    """The key an override sets (`+a.b=1` → `a.b`)."""
    return word.split("=", 1)[0].lstrip("+~")


def is_override(word: str) -> bool:
    return "=" in word and not word.startswith("-")


def value_of(words: list[str], key: str) -> str | None:
    """The value the last override of `key` sets, None when absent or null."""
    for word in reversed(words):
        if is_override(word) and override_key(word) == key:
            value = word.split("=", 1)[1].strip()
            return None if value in ("null", "None") else (value.strip("'\"") or None)
    return None


def with_overrides(words: list[str], overrides: list[str]) -> list[str]:
    """`overrides` put before the first override in `words` (where Hydra reads overrides), minus any key the
    words set again: the command line wins."""
    given = {override_key(w) for w in words if is_override(w)}
    kept = [o for o in overrides if override_key(o) not in given]
    first = next((i for i, w in enumerate(words) if is_override(w)), len(words))
    return [*words[:first], *kept, *words[first:]]
