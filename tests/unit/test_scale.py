"""Hundreds of sites (issue 22): the scale model, and what its renderings must keep
within what heartbeat, iptables-restore and the kernel read (docs/scale.md)."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from netaddr import IPNetwork

from lvsha import render
from lvsha.lab.scale import (CHECK_RATE_ENV, DEFAULT_CHECK_RATE, DEFAULT_ENGINE, DEFAULT_SITES, ENGINE_ENV, SITES_ENV,
                              check_rate_from_environment, engine_from_environment,
                              scale_cluster, sites_from_environment)
from lvsha.loader import load_cluster
from lvsha.model import SERIAL_CHECK_SECONDS, Ldirectord
from lvsha.validate import ValidationError, problems, validate
from tests.unit.test_render import _iptables_restore

SITES = 250

# heartbeat 3.0.6's ResourceManager (heartbeat/lib/ResourceManager.in, ipres()) reads
# haresources through this pipeline: comments out, lines ending in a backslash joined
# to the next (backslash and newline removed), blanks squeezed, empty lines dropped.
RESOURCE_MANAGER_SED = [
    "sed", "-e", r"s%#.*%%", "-e", ":a", "-e", r"/\\$/N; s/\\\n//; ta", "-e", "s%$% %",
    "-e", "s%[\t ][\t ]*% %g", "-e", "/^[\t ]*$/ d", "-e", "s%^ %%",
]


@pytest.fixture(scope="module")
def scaled(reference):
    started = time.monotonic()
    cluster = validate(scale_cluster(reference, SITES))
    print(f"\n{SITES} sites: model and validation {time.monotonic() - started:.2f} s")
    return cluster


@pytest.fixture(scope="module")
def unsynced(scaled):
    return validate(replace(scaled, state_sync=replace(scaled.state_sync, enabled=False)))


def _balancer_file(cluster, path):
    (found,) = [f for f in render.balancer_files(cluster, cluster.master) if f.path == path]
    return found.content


# ---- the scale model ---------------------------------------------------------------

def test_the_scale_model_of_the_reference_sites_is_the_reference(reference):
    assert scale_cluster(reference, len(reference.sites)) == reference


def test_the_scale_model_keeps_every_host_and_address_and_widens_the_networks_only_as_needed(reference, scaled):
    assert len(scaled.sites) == SITES and scaled.sites[:3] == reference.sites
    assert scaled.balancers == reference.balancers
    assert [h.name for h in scaled.web_hosts] == [h.name for h in reference.web_hosts]
    for ours, theirs in zip(scaled.web_hosts, reference.web_hosts):
        assert len(ours.internal_ips) == SITES and ours.internal_ips[:3] == theirs.internal_ips
        assert (ours.mail_ip, ours.public_ip) == (theirs.mail_ip, theirs.public_ip)
    # 250 VIPs and the reference's other addresses need a /23; 750 real server addresses a /22
    assert scaled.external_net == IPNetwork("10.0.0.0/23") and scaled.internal_net == IPNetwork("192.168.0.0/22")
    assert scale_cluster(reference, 50).external_net == reference.external_net
    assert not problems(scale_cluster(reference, 1000))


def test_the_number_of_sites_comes_from_the_environment():
    assert sites_from_environment({}) == DEFAULT_SITES
    assert sites_from_environment({SITES_ENV: "50"}) == 50
    for bad in ("0", "many", "-3"):
        with pytest.raises(ValueError, match=SITES_ENV):
            sites_from_environment({SITES_ENV: bad})


def test_the_engine_comes_from_the_environment():
    assert engine_from_environment({}) == DEFAULT_ENGINE == "heartbeat"
    assert engine_from_environment({ENGINE_ENV: " keepalived "}) == "keepalived"
    for bad in ("vrrp", "Keepalived", "heartbeat,keepalived"):
        with pytest.raises(ValueError, match=f"{ENGINE_ENV} = {bad!r}: must be one of heartbeat, keepalived"):
            engine_from_environment({ENGINE_ENV: bad})


SCALE_INVENTORY = Path(__file__).resolve().parents[2] / "examples" / "scale" / "inventory.py"
KEEPALIVED_INVENTORY = SCALE_INVENTORY.parents[1] / "keepalived" / "inventory.py"


@pytest.fixture
def no_secret(monkeypatch):
    """No heartbeat secret anywhere: keepalived's models need none."""
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET", raising=False)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)


def test_the_scale_inventory_grows_each_engines_example(reference, monkeypatch, no_secret):
    """heartbeat's from the reference (its secret from the environment), keepalived's from
    examples/keepalived without any secret; at the example's own three sites, the example."""
    from tests.conftest import TEST_SECRET

    keepalived = load_cluster(KEEPALIVED_INVENTORY)
    monkeypatch.setenv(ENGINE_ENV, "keepalived")
    for sites in (3, SITES):
        monkeypatch.setenv(SITES_ENV, str(sites))
        assert load_cluster(SCALE_INVENTORY) == scale_cluster(keepalived, sites, DEFAULT_CHECK_RATE)
    assert load_cluster(SCALE_INVENTORY).engine == "keepalived" and keepalived.heartbeat.auth.secret is None
    monkeypatch.setenv(SITES_ENV, "3")
    assert load_cluster(SCALE_INVENTORY) == keepalived
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET", TEST_SECRET)
    for engine in ("heartbeat", ""):  # unset: heartbeat
        monkeypatch.setenv(ENGINE_ENV, engine)
        monkeypatch.setenv(SITES_ENV, str(SITES))
        assert load_cluster(SCALE_INVENTORY) == scale_cluster(reference, SITES, DEFAULT_CHECK_RATE)
        monkeypatch.setenv(SITES_ENV, "3")
        assert load_cluster(SCALE_INVENTORY) == reference


def test_a_wrong_engine_or_count_stops_the_scale_inventory_naming_the_variable(monkeypatch, capsys, no_secret):
    for variable, value in ((ENGINE_ENV, "vrrp"), (SITES_ENV, "many"), (CHECK_RATE_ENV, "fast")):
        monkeypatch.setenv(ENGINE_ENV, "keepalived")
        monkeypatch.setenv(SITES_ENV, "3")
        monkeypatch.setenv(variable, value)
        with pytest.raises(SystemExit) as stopped:
            load_cluster(SCALE_INVENTORY)
        assert stopped.value.code == 2
        assert f"{variable} = {value!r}" in capsys.readouterr().err


def test_every_host_renders_at_scale(scaled):
    started = time.monotonic()
    files = render.all_files(scaled)
    print(f"\n{SITES} sites: rendering every host's files {time.monotonic() - started:.2f} s")
    ldirectord = next(f for f in files[scaled.master.name] if f.path == render.LDIRECTORD_CF).content
    assert ldirectord.count("\nvirtual=") == SITES and ldirectord.count("\treal=") == SITES * len(scaled.web_hosts)
    for host in scaled.web_hosts:
        network = next(f for f in files[host.name] if f.path.startswith(render.NETWORKD_DIR)).content
        assert network.count("\nAddress=") == SITES


# ---- heartbeat: haresources --------------------------------------------------------

def _resource_manager_view(content: str, tmp_path: Path) -> list[str]:
    """haresources' lines as ResourceManager reads them (its own sed, run on the file)."""
    path = tmp_path / "haresources"
    path.write_text(content)
    joined = subprocess.run([*RESOURCE_MANAGER_SED, str(path)], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in joined.splitlines()]


@pytest.mark.parametrize("model", ["scaled", "unsynced"])
def test_haresources_is_written_in_pieces_that_resource_manager_joins_into_the_group_line(model, request, tmp_path):
    cluster = request.getfixturevalue(model)
    content = _balancer_file(cluster, render.HARESOURCES)
    resources = [resource for resource, _ in render.haresources_group(cluster)]
    (line,) = _resource_manager_view(content, tmp_path)
    assert line.split() == [cluster.master.name, *resources]
    # every address of the group, in order, none twice
    addresses = [a for r in resources if r.startswith(Path(render.FLOATING_IPS_SCRIPT).name) for a in r.split("::")[1:]]
    assert addresses == render.floating_ips_arguments(cluster)
    # heartbeat's config.c reads each physical line whole, checks the first
    # one's node, and skips the lines a backslash continues
    lines = [piece for piece in content.splitlines() if piece and not piece.startswith("#")]
    assert len(lines) > 1 and lines[0].split()[0] == cluster.master.name
    assert all(len(piece) <= render.HARESOURCES_WRAP for piece in lines)
    assert all(piece.endswith("\\") for piece in lines[:-1]) and not lines[-1].endswith("\\")


def test_the_group_key_stays_within_heartbeats_buffer_with_or_without_state_sync(scaled, unsynced):
    synced_group = render.haresources_group(scaled)
    assert synced_group[0][0] == Path(render.CONNTRACKD_SCRIPT).name
    assert len(synced_group) == 2  # the addresses in one resource: the key is conntrackd's
    group = render.haresources_group(unsynced)  # the first floating resource is the key
    assert all(len(resource) <= render.GROUP_KEY_MAX for resource, _ in group)


def test_without_state_sync_too_many_addresses_for_one_key_are_split_in_resources(reference):
    many = scale_cluster(reference, 400)
    many = replace(many, state_sync=replace(many.state_sync, enabled=False))
    group = render.haresources_group(many)
    assert len(group) > 1
    assert all(len(resource) <= render.GROUP_KEY_MAX for resource, _ in group)
    assert [a for resource, _ in group for a in resource.split("::")[1:]] == render.floating_ips_arguments(many)


@pytest.mark.parametrize("model", ["reference", "scaled", "unsynced"])
def test_haresources_shape_is_the_group_as_resource_manager_reads_it_without_the_addresses(model, request, tmp_path):
    """render.haresources_shape (what decides a heartbeat restart, tasks/heartbeat.py) joins
    the lines as ResourceManager's own sed does, split groups and wrapped lines included."""
    cluster = request.getfixturevalue(model)
    content = _balancer_file(cluster, render.HARESOURCES)
    script = Path(render.FLOATING_IPS_SCRIPT).name
    expected = []
    for line in _resource_manager_view(content, tmp_path):
        node, *resources = line.split()
        names = [script if r.split("::")[0] == script else r for r in resources]
        expected.append((node, *[n for i, n in enumerate(names) if not (n == script and i and names[i - 1] == script)]))
    assert render.haresources_shape(content) == tuple(expected)
    assert all(script in group for group in expected)


@pytest.mark.parametrize("model", ["reference", "scaled", "unsynced"])
def test_sites_added_or_removed_keep_haresources_shape(model, request):
    """More or fewer addresses (unsynced and many: more or fewer resources of the split
    group) are the same shape: heartbeat is not restarted for them."""
    cluster = request.getfixturevalue(model)
    shape = render.haresources_shape(_balancer_file(cluster, render.HARESOURCES))
    for count in (1, len(cluster.sites) - 1, len(cluster.sites) + 40):
        other = scale_cluster(cluster, count)
        assert render.haresources_shape(_balancer_file(other, render.HARESOURCES)) == shape, count


def test_the_group_owner_or_its_other_resources_change_haresources_shape(reference):
    shape = render.haresources_shape(_balancer_file(reference, render.HARESOURCES))
    unsynced = replace(reference, state_sync=replace(reference.state_sync, enabled=False))
    assert render.haresources_shape(_balancer_file(unsynced, render.HARESOURCES)) != shape
    swapped = replace(reference, balancers=tuple(reversed(reference.balancers)))
    assert render.haresources_shape(_balancer_file(swapped, render.HARESOURCES)) != shape


def test_the_reference_haresources_is_one_line(reference):
    assert render.haresources_lines(reference) == [
        f"{reference.master.name} {' '.join(r for r, _ in render.haresources_group(reference))}"]


# ---- validation: what heartbeat's buffers refuse ------------------------------------------

def test_a_haresources_line_longer_than_heartbeat_reads_is_refused(reference, monkeypatch):
    monkeypatch.setattr(render, "HARESOURCES_WRAP", 10**6)  # the resource line left whole
    found = [p for p in problems(scale_cluster(reference, 400)) if p.field == "sites"]
    assert found and found[0].value == 400
    assert "haresources has a line of" in found[0].message and f"over the {render.HEARTBEAT_LINE_MAX}" in found[0].message
    assert not problems(scale_cluster(reference, 250))


def test_a_group_key_longer_than_heartbeat_passes_on_is_refused(reference, monkeypatch):
    many = scale_cluster(reference, 400)
    many = replace(many, state_sync=replace(many.state_sync, enabled=False))
    whole = "::".join([Path(render.FLOATING_IPS_SCRIPT).name, *render.floating_ips_arguments(many)])
    monkeypatch.setattr(render, "haresources_group", lambda cluster: [(whole, "every floating address")])
    (found,) = [p for p in problems(many) if "(its key)" in p.message]
    assert (found.field, found.value) == ("sites", 400)
    assert f"{len(whole)} characters" in found.message and f"over the {render.GROUP_KEY_MAX}" in found.message


def test_a_ping_group_line_longer_than_heartbeat_reads_is_refused(reference):
    """ha.cf's ping_group lists every web host: about 330 of them fill heartbeat's line."""
    def hosts(count):
        return tuple(replace(reference.web_hosts[0], name=f"web{i}", internal_ips=(f"192.168.{1 + i // 250}.{1 + i % 250}",),
                             mail_ip=f"10.0.{2 + i // 250}.{1 + i % 250}", public_ip=None) for i in range(count))

    def model(count):
        return replace(reference, sites=reference.sites[:1], web_hosts=hosts(count), external_network="10.0.0.0/16",
                       internal_network="192.168.0.0/16")

    assert not problems(model(300))
    (found,) = problems(model(400))
    assert (found.field, found.value) == ("web_hosts", 400)
    length = len(next(line for line in render.heartbeat_files(model(400), reference.master)[0].content.splitlines()
                      if line.startswith("ping_group")))
    assert f"is {length} characters, over the {render.HEARTBEAT_LINE_MAX}" in found.message
    with pytest.raises(ValidationError, match="web_hosts = 400"):
        validate(model(400))


# ---- keepalived's own limits (engine "keepalived") ------------------------------------------

def _web_hosts(reference, count):
    """The reference with one site and `count` web hosts."""
    hosts = tuple(replace(reference.web_hosts[0], name=f"web{i}", internal_ips=(f"192.168.{1 + i // 250}.{1 + i % 250}",),
                          mail_ip=f"10.0.{2 + i // 250}.{1 + i % 250}", public_ip=None) for i in range(count))
    return replace(reference, sites=reference.sites[:1], web_hosts=hosts, external_network="10.0.0.0/16",
                   internal_network="192.168.0.0/16")


def test_heartbeats_buffers_are_checked_on_heartbeat_models_only(reference, monkeypatch):
    """ha.cf and haresources are heartbeat's files: a model on keepalived renders neither."""
    monkeypatch.setattr(render, "HEARTBEAT_LINE_MAX", 20)  # every ha.cf line too long for heartbeat
    assert [p for p in problems(reference) if "heartbeat reads as one line" in p.message]
    assert problems(replace(reference, engine="keepalived")) == []


def test_a_keepalived_conf_line_longer_than_keepalived_reads_is_refused(reference):
    """The web hosts' track script names every web host: about 70 of them fill keepalived's line."""
    assert not problems(replace(_web_hosts(reference, 50), engine="keepalived"))
    many = replace(_web_hosts(reference, 100), engine="keepalived")
    (found,) = problems(many)
    assert (found.field, found.value) == ("web_hosts", 100)
    length = max(len(line) for line in render.keepalived_conf(many, many.master).content.splitlines())
    assert length > render.KEEPALIVED_LINE_MAX
    assert f"is {length} characters, over the {render.KEEPALIVED_LINE_MAX}" in found.message
    assert "track script" in found.message
    assert not [p for p in problems(replace(many, engine="heartbeat")) if p.field == "web_hosts"]  # ha.cf has room


def test_a_site_line_longer_than_keepalived_reads_names_the_sites_field(reference):
    site = reference.sites[1]
    receive = "x" * render.KEEPALIVED_LINE_MAX
    cluster = replace(reference, engine="keepalived", sites=(reference.sites[0], replace(site, health=replace(site.health, receive=receive)),
                                                             *reference.sites[2:]))
    (found,) = problems(cluster)
    assert found.field == f"sites[{site.name}].health.receive" and found.value > render.KEEPALIVED_LINE_MAX
    assert f"over the {render.KEEPALIVED_LINE_MAX}" in found.message
    assert not problems(replace(cluster, engine="heartbeat"))


def test_more_floating_addresses_than_a_vrrp_advertisement_holds_are_refused(reference):
    from lvsha.model import VRRP_MAX_ADDRESSES

    fits = VRRP_MAX_ADDRESSES - 1 - len(reference.web_hosts)  # the gateway and the mail IPs besides the VIPs
    assert not [p for p in problems(replace(scale_cluster(reference, fits), engine="keepalived"))]
    (found,) = problems(replace(scale_cluster(reference, fits + 1), engine="keepalived"))
    assert (found.field, found.value) == ("sites", fits + 1)
    assert f"{VRRP_MAX_ADDRESSES + 1} (" in found.message and f"over the {VRRP_MAX_ADDRESSES}" in found.message
    assert not problems(scale_cluster(reference, fits + 1))  # heartbeat carries them


def test_keepalived_conf_at_250_sites_holds_every_address_in_the_one_vrrp_instance(no_secret, monkeypatch):
    """The keepalived scale model at 250 sites: one VRRP instance with its 254 addresses
    (within the advertisement's 255, so none is moved out of it), a virtual server per site
    with a real server per web host, every line within what keepalived reads as one."""
    from lvsha.model import VRRP_MAX_ADDRESSES

    monkeypatch.setenv(ENGINE_ENV, "keepalived")
    monkeypatch.setenv(SITES_ENV, str(SITES))
    cluster = load_cluster(SCALE_INVENTORY)
    floating = cluster.floating_ips()
    assert len(floating) == 1 + SITES + len(cluster.web_hosts) <= VRRP_MAX_ADDRESSES
    for balancer in cluster.balancers:
        conf = render.keepalived_conf(cluster, balancer).content
        assert conf.count("\nvrrp_instance ") == 1 and "virtual_ipaddress_excluded" not in conf
        listed = conf.split("\tvirtual_ipaddress {\n", 1)[1].split("\t}\n", 1)[0].splitlines()
        assert [line.split()[0] for line in listed] == [ip.cidr for ip in floating]
        assert conf.count("\nvirtual_server ") == SITES
        assert conf.count("\treal_server ") == SITES * len(cluster.web_hosts)
        assert max(map(len, conf.splitlines())) <= render.KEEPALIVED_LINE_MAX
        print(f"\n{balancer.name}: keepalived.conf of {SITES} sites: {len(conf):,} characters, "
              f"{conf.count(chr(10)):,} lines")


# ---- the firewall ------------------------------------------------------------------------

def test_long_source_lists_are_written_as_rules_iptables_restore_accepts(scaled):
    rules = _balancer_file(scaled, render.FIREWALL_RULES)
    parameters = re.findall(r" -s (\S+)", rules)
    assert parameters and max(map(len, parameters)) <= render.IPTABLES_PARAMETER_MAX
    for host in scaled.web_hosts:
        for mail_only in (True, False):
            lines = [line for line in rules.splitlines() if line.startswith("-A POSTROUTING")
                     and line.endswith(f"--to-source {host.mail_ip}") and ("--dport 25" in line) == mail_only]
            sources = [s.removesuffix("/32") for line in lines for s in line.split(" -s ")[1].split()[0].split(",")]
            assert sources == list(host.internal_ips) and len(lines) > 1


def test_source_lists_keep_a_short_list_whole():
    assert render.source_lists(["10.0.0.1", "10.0.0.2"]) == ["10.0.0.1/32,10.0.0.2/32"]
    assert render.source_lists([f"10.0.0.{i}" for i in range(1, 5)], limit=23) == [
        "10.0.0.1/32,10.0.0.2/32", "10.0.0.3/32,10.0.0.4/32"]


@pytest.mark.parametrize("model", ["scaled", "unsynced"])
def test_the_scaled_rules_pass_iptables_restore_test(model, request, tmp_path):
    exe = _iptables_restore()
    rules = tmp_path / "rules.v4"
    rules.write_text(_balancer_file(request.getfixturevalue(model), render.FIREWALL_RULES))
    result = subprocess.run([exe, "--test", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- the kernel and ldirectord -------------------------------------------------------------

def test_the_neighbour_table_holds_every_real_server_at_scale(reference, scaled):
    assert "gc_thresh" not in _balancer_file(reference, render.SYSCTL_CONF)
    sysctls = _balancer_file(scaled, render.SYSCTL_CONF)
    thresh2 = int(re.search(r"gc_thresh2 = (\d+)", sysctls).group(1))
    thresh3 = int(re.search(r"gc_thresh3 = (\d+)", sysctls).group(1))
    neighbours = SITES * len(scaled.web_hosts) + render.NEIGHBOUR_RESERVE
    assert neighbours < thresh2 < thresh3


def test_ldirectord_checks_each_site_in_a_process_of_its_own_when_one_cycle_would_outlast_the_interval(reference, scaled):
    assert "fork=" not in _balancer_file(reference, render.LDIRECTORD_CF)
    assert "\nfork=yes\n" in _balancer_file(scaled, render.LDIRECTORD_CF)
    # the threshold: checks x SERIAL_CHECK_SECONDS against checkinterval
    interval = reference.ldirectord.checkinterval
    per_site = len(reference.web_hosts)
    last_serial = int(interval / SERIAL_CHECK_SECONDS) // per_site
    assert not scale_cluster(reference, last_serial).ldirectord_forks()
    assert scale_cluster(reference, last_serial + 1).ldirectord_forks()
    forced = replace(scaled, ldirectord=Ldirectord(fork=False))
    assert "fork=" not in _balancer_file(forced, render.LDIRECTORD_CF)
    assert "\nfork=yes\n" in _balancer_file(replace(reference, ldirectord=Ldirectord(fork=True)), render.LDIRECTORD_CF)


def test_ldirectord_fork_must_be_a_boolean_or_none(reference):
    (found,) = problems(replace(reference, ldirectord=Ldirectord(fork="yes")))
    assert (found.field, found.value) == ("ldirectord.fork", "yes")


def test_a_check_rate_lengthens_the_checkinterval_only_past_it(reference, monkeypatch, no_secret):
    """real servers / checkinterval at most the rate: 250 sites x 3 web hosts at 30 a second
    is checkinterval 25 (named in the model's name); the reference (9 in 5 s) and 50 sites
    (150 in 5 s: 30 a second) keep theirs; rate 0 keeps it whatever the count. The scale
    inventory takes the rate from LVSHA_SCALE_CHECK_RATE, DEFAULT_CHECK_RATE when unset."""
    hosts = len(reference.web_hosts)
    assert scale_cluster(reference, 3, DEFAULT_CHECK_RATE) == reference
    fifty = scale_cluster(reference, 50, DEFAULT_CHECK_RATE)
    assert fifty == scale_cluster(reference, 50) and 50 * hosts <= DEFAULT_CHECK_RATE * fifty.ldirectord.checkinterval
    grown = validate(scale_cluster(reference, SITES, DEFAULT_CHECK_RATE))
    interval = grown.ldirectord.checkinterval
    assert SITES * hosts <= DEFAULT_CHECK_RATE * interval and SITES * hosts > DEFAULT_CHECK_RATE * (interval - 1)
    assert interval > reference.ldirectord.checkinterval and grown.name.endswith(f"-checkinterval-{interval}")
    assert grown == replace(scale_cluster(reference, SITES), name=grown.name,
                            ldirectord=replace(reference.ldirectord, checkinterval=interval))
    assert f"checkinterval={interval}\n" in render.ldirectord_file(grown).content
    assert scale_cluster(reference, SITES, 0) == scale_cluster(reference, SITES)
    assert check_rate_from_environment({}) == DEFAULT_CHECK_RATE
    assert check_rate_from_environment({CHECK_RATE_ENV: "0"}) == 0
    for bad in ("-1", "1.5", "fast"):
        with pytest.raises(ValueError, match=f"{CHECK_RATE_ENV} = {bad!r}"):
            check_rate_from_environment({CHECK_RATE_ENV: bad})
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET", __import__("tests.conftest", fromlist=["TEST_SECRET"]).TEST_SECRET)
    monkeypatch.setenv(SITES_ENV, str(SITES))
    monkeypatch.setenv(CHECK_RATE_ENV, "0")
    assert load_cluster(SCALE_INVENTORY) == scale_cluster(reference, SITES)
