"""Click commands of ami_listener (placeholder until the package's commands land)."""

import click


@click.command()
def listen() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')

