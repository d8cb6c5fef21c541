"""The `callkpi email` command (placeholder until it lands)."""

import click


@click.command()
def email() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')
