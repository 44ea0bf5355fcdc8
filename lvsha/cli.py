"""Command line: check and render a cluster without touching any host, and run the lab.

    lvsha validate inventory.py        # or: python3 -m lvsha ...
    lvsha render inventory.py out/
    lvsha diagram inventory.py -o cluster.svg
    lvsha status inventory.py          # day 2: the live pair (also drain, undrain, failover)
    lvsha lab run                      # the whole lab: up, deploy, test, report, down
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lvsha import __version__
from lvsha.loader import InventoryError, load_cluster
from lvsha.render import all_files, write_tree


def _load(inventory: str):
    try:
        return load_cluster(inventory)
    except InventoryError as error:
        raise click.ClickException(str(error)) from None


@click.group()
@click.version_option(__version__, prog_name="lvsha")
def main() -> None:
    """Deploy and check an LVS-NAT load balancer pair from one cluster model."""


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
def validate(inventory: str) -> None:
    """Check INVENTORY's cluster model; exit 2 naming every problem."""
    cluster = _load(inventory)
    files = all_files(cluster)
    click.echo(
        f"{inventory}: cluster {cluster.name!r} is valid: {len(cluster.balancers)} balancers, "
        f"{len(cluster.sites)} sites, {len(cluster.web_hosts)} web hosts, "
        f"{len(cluster.floating_ips())} floating addresses, {sum(map(len, files.values()))} managed files"
    )


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
def render(inventory: str, out: str) -> None:
    """Write every host's managed files under OUT/HOST/... for review."""
    cluster = _load(inventory)
    for path in write_tree(cluster, Path(out)):
        click.echo(str(path))


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the picture's file: FILE.svg (or .png, .pdf, .dot)")
@click.option("--live", "live_", is_flag=True,
              help="mark who holds the floating addresses now and each real server's state (reads what `status` reads)")
@click.option("--sudo", is_flag=True, help="with --live: run the balancers' commands with sudo (non-root SSH user)")
def diagram(inventory: str, output: str, live_: bool, sudo: bool) -> None:
    """Draw INVENTORY's cluster (networks, balancers, floating addresses, sites, web hosts) into OUTPUT."""
    from lvsha import diagram as picture

    try:
        picture.target(output)  # a bad path fails before anything is read
        if live_:
            from lvsha.day2 import load_pair, read_status

            pair = load_pair(inventory, sudo).connect()
            cluster, status = pair.cluster, read_status(pair)
        else:
            cluster, status = picture.load(inventory), None
        click.echo(str(picture.write(cluster, output, status)))
    except (InventoryError, picture.DiagramError) as error:
        raise click.ClickException(str(error)) from None


def _mount_day2() -> None:
    from lvsha.day2 import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


def _mount_lab() -> None:
    from lvsha.lab.cli import lab, set_cluster_loader
    from lvsha.lab.model import topology_cluster
    from lvsha.lab.run import add_commands

    set_cluster_loader(topology_cluster)
    add_commands(lab)
    main.add_command(lab)


_mount_day2()
_mount_lab()

if __name__ == "__main__":
    sys.exit(main())
