"""click group `lab`: up, down, status, vm-stop, vm-start, client-exec.

Mount it into the main CLI with `main.add_command(lab)`. `lab up` needs the
cluster model; it takes it, in this order, from:
  --cluster module:attr (or env LVSHA_LAB_CLUSTER), attr an object or zero-arg callable;
  ctx.obj["cluster"] set by the parent CLI (an object or a zero-arg callable);
  set_cluster_loader(fn) called by the parent CLI at import time.
"""

from __future__ import annotations

import importlib
import json
import sys

import click

from . import LabError, image
from . import lab as _lab

_cluster_loader = None


def set_cluster_loader(fn) -> None:
    """Let the main CLI say how to get the cluster model (a zero-arg callable)."""
    global _cluster_loader
    _cluster_loader = fn


def _resolve_cluster(ctx: click.Context, ref: str | None):
    obj = None
    if ref:
        mod, _, attr = ref.partition(":")
        if not attr:
            raise click.UsageError("--cluster must be module:attr")
        obj = getattr(importlib.import_module(mod), attr)
    elif isinstance(ctx.obj, dict) and ctx.obj.get("cluster") is not None:
        obj = ctx.obj["cluster"]
    elif _cluster_loader is not None:
        obj = _cluster_loader
    else:
        raise click.UsageError("no cluster model: pass --cluster module:attr, or mount this group "
                               "in a CLI that sets ctx.obj['cluster'] or calls set_cluster_loader()")
    return obj() if callable(obj) and not hasattr(obj, "balancers") else obj


def _fail(e: Exception):
    click.echo(f"lab: {e}", err=True)
    sys.exit(1)


@click.group("lab")
def lab():
    """Real Debian 12 or 13 VMs under QEMU on this machine, to deploy and test against."""


@lab.command()
@click.option("--cluster", "cluster_ref", envvar="LVSHA_LAB_CLUSTER", default=None,
              help="module:attr giving the cluster model (object or zero-arg callable)")
@click.option("--provisioned", is_flag=True,
              help="start the VMs with their role's packages installed (a quicker first deploy)")
@click.option("--release", type=click.Choice(sorted(image.RELEASES)), envvar=image.RELEASE_ENV,
              default=image.DEFAULT_RELEASE, show_default=True, help="the guests' Debian release")
@click.pass_context
def up(ctx, cluster_ref, provisioned, release):
    """Build/reuse the image, start proxy, networks and one VM per host; wait for SSH."""
    cluster = _resolve_cluster(ctx, cluster_ref)
    try:
        state = _lab.up(cluster, progress=lambda line: click.echo(line), provisioned=provisioned, release=release)
    except LabError as e:
        _fail(e)
    except _lab.Terminated as e:  # SIGTERM/SIGHUP: already torn down by up()
        click.echo(f"lab: interrupted by {e}; torn down", err=True)
        sys.exit(143)
    click.echo(f"state: {_lab.state_file()}")
    click.echo(f"ssh:   ssh -F {state['ssh_config']} {next(iter(state['hosts']))}")


@lab.command()
def down():
    """Remove every VM, tap, bridge, netns and the state dir (keeps the cache). Idempotent."""
    problems = _lab.down()
    if problems:
        sys.exit(1)


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(as_json):
    """Show whether the lab and each VM are running."""
    st = _lab.status()
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    click.echo(f"lab: {st['status']} ({st['state_dir']})")
    if st["status"] == "down":
        return
    click.echo(f"accel: {st.get('accel')}  proxy: {'running' if st['proxy_running'] else 'STOPPED'}  "
               f"client: {st['client']}")
    for ns, ok in st["netns"].items():
        click.echo(f"netns {ns}: {'present' if ok else 'MISSING'}")
    for name, h in st["hosts"].items():
        click.echo(f"  {name:12} {'running' if h['running'] else 'stopped':8} ssh 127.0.0.1:{h['ssh_port']} "
                   f"mgmt {h['management_interface']} pid {h['pid']}")


@lab.command("vm-stop")
@click.argument("name")
def vm_stop(name):
    """Hard power-off of one VM."""
    try:
        _lab.vm_stop(name)
    except LabError as e:
        _fail(e)


@lab.command("vm-start")
@click.argument("name")
def vm_start(name):
    """Boot one VM again (same disk, NICs, port) and wait for SSH."""
    try:
        _lab.vm_start(name)
    except LabError as e:
        _fail(e)


@lab.command("client-exec", context_settings={"ignore_unknown_options": True})
@click.option("--timeout", default=60.0, show_default=True, help="seconds before the command is killed")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def client_exec(timeout, cmd):
    """Run CMD in the client netns: `lab client-exec -- ping -c1 10.0.0.1`."""
    try:
        cp = _lab.client_exec(list(cmd), timeout=timeout)
    except LabError as e:
        _fail(e)
    sys.stdout.write(cp.stdout)
    sys.stderr.write(cp.stderr)
    sys.exit(cp.returncode)


if __name__ == "__main__":  # python -m lvsha.lab.cli ...
    lab()
