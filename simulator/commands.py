"""Click commands of simulator (placeholder until the package's commands land)."""

import click


@click.command()
def sandbox() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')


@click.command()
def simulate() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')

