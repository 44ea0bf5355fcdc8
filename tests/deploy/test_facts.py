"""Reading facts: one command for a role's facts, kept until a command runs."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from unittest import mock

import pytest
from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import StateOperationHostData, StateStage
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.server import Hostname, Sysctl

from tasks.facts import (FactBundle, FactRequest, IfupdownFiles, LoadedModules, ManagedFiles, OsRelease, UnitStates,
                         read, read_together)


class Lines(FactBase):
    default = list

    def command(self, text):
        return f"printf %s {shlex.quote(text)}"

    def process(self, output):
        return list(output)


class Fails(FactBase):
    def command(self):
        return "echo partial; exit 3"


class NeedsMissingProgram(FactBase):
    default = dict

    def command(self):
        return "no-such-program-lvsha --list"

    def requires_command(self):
        return "no-such-program-lvsha"


def _run_bundle(requests):
    """FactBundle's command through sh, its output split into lines as pyinfra's connectors do."""
    bundle = FactBundle()
    command = bundle.command(requests=requests)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return bundle.process(result.stdout.splitlines())


def test_a_bundle_reads_each_fact_as_its_own_command_would(tmp_path):
    (tmp_path / "conf").write_text("x = 1\n")
    os.chmod(tmp_path / "conf", 0o640)
    (tmp_path / "enabled").symlink_to("/etc/some/target")
    requests = [
        FactRequest.of(Hostname),
        FactRequest.of(Sysctl, keys=["kernel.ostype", "net.no.such.key", "kernel.pid_max"]),
        FactRequest.of(LoadedModules),
        FactRequest.of(Lines, text="a\nb"),  # no newline at the end
        FactRequest.of(Lines, text="c\n\nd\n"),
        FactRequest.of(Lines, text=""),
        FactRequest.of(ManagedFiles, directories=[str(tmp_path)]),
    ]
    values = _run_bundle(requests)
    assert values[requests[0]] == os.uname().nodename
    with open("/proc/sys/kernel/pid_max") as pid_max:
        assert values[requests[1]] == {"kernel.ostype": "Linux", "kernel.pid_max": int(pid_max.read())}
    assert os.listdir("/sys/module") and values[requests[2]] == set(os.listdir("/sys/module"))
    requests = requests[:1] + requests[3:]
    assert values[requests[1]] == ["a", "b"]
    assert values[requests[2]] == ["c", "", "d"]
    assert values[requests[3]] == []  # no output: the fact's default
    managed = values[requests[4]]
    assert managed[str(tmp_path / "conf")]["sha1"] == hashlib.sha1(b"x = 1\n").hexdigest()
    assert managed[str(tmp_path / "conf")]["mode"] == "640"
    assert managed[str(tmp_path / "enabled")] == {"link": "/etc/some/target"}


def test_a_fact_that_fails_is_left_for_its_own_read_and_a_missing_program_gives_the_default():
    requests = [FactRequest.of(Fails), FactRequest.of(NeedsMissingProgram), FactRequest.of(Lines, text="ok")]
    values = _run_bundle(requests)
    assert requests[0] not in values
    assert values[requests[1]] == {}
    assert values[requests[2]] == ["ok"]


@pytest.fixture
def run_of_two_hosts():
    """A prepared run of two hosts whose facts are counted as they load."""
    inventory = Inventory((["one", "two"], {}))
    state = State(inventory, Config())
    for each in inventory:
        state.activate_host(each)
    loads = []

    def get_fact(self, cls, *args, **kwargs):
        loads.append((self.name, cls.__name__))
        if cls is FactBundle:
            return {request: f"{request!r} from the bundle" for request in kwargs["requests"]}
        return f"{cls.__name__} alone"

    with mock.patch.object(Host, "get_fact", get_fact), ctx_state.use(state):
        yield state, loads


def _on(state, name):
    return ctx_host.use(state.inventory.get_host(name))


def _command_ran(state, name):
    """An operation on host `name` ran a command."""
    host = state.inventory.get_host(name)
    op_hash = f"op{len(host.op_hash_order)}"
    meta = OperationMeta(op_hash, True)
    host.op_hash_order.append(op_hash)
    state.set_op_data_for_host(host, op_hash, StateOperationHostData(lambda: iter(()), {}, meta))
    meta.set_complete(True, [StringCommand("true")], CommandOutput([]))


def test_the_declared_facts_load_in_one_command_and_are_read_from_it_until_a_command_runs(run_of_two_hosts):
    state, loads = run_of_two_hosts
    declared, undeclared = FactRequest.of(Hostname), FactRequest.of(Lines, text="x")
    with _on(state, "one"):
        read_together([declared])
        assert read(declared) == f"{declared!r} from the bundle"
        assert read(declared) == read(declared)
        assert read(undeclared) == "Lines alone"
        read(undeclared)
    assert loads == [("one", "FactBundle"), ("one", "Lines")]

    _command_ran(state, "two")  # a change on the peer can change this host too (addresses)
    with _on(state, "one"):
        assert read(declared) == "Hostname alone"  # read again, alone: the bundle is for the unchanged host
        read(declared)
    assert loads[2:] == [("one", "Hostname")]


def test_a_run_that_asks_before_it_runs_reads_again_after_the_answer(run_of_two_hosts):
    state, loads = run_of_two_hosts
    declared = FactRequest.of(Hostname)
    with _on(state, "one"):
        read_together([declared])
        state.current_stage = StateStage.Prepare
        read(declared)
        state.current_stage = StateStage.Execute
        read(declared)
        assert loads == [("one", "FactBundle"), ("one", "FactBundle")]
        state.check_for_changes = False  # -y: no question, straight from preparing to running
        state.current_stage = StateStage.Prepare
        read(declared)
        state.current_stage = StateStage.Execute
        read(declared)
    assert loads[2:] == [("one", "FactBundle")]


def test_unit_states_read_like_pyinfras_status_and_enabled_facts():
    output = ["Id=heartbeat.service", "ActiveState=active", "SubState=running", "UnitFileState=enabled", "",
              "Id=nginx.service", "ActiveState=inactive", "SubState=dead", "UnitFileState=", "",
              "Id=systemd-networkd.service", "ActiveState=active", "SubState=exited", "UnitFileState=static"]
    assert UnitStates().process(output) == {
        "heartbeat.service": {"running": True, "enabled": True, "state": "running", "active": "active"},
        "nginx.service": {"running": False, "enabled": False, "state": "dead", "active": "inactive"},
        "systemd-networkd.service": {"running": True, "enabled": True, "state": "exited", "active": "active"},
    }
    # what a unit systemd will start again shows: not running, not dead either
    (restarting,) = UnitStates().process(["Id=keepalived.service", "ActiveState=activating", "SubState=auto-restart",
                                          "UnitFileState=disabled"]).values()
    assert restarting == {"running": False, "enabled": False, "state": "auto-restart", "active": "activating"}
    # a unit whose stop runs: systemd's generic word for it, whichever step of the stop
    (stopping,) = UnitStates().process(["Id=heartbeat.service", "ActiveState=deactivating", "SubState=stop-post",
                                        "UnitFileState=disabled"]).values()
    assert stopping == {"running": False, "enabled": False, "state": "stop-post", "active": "deactivating"}


def test_os_release_is_read_without_its_quotes():
    output = ['PRETTY_NAME="Debian GNU/Linux 13 (trixie)"', 'NAME="Debian GNU/Linux"', 'VERSION_ID="13"', "ID=debian"]
    assert OsRelease().process(output) == {"PRETTY_NAME": "Debian GNU/Linux 13 (trixie)", "NAME": "Debian GNU/Linux",
                                           "VERSION_ID": "13", "ID": "debian"}


def test_ifupdown_files_are_read_as_they_are(tmp_path):
    interfaces, sourced = tmp_path / "interfaces", tmp_path / "interfaces.d"
    sourced.mkdir()
    interfaces.write_text("source interfaces.d/*\n\nauto lo\niface lo inet loopback\n")
    (sourced / "eth0").write_text("iface eth0 inet static\n    address 10.0.0.2/24 \\\n  # x")  # no newline at the end
    with mock.patch("lvsha.ifupdown.INTERFACES", str(interfaces)), \
         mock.patch("lvsha.ifupdown.INTERFACES_D", str(sourced)):
        values = _run_bundle([FactRequest.of(IfupdownFiles)])
    assert values[FactRequest.of(IfupdownFiles)] == {
        str(interfaces): interfaces.read_text(),
        str(sourced / "eth0"): (sourced / "eth0").read_text() + "\n",
    }


def test_the_ssh_session_is_read_with_the_interface_the_kernel_routes_it_by():
    """SshConnection runs its own command in a shell here, with SSH_CONNECTION as sshd
    sets it, against the real `ip route get` (loopback: routed by lo)."""
    from tasks.facts import SshConnection

    fact = SshConnection()
    env = {**os.environ, "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22"}
    out = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True, env=env, check=True).stdout
    assert fact.process(out.splitlines()) == {"client": "127.0.0.1", "client_port": 50000, "server": "127.0.0.1",
                                              "server_port": 22, "route_interface": "lo"}
    out = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}, check=True).stdout
    assert fact.process(out.splitlines()) is None  # not over SSH (@local)


@pytest.mark.parametrize("running, active, sub, off", [
    (False, "inactive", "dead", True),
    (False, "failed", "failed", True),
    (True, "active", "running", False),
    (False, "activating", "auto-restart", False),                 # systemd 252: between two restarts
    (False, "inactive", "dead-before-auto-restart", False),       # systemd 254+: the same, a restart pending
    (False, "failed", "failed-before-auto-restart", False),
    (False, "deactivating", "stop-sigterm", False),               # its stop under way
])
def test_a_unit_is_off_only_when_stopped_with_no_restart_pending(running, active, sub, off):
    from tasks.facts import unit_off

    assert unit_off({"running": running, "enabled": False, "state": sub, "active": active}) is off
