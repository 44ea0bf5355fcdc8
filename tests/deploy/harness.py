"""Run pyinfra deploy functions against fixed facts, without connecting.

`plan()` prepares a deploy for one host through pyinfra's API, then simulates
execution in order: each operation's command generator runs against the
fixed facts, and `_if` conditions see which earlier operations would change.
An unknown fact fails the test loudly, naming it. `prepare_run()` prepares a
deploy file for several hosts the way the `pyinfra` command does, to see which
hosts share which operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pyinfra
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_cli.util import load_deploy_file

from lvsha import render
from tasks.roles import cluster_host


@dataclass
class PlannedOp:
    path: str  # "LVS director | heartbeat | Write /etc/ha.d/ha.cf"
    commands: list[str]
    serial: bool = False  # pyinfra runs it one host at a time (_serial)
    uploads: dict = field(default_factory=dict)  # {remote path: the text uploaded there}

    @property
    def name(self) -> str:
        return self.path.rsplit(" | ", 1)[-1]

    @property
    def changes(self) -> bool:
        return bool(self.commands)


class UnknownFact(AssertionError):
    pass


def plan(deploy_func, *args, host_name: str, facts, data: dict | None = None,
         others: tuple[str, ...] | dict = ()) -> list[PlannedOp]:
    """Operations (with the commands each would run) of `deploy_func(*args)` on a
    host whose facts are answered by `facts(fact_name, kwargs)`; `others` are
    the other hosts in the run (planned for nothing): names, or {name: facts}
    for those whose facts the deploy reads too (a balancer's peer). One without
    facts of its own answers as the planned host does."""
    names = [host_name, *(n for n in others if n != host_name)]
    answers = {name: facts for name in names} | (dict(others) if isinstance(others, dict) else {})
    inventory = Inventory((names, {}), **{"all_hosts": ([(n, data or {} if n == host_name else {}) for n in names], {})})
    state = State(inventory, Config())
    for name in names:  # connected: in the run
        state.activate_host(inventory.get_host(name))
    host = inventory.get_host(host_name)

    def get_fact(self, cls, *fact_args, **kwargs):
        return answers[self.name](cls.__name__, kwargs)

    simulated: dict[str, bool] = {}
    with mock.patch.object(Host, "get_fact", get_fact), \
         mock.patch.object(OperationMeta, "did_change", lambda self: simulated.get(self._hash, False)):
        add_deploy(state, deploy_func, *args, host=host)
        planned = []
        for op_hash in state.get_op_order():
            op_data = state.get_op_data_for_host(host, op_hash)
            name = sorted(state.get_op_meta(op_hash).names)[0]
            condition = op_data.global_arguments.get("_if")
            conditions = condition if isinstance(condition, list) else [condition] if condition else []
            if not all(c() for c in conditions):
                commands = []
            else:
                with ctx_state.use(state), ctx_host.use(host):
                    generated = list(op_data.command_generator())
                commands = [_text(c) for c in generated]
            uploads = {c.dest: _uploaded(c) for c in (generated if commands else []) if isinstance(c, FileUploadCommand)}
            simulated[op_hash] = bool(commands)
            planned.append(PlannedOp(name, commands, bool(state.get_op_meta(op_hash).global_arguments["_serial"]),
                                     uploads))
    return planned


def _uploaded(command) -> str:
    """The text a FileUploadCommand sends (a StringIO or a local file's path)."""
    src = command.src
    if hasattr(src, "getvalue"):
        return src.getvalue()
    with open(src) as f:
        return f.read()


def _text(command) -> str:
    get_raw = getattr(command, "get_raw_value", None)
    if get_raw:
        return get_raw()
    staged = getattr(command, "remote_temp_filename", None)  # where a sudo upload lands first
    return repr(command) + (f" via {staged}" if staged else "")


def changing(ops: list[PlannedOp]) -> dict[str, list[str]]:
    return {op.name: op.commands for op in ops if op.changes}


def prepare_run(deploy_file: Path, machines: dict, data: dict) -> list[tuple[list[str], list[str]]]:
    """(operation names, hosts it runs on) of each operation, in order, when the
    `pyinfra` command prepares `deploy_file` for `machines` ({name: facts object
    with `.fact(name, kwargs)`}), every host with host data `data`. As on the
    command line, pyinfra tells operations apart by the lines of the calls that
    made them: one operation with several hosts runs on all of them at once."""
    names = list(machines)
    inventory = Inventory((names, {}), all_hosts=([(n, data) for n in names], {}))
    state = State(inventory, Config())
    for name in names:
        state.activate_host(inventory.get_host(name))
    state.set_stage(StateStage.Prepare)

    def get_fact(self, cls, *fact_args, **kwargs):
        return machines[self.name].fact(cls.__name__, kwargs)

    with mock.patch.object(pyinfra, "is_cli", True), mock.patch.object(Host, "get_fact", get_fact), \
         ctx_state.use(state):
        load_deploy_file(state, str(deploy_file))
    return [(sorted(state.get_op_meta(op_hash).names), [h.name for h in inventory if op_hash in h.op_hash_order])
            for op_hash in state.get_op_order()]


# ---- the heartbeat engine's operations, named as tasks/heartbeat.py names them -------------

LDIRECTORD_RELOAD = "Reload ldirectord for its new configuration"
LDIRECTORD_CF_OP = f"Check and write {render.LDIRECTORD_CF}"
OLD_AUTHKEYS = "auth 1\n1 sha1 the-old-secret-0123456789\n"  # another secret than the model's: a rotation


def reload_and_wait(cluster) -> list[str]:
    """ldirectord's reload, then the wait for its table, bounded as the model allows
    (render.ipvs_takeover_timeout: its start pass where ldirectord forks)."""
    return ["systemctl reload ldirectord.service",
            f"{render.IPVS_READY_SCRIPT} --strict --reloaded {render.ipvs_takeover_timeout(cluster)}"]


def heartbeat_restart(cluster, name: str) -> str:
    """heartbeat's restart on balancer `name` (the backup's first)."""
    turn = [b.name for b in reversed(cluster.balancers)].index(name) + 1
    return f"Restart heartbeat for its new configuration ({turn} of 2: {name})"


def ipvs_wait(cluster, name: str) -> str:
    """The wait, on `name`'s peer, for its IPVS before `name`'s restart."""
    turn = [b.name for b in reversed(cluster.balancers)].index(name) + 1
    peer = cluster.peer(cluster.balancer(name)).name
    return f"IPVS on {peer} holds the model's virtual services before heartbeat restarts on {name} ({turn} of 2)"


def plan_balancer(cluster, machines: dict, name: str) -> list[PlannedOp]:
    """The operations on balancer `name`, each host's facts from `machines` ({name: Machine})."""
    others = {n: m.fact for n, m in machines.items() if n != name}
    return plan(cluster_host, cluster, name, host_name=name, facts=machines[name].fact, others=others)
