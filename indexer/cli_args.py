"""Command-line flags generated from config dataclasses, so defaults and help live in one place."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin


def _flag(prefix: str, name: str) -> str:
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (f"{prefix}_" if prefix else "") + name


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per field of ``cls`` (help from the field's metadata, default from it)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        # argparse %-formats help strings: a literal "%" (as in "5 %") must be doubled.
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        flag, dest = _flag(prefix, f.name), _dest(prefix, f.name)
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
        args = [a for a in get_args(hint) if a is not type(None)]
        # `X | None` fields take X's flag type.
        base = args[0] if get_origin(hint) in (typing.Union, types.UnionType) and args else hint
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
        elif get_origin(base) is tuple:
            inner = get_args(base)[0]
            kwargs["type"] = lambda s, inner=inner: tuple(
                inner(x.strip()) for x in s.split(",") if x.strip()
            )
            kwargs["metavar"] = "A,B,..."
        else:
            kwargs["type"] = base
        group.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type, ns: argparse.Namespace, prefix: str = "") -> Any:
    """Build ``cls`` from parsed flags, keeping field defaults for flags not given."""
    given = {
        f.name: getattr(ns, _dest(prefix, f.name))
        for f in dataclasses.fields(cls)
        if getattr(ns, _dest(prefix, f.name), None) is not None
    }
    return cls(**given)
