"""Name → factory registries (timm-style), shared by models, datasets and evaluators.

A config picks an entry by `name`, or names any importable object with `_target_: my_package.MyThing` (Hydra's
key), so a user's own class plugs in without being registered: `build(cfg)` finds either.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from earthcast.errors import UserError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def build_from(self, cfg: Mapping) -> Callable[..., Any]:
        """The factory a config asks for: its `_target_` (imported) when it has one, else the entry `name`."""
        target = cfg.get("_target_")
        if target:
            return import_target(str(target), f"{self.kind}._target_")
        if not cfg.get("name"):
            raise UserError(f"{self.kind} config has no 'name' (nor '_target_'); set {self.kind}.name to one of: "
                            f"{', '.join(self.names())}, or {self.kind}._target_=my_package.MyClass")
        return self.get(str(cfg["name"]))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def import_target(path: str, key: str) -> Any:
    """`package.module.Name` → the object, or a one-line error naming the config key."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise UserError(f"{key}={path!r} must be a dotted path like my_package.MyClass")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"{key}={path!r}: cannot import {module_name} ({err}); install the package or fix "
                        f"the path") from None
    if not hasattr(module, attribute):
        raise UserError(f"{key}={path!r}: {module_name} has no {attribute!r}; fix the name")
    return getattr(module, attribute)
