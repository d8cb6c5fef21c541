"""Click commands of reports (placeholder until the package's commands land)."""

import click


@click.command()
def report() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')



@click.command()
def agents() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')


@click.command()
def facts() -> None:
    """Not built yet."""
    raise click.ClickException('not built yet')

