"""Click commands of agi_plugin (placeholder until the package's commands land)."""

import click


@click.command()
def agi() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')

