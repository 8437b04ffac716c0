"""Click options built from the settings models: one option per field, with its type, range
check, help and default taken from pipeline.settings, so the CLI cannot drift from them.

Every option defaults to None ("not given"), so that the settings model, not click, fills in
defaults and presets, and records which values the user chose.
"""

from __future__ import annotations

import typing

import click

from pipeline.settings import Settings


def _click_type(annotation):
    """The click type of a field: Choice for Literals, INT/FLOAT, else text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in args])
    if args:  # Optional[X]
        return _click_type(args[0])
    return {int: click.INT, float: click.FLOAT}.get(annotation, click.STRING)


def _is_flag(annotation) -> bool:
    return annotation is bool or "StrictBool" in str(annotation) or annotation == "bool"


def settings_options(model: type[Settings], exclude: tuple[str, ...] = ()):
    """Decorator adding `--name` for each field of `model` (underscores become dashes)."""
    def decorate(command):
        for name, field in reversed(list(model.model_fields.items())):
            if name in exclude:
                continue
            help_text = field.description or ""
            if field.default not in (None, False) and "[default:" not in help_text:
                help_text += f"  [default: {field.default}]"
            option = f"--{name.replace('_', '-')}"
            if _is_flag(field.annotation):
                command = click.option(option, name, is_flag=True, default=None,
                                       help=help_text)(command)
            else:
                command = click.option(option, name, type=_click_type(field.annotation),
                                       default=None, help=help_text)(command)
        return command
    return decorate


def pop_settings(model: type[Settings], kwargs: dict) -> dict:
    """Take the given (non-None) values of `model`'s fields out of a command's kwargs."""
    return {name: value for name in model.model_fields
            if (value := kwargs.pop(name, None)) is not None}
