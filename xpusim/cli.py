"""The ``xpusim`` command line. Only this layer parses arguments, prints and writes user files.

Sub-commands live in ``xpusim/commands/`` (one module per group); this module wires them and turns
every ``XpusimError`` into one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from workloads.errors import XpusimError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except XpusimError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="xpusim")
def cli() -> None:
    """xpusim: simulate and plan LLM serving and training on GPUs, NPUs, PIM and networks."""


@cli.group()
def simulate() -> None:
    """Simulate a workload on hardware."""


@cli.group()
def validate() -> None:
    """Compare simulations with measured runs (n / wape / mape)."""


@cli.group()
def catalog() -> None:
    """List the built-in hardware and models."""


def _register() -> None:
    from xpusim.commands import (
        catalog_cmd,
        collective_cmd,
        demo_cmd,
        ops_cmd,
        plan_cmd,
        serve_cmd,
        split_cmd,
        torch_cmd,
        train_cmd,
    )

    catalog_cmd.register(catalog)
    ops_cmd.register(validate)
    serve_cmd.register(simulate, validate)
    split_cmd.register(simulate)
    collective_cmd.register(simulate, validate)
    torch_cmd.register(validate)
    train_cmd.register(simulate)
    demo_cmd.register(cli)
    plan_cmd.register(cli)


_register()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except XpusimError as exc:  # raised outside a command invocation
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
