"""PLACEHOLDER: registers nothing yet."""

import click


def register(*groups: click.Group) -> None:
    return None
