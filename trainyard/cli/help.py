"""Help that reads like a manual page: `--limit N`, `JOB_ID`, `at least 1`, never typer's raw
type hints (`<list[str]>`, `<float range>`, `{job_id}`, `x>=0.01`).

`HelpGroup` is the main app's group class. Once typer has built the whole command tree it
gives every parameter a display of that kind, so a command added later (in any module) gets
it too: an option shows its `metavar`, else its name in capitals; an argument shows its name
in capitals alone; a numeric bound is said in words. Parsing is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption


def _bound(param: Any) -> str | None:
    low, high = param.min, param.max
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"{low} to {high}"


def _upper(name: str | None) -> str:
    return (name or "value").upper()


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        desc = self.type_descriptor
        if desc.is_choice and desc.choices:
            return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
        return _upper(self.name)

    def _get_number_range_help_str(self) -> str | None:
        return None if self.count else _bound(self)


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else _upper(self.name)

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def _get_number_range_help_str(self) -> str | None:
        return _bound(self)


def _commands(command: Any) -> Iterator[Any]:
    yield command
    for sub in (getattr(command, "commands", None) or {}).values():
        yield from _commands(sub)


class HelpGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in _commands(self):
            for param in command.params:
                # Same state, a display of our own: typer builds these objects itself and has
                # no hook for their class.
                if type(param) is TyperOption:
                    param.__class__ = _Option
                elif type(param) is TyperArgument:
                    param.__class__ = _Argument
