"""Tests of the lab layer (lvsha.lab).

The fast tests check what the lab derives from the model (VMs, NICs, segments,
client address, QEMU command lines) without starting anything. The smoke test
boots the real lab (several minutes under TCG, root needed) and only runs with
LVSHA_LAB_SMOKE=1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace as NS

import netaddr
import pytest

from lvsha.lab import LabError, host_apt_mirrors, image, network, stock, vm
from lvsha.lab import lab as lablib

REPO = Path(__file__).resolve().parents[2]


def stand_in_cluster(used_as_property: bool = False, networks_as_str: bool = False):
    """A cluster shaped like the reference one (2 balancers, 3 web hosts)."""
    used = {netaddr.IPAddress(f"10.0.0.{i}") for i in (1, 3, 5, 21, 22, 23, 253, 254)}
    used |= {netaddr.IPAddress(f"192.168.0.{i}") for i in [*range(1, 10), 251, 252, 254]}
    ext, internal = "10.0.0.0/24", "192.168.0.0/24"
    return NS(
        balancers=(NS(name="balancer1", external_interface="eth0", internal_interface="eth1"),
                   NS(name="balancer2", external_interface="eth0", internal_interface="eth1")),
        web_hosts=(NS(name="hostA", interface="eth0"), NS(name="hostB", interface="eth0"),
                   NS(name="hostC", interface="eth0")),
        external_network=ext if networks_as_str else netaddr.IPNetwork(ext),
        internal_network=internal if networks_as_str else netaddr.IPNetwork(internal),
        used_addresses=used if used_as_property else (lambda: set(used)),
        engine="heartbeat", virtual_servers=lambda: [NS(), NS(), NS()], ldirectord_forks=lambda: False,
    )


@pytest.mark.parametrize("prop,as_str", [(False, False), (True, True)])
def test_client_address_is_highest_free_external_host(prop, as_str):
    c = stand_in_cluster(prop, as_str)
    assert str(network.client_address(c)) == "10.0.0.252/24"


def test_client_address_skips_used():
    c = stand_in_cluster()
    base = c.used_addresses()
    c.used_addresses = lambda: base | {netaddr.IPAddress("10.0.0.252")}
    assert str(network.client_address(c)) == "10.0.0.251/24"


def test_specs_follow_the_model(tmp_path):
    specs = vm.make_specs(stand_in_cluster(), tmp_path, [2201, 2202, 2203, 2204, 2205])
    by = {s["name"]: s for s in specs}
    assert list(by) == ["balancer1", "balancer2", "hostA", "hostB", "hostC"]
    assert [(n["ifname"], n["segment"]) for n in by["balancer1"]["nics"]] == [("eth0", "external"), ("eth1", "internal")]
    assert [(n["ifname"], n["segment"]) for n in by["hostB"]["nics"]] == [("eth0", "internal")]
    assert by["balancer2"]["management_interface"] == "eth2"
    assert by["hostC"]["management_interface"] == "eth1"
    macs = [n["mac"] for s in specs for n in s["nics"]]
    taps = [n["tap"] for s in specs for n in s["nics"]]
    assert len(set(macs)) == len(macs) and vm.MGMT_MAC not in macs
    assert len(set(taps)) == len(taps) and all(len(t) <= 15 for t in taps)


def test_balancers_are_given_memory_for_each_ldirectord_checker_only_where_ldirectord_forks(tmp_path, reference):
    from dataclasses import replace

    from lvsha.lab.scale import scale_cluster
    ports = list(range(2201, 2206))
    def memory(cluster):
        return {s["name"]: s["memory"] for s in vm.make_specs(cluster, tmp_path, ports)}
    assert not reference.ldirectord_forks()
    assert set(memory(reference).values()) == {vm.BALANCER_MEMORY, vm.WEB_MEMORY}
    scaled = scale_cluster(reference, 250)
    assert scaled.ldirectord_forks()
    by = memory(scaled)
    for b in scaled.balancers:
        assert by[b.name] == vm.BALANCER_MEMORY + vm.LDIRECTORD_CHECKER_MEMORY * len(scaled.virtual_servers())
    assert {by[h.name] for h in scaled.web_hosts} == {vm.WEB_MEMORY}
    assert set(memory(replace(scaled, engine="keepalived")).values()) == {vm.BALANCER_MEMORY, vm.WEB_MEMORY}


def test_the_backup_balancer_and_the_last_web_host_boot_as_a_stock_install(tmp_path, reference):
    client = network.client_address(reference)
    stocks = stock.stock_installs(reference, client)
    backup, last = reference.peer(reference.master), reference.web_hosts[-1]
    assert list(stocks) == [backup.name, last.name]
    assert stocks[backup.name]["cidr"] == f"{backup.external_ip}/{reference.external_net.prefixlen}"
    assert stocks[backup.name]["gateway"] == str(reference.external_ping_nodes()[0])  # the model's upstream router
    assert stocks[last.name]["gateway"] == str(reference.master.internal_ip)  # not the floating gateway
    assert f"iface {last.interface} inet static" in stocks[last.name]["interfaces"]
    ports = list(range(2201, 2201 + len(reference.balancers) + len(reference.web_hosts)))
    specs = {s["name"]: s for s in vm.make_specs(reference, tmp_path, ports, stocks)}
    img = {"disk": "/x/disk.raw", "format": "raw", "kernel": "/x/vmlinuz", "initrd": "/x/initrd.img"}
    for name, spec in specs.items():
        argv = " ".join(vm.qemu_argv(spec, img, "tcg", 3142, "/x/keys", [7, 8]))
        assert ("name=opt/lvsha/interfaces" in argv) == (name in stocks), name
    assert specs[last.name]["stock_interfaces"] == stocks[last.name]["interfaces"]


def test_swapped_interfaces_swap_segments(tmp_path):
    c = stand_in_cluster()
    c.balancers = (NS(name="b1", external_interface="eth1", internal_interface="eth0"),) + c.balancers[1:]
    spec = vm.make_specs(c, tmp_path, list(range(2201, 2206)))[0]
    assert [(n["ifname"], n["segment"]) for n in spec["nics"]] == [("eth0", "internal"), ("eth1", "external")]


def test_qemu_argv_nic_order_and_isolation(tmp_path):
    spec = vm.make_specs(stand_in_cluster(), tmp_path, list(range(2201, 2206)))[0]
    img = {"disk": "/x/disk.raw", "format": "raw", "kernel": "/x/vmlinuz", "initrd": "/x/initrd.img"}
    argv = vm.qemu_argv(spec, img, "tcg", 3142, "/x/keys", [7, 8])
    joined = " ".join(argv)
    assert "systemd.hostname=balancer1" in joined and "net.ifnames=0" in joined
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device" and "virtio-net" in argv[i + 1]]
    assert [d.split("addr=")[1] for d in devices] == ["0x10", "0x11", "0x12"]
    assert "netdev=mgmt" in devices[-1] and vm.MGMT_MAC in devices[-1]
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs[0] == "tap,id=n0,fd=7" and netdevs[1] == "tap,id=n1,fd=8"
    assert "restrict=on" in netdevs[2] and "hostfwd=tcp:127.0.0.1:2201-" in netdevs[2]
    assert "TCP:127.0.0.1:3142" in netdevs[2]


def test_mgmt_mac_matches_guest_networkd_file():
    text = (REPO / "files/lab/10-lvsha-mgmt.network").read_text()
    assert f"MACAddress={vm.MGMT_MAC}" in text
    assert "Gateway" not in text and "DHCP=no" in text


def test_guest_files_exist_and_recipe_key_tracks_packages(monkeypatch):
    for name in image.GUEST_FILES:
        assert (image.guest_files_dir() / name).is_file()
    if not os.path.exists("/etc/apt"):
        pytest.skip("no apt config on this machine")
    k1 = image.recipe_key()
    assert k1 == image.recipe_key()
    monkeypatch.setattr(image, "PACKAGES", image.PACKAGES + ("less",))
    assert image.recipe_key() != k1


def _other_apt(rootfs, proxy_port):
    return ["chroot", rootfs, "apt-get", "-q", "-o", "Acquire::Retries=3"]


def test_recipe_key_tracks_the_package_list_step_and_its_apt_helpers(monkeypatch):
    """The image keeps the package lists it read (image._refresh_lists): a change to that
    step, or to the apt command it and the provisioned variants share, builds a new image."""
    if not os.path.exists("/etc/apt"):
        pytest.skip("no apt config on this machine")
    k1 = image.recipe_key()
    monkeypatch.setattr(image, "_apt", _other_apt)
    assert image.recipe_key() != k1


def test_each_release_has_its_own_image_and_an_unknown_one_is_named(monkeypatch):
    if not os.path.exists("/etc/apt"):
        pytest.skip("no apt config on this machine")
    assert image.recipe("12")["suite"] == "bookworm" and image.recipe("13")["suite"] == "trixie"
    assert image.recipe_key("12") != image.recipe_key("13")
    with pytest.raises(LabError, match=r"Debian release '14' is not one the lab builds \(choose one of: 12, 13\)"):
        image.recipe_key("14")
    with pytest.raises(LabError, match="'11'"):
        lablib.up(stand_in_cluster(), release="11")  # refused before anything starts


def test_a_new_image_replaces_the_older_one_of_its_release_only(tmp_path):
    def built(key, suite):
        (tmp_path / key).mkdir()
        (tmp_path / key / "recipe.json").write_text(f'{{"suite": "{suite}"}}')

    built("old12", "bookworm")
    built("new12", "bookworm")
    built("only13", "trixie")
    (tmp_path / "x.tmp-999999999").mkdir()  # a dead build's leftovers
    image._prune_old_images(tmp_path, keep="new12")
    assert sorted(d.name for d in tmp_path.iterdir()) == ["new12", "only13"]


def test_no_mirror_host_in_repo_files():
    try:
        mirrors = host_apt_mirrors()
    except Exception:
        pytest.skip("no apt mirror configured")
    hosts = {u.split("://", 1)[1].split("/", 1)[0] for u in mirrors.values()}
    for path in list((REPO / "lvsha/lab").glob("*.py")) + list((REPO / "files/lab").iterdir()):
        text = path.read_text()
        for h in hosts:
            assert h not in text, f"{path} names the mirror host"


def test_down_without_lab_is_a_noop(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSHA_LAB_DIR", str(tmp_path / "nolab"))
    assert lablib.down(quiet=True) == []
    assert lablib.down(quiet=True) == []
    assert lablib.status()["status"] == "down"


@pytest.mark.skipif(os.environ.get("LVSHA_LAB_SMOKE") != "1", reason="boots real VMs; set LVSHA_LAB_SMOKE=1")
def test_smoke_up_check_down():
    cluster = stand_in_cluster()
    state = lablib.up(cluster)
    try:
        for name in state["hosts"]:
            out = subprocess.run(lablib.ssh_argv(name) + ["uname -n; ip route show default | wc -l"],
                                 capture_output=True, text=True, timeout=60)
            assert out.stdout.split() == [name, "0"], out
        cp = lablib.client_exec(["ip", "-br", "addr", "show", "eth0"], timeout=10)
        assert "10.0.0.252/24" in cp.stdout
    finally:
        assert lablib.down() == []
    assert not network.netns_exists(network.LAB_NETNS)


def test_shared_connection_keeps_the_lab_key_and_host_key_checking():
    from lvsha.lab import vm
    argv = vm.ssh_base("/state/id_ed25519", 2201, "/state/known_hosts", control_path="/state/mux-balancer1")
    assert argv[:5] == ["ssh", "-i", "/state/id_ed25519", "-p", "2201"] and argv[-1] == "root@127.0.0.1"
    options = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
    assert options["StrictHostKeyChecking"] == "yes" and options["UserKnownHostsFile"] == "/state/known_hosts"
    assert options["ControlMaster"] == "auto" and options["ControlPath"] == "/state/mux-balancer1"
    assert "ControlPath" not in " ".join(vm.ssh_base("/state/id_ed25519", 2201))  # boot probes log in afresh


def test_a_long_image_step_says_what_it_still_waits_for(tmp_path):
    """A silent build step (debootstrap, a chroot apt-get) reports itself with its log's
    last line while it runs."""
    said = []
    log = tmp_path / "debootstrap.log"
    image._run_group(["sh", "-c", "echo 'I: Retrieving Packages'; sleep 1"], timeout=30, env=dict(os.environ),
                     log=log, progress=said.append, quiet=0.2)
    assert said and all(line.startswith("image: still running debootstrap (") for line in said), said
    assert said[-1].endswith("last logged: I: Retrieving Packages")


def test_an_image_step_past_its_timeout_is_ended_with_its_log(tmp_path):
    log = tmp_path / "provision-web-install.log"
    with pytest.raises(LabError, match=r"provision-web-install did not finish within 0.5 s.*\n.*Unpacking nginx"):
        image._run_group(["sh", "-c", "echo 'Unpacking nginx'; exec sleep 30"], timeout=0.5, env=dict(os.environ),
                         log=log, quiet=0.2)


def test_a_lab_another_process_is_bringing_up_is_refused_not_torn_down(tmp_path, monkeypatch, reference):
    """Its QEMUs may not run yet (no pids to see): the state names the process bringing it up."""
    import json
    import sys

    monkeypatch.setenv("LVSHA_LAB_DIR", str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lablib.state_file().write_text(json.dumps({"version": 1, "status": "starting", "owner_pid": owner.pid,
                                                   "hosts": {}, "vms": {}}))
        downs = []
        monkeypatch.setattr(lablib, "down", lambda quiet=False: downs.append(quiet) or [])
        with pytest.raises(LabError, match=f"a lab is coming up \\(process {owner.pid}"):
            lablib.up(reference)
        assert downs == []
    finally:
        owner.kill()
        owner.wait()


def test_no_name_of_the_lab_package_is_also_one_of_its_modules():
    """A function of lvsha/lab/__init__.py named as a module of the package (as `run` was,
    beside lvsha/lab/run.py) is replaced by that module once anything imports it, and every
    `from . import <name>` after that gets the module: the lab then failed to come up
    depending on which test file pytest collected first."""
    import pkgutil

    import lvsha.lab as package

    source = (REPO / "lvsha" / "lab" / "__init__.py").read_text()
    defined = {line.split("(")[0].split()[1] for line in source.splitlines()
               if line.startswith(("def ", "class "))}
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert not defined & modules, f"lvsha/lab/__init__.py defines {sorted(defined & modules)}, also modules of lvsha.lab"
