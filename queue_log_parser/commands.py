"""Click commands of queue_log_parser (placeholder until the package's commands land)."""

import click


@click.command()
def ingest() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')


@click.command()
def tail() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')

