"""The command line's shared parameter types and options (`cli`): paths, `--protocol`, and what
`score` and `pool` say about strangers' programs."""

from __future__ import annotations

import math
from pathlib import Path

import click

PathArg = click.Path(path_type=Path)
ExistingPath = click.Path(exists=True, path_type=Path)

protocol_option = click.option(
    "--protocol", "protocol_name", default=None, metavar="NAME|FILE",
    help="Protocol name (protocols/<name>.toml) or a TOML file. Default: the one recorded in the input, else synth.",
)


class PositiveOrInf(click.ParamType):
    """A positive finite number, or `inf` (no limit); never NaN, zero or negative."""

    name = "number"

    def __init__(self, unit: str):
        self.unit = unit

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number) or number <= 0:
            self.fail(f"{value!r} is not a positive number of {self.unit}, or inf for no limit", param, ctx)
        return number


# What `score` and `pool` say about strangers' programs (TorchScript / torch.export files).
PROGRAM_OPTIONS = (
    click.option("--program-timeout", type=PositiveOrInf("seconds"), default=None, metavar="SECONDS",
                 help="Time limit for TorchScript / torch.export programs: per batch, and for loading and "
                      "probing one (default 120; inf: no limit)."),
    click.option("--program-memory", type=PositiveOrInf("GiB"), default=None, metavar="GIB",
                 help="Memory a program may use on top of torch's own (default: 3/4 of the RAM, between 4 and "
                      "16 GiB; inf: no limit)."),
    click.option("--unconfined", is_flag=True,
                 help="Run programs even without the operating system's confinement (Landlock, Linux 5.13+): "
                      "only the operator allowlist and a separate process then stand between them and your files."),
)


def with_program_options(fn):
    """The three program options on a command (`score`, `pool`)."""
    for option in reversed(PROGRAM_OPTIONS):
        fn = option(fn)
    return fn
