"""Golden renderings of the reference cluster, and properties every rendering keeps."""

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from netaddr import IPNetwork

from lvsha import render

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
VIPS = ["10.0.0.1", "10.0.0.3", "10.0.0.5"]


def test_golden_files(reference, request, tmp_path):
    """Every file of every host equals its reviewed golden copy (tests/golden)."""
    written = render.write_tree(reference, tmp_path)
    if request.config.getoption("--update-golden"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        shutil.copytree(tmp_path, GOLDEN)
    produced = sorted(p.relative_to(tmp_path) for p in written)
    expected = sorted(p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file())
    assert produced == expected
    for rel in produced:
        assert (tmp_path / rel).read_text() == (GOLDEN / rel).read_text(), f"{rel} differs from its golden copy"


def test_every_host_gets_its_files(reference):
    files = render.all_files(reference)
    assert sorted(files) == ["balancer1", "balancer2", "hostA", "hostB", "hostC"]
    for name in ("balancer1", "balancer2"):
        paths = {f.path for f in files[name]}
        assert {render.HA_CF, render.HARESOURCES, render.AUTHKEYS, render.LDIRECTORD_CF, render.FIREWALL_RULES,
                render.FIREWALL6_RULES} <= paths
    for name in ("hostA", "hostB", "hostC"):
        assert render.network_file_path("eth0") in {f.path for f in files[name]}


def _file(reference, host, path):
    (found,) = [f for f in render.all_files(reference)[host] if f.path == path]
    return found


@pytest.mark.parametrize("path", [render.HARESOURCES, render.LDIRECTORD_CF, render.FIREWALL_RULES])
def test_all_three_sites_in_every_list(reference, path):
    for balancer in ("balancer1", "balancer2"):
        content = _file(reference, balancer, path).content
        for vip in VIPS:
            assert f"{vip}/" in content or f"{vip}:" in content, f"{vip} missing from {balancer}:{path}"
        assert "10.0.0.2/" not in content and "10.0.0.2:" not in content


def test_haresources_identical_on_both_nodes(reference):
    assert _file(reference, "balancer1", render.HARESOURCES).content == _file(reference, "balancer2", render.HARESOURCES).content


def _haresources_line(cluster) -> list[str]:
    content = _file(cluster, cluster.master.name, render.HARESOURCES).content
    lines = [line for line in content.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1
    return lines[0].split()


def test_haresources_commits_connection_states_then_moves_every_address_as_one_group(reference):
    node, *resources = _haresources_line(reference)
    assert node == reference.master.name
    # conntrackd primary first (started first, stopped last), then every floating
    # address in one resource, and nothing else: IPVS is loaded on both balancers
    # (ldirectord runs on both), and heartbeat refuses to start with a resource
    # active on the idle node
    assert resources[0] == Path(render.CONNTRACKD_SCRIPT).name
    script, *addresses = resources[1].split("::")
    assert script == Path(render.FLOATING_IPS_SCRIPT).name
    assert addresses == render.floating_ips_arguments(reference) == [
        f"{ip.cidr}/{ip.interface}" for ip in reference.floating_ips()]
    assert len(resources) == 2


def test_without_state_sync_the_group_is_the_addresses_alone(reference):
    from dataclasses import replace

    unsynced = replace(reference, state_sync=replace(reference.state_sync, enabled=False))
    node, *resources = _haresources_line(unsynced)
    assert [r.split("::")[0] for r in resources] == [Path(render.FLOATING_IPS_SCRIPT).name]
    files = {f.path: f for f in render.all_files(unsynced)[unsynced.master.name]}
    assert render.CONNTRACKD_CONF not in files and render.IPVS_SYNC_UNIT not in files
    assert "8848" not in files[render.FIREWALL_RULES].content and "3780" not in files[render.FIREWALL_RULES].content
    assert "LVSHA_STATE_SCRIPT=\n" in files[render.HEARTBEAT_ENV].content
    assert "sync_refresh_period" not in files[render.SYSCTL_CONF].content
    assert "conntrackd" not in files[render.HEARTBEAT_DROPIN].content


def test_state_sync_runs_on_the_internal_link_from_and_to_the_peer_only(reference):
    for balancer in reference.balancers:
        peer = reference.peer(balancer)
        files = {f.path: f.content for f in render.all_files(reference)[balancer.name]}
        interface = balancer.internal_interface
        unit = files[render.IPVS_SYNC_UNIT]
        for role in ("master", "backup"):
            assert (f"ExecStart=/sbin/ipvsadm --start-daemon {role} --mcast-interface {interface} "
                    f"--syncid {reference.state_sync.syncid}") in unit
        conntrackd = files[render.CONNTRACKD_CONF]
        assert f"IPv4_address {balancer.internal_ip}\n" in conntrackd
        assert f"IPv4_Destination_Address {peer.internal_ip}\n" in conntrackd
        assert f"Interface {interface}\n" in conntrackd
        # the addresses traffic is forwarded to are never ignored: mail NAT and IPVS
        ignored = conntrackd.split("Address Ignore {")[1].split("}")[0]
        for ip in reference.floating_ips():
            assert (f"IPv4_address {ip.address}\n" in ignored) == (ip.address == reference.gateway), ip
        rules = files[render.FIREWALL_RULES]
        assert (f"-A INPUT -i {interface} -s {peer.internal_ip}/32 -d 224.0.0.81/32 -p udp -m udp --dport 8848 -j ACCEPT"
                in rules)
        assert (f"-A INPUT -i {interface} -s {peer.internal_ip}/32 -d {balancer.internal_ip}/32 -p udp -m udp "
                f"--dport {reference.state_sync.conntrackd_port} -j ACCEPT") in rules
        dropin = files[render.HEARTBEAT_DROPIN]
        assert "After=conntrackd.service lvsha-ipvs-sync.service" in dropin
        env = files[render.HEARTBEAT_ENV]
        assert f"LVSHA_STATE_SCRIPT={render.CONNTRACKD_SCRIPT}\n" in env
        assert f"LVSHA_SYNC_LISTEN={render.sync_listen(reference)}\n" in env
        assert render.sync_listen(reference) == reference.state_sync.refresh_period + render.SYNC_LISTEN_MARGIN


def test_a_dedicated_sync_link_carries_the_state_and_gets_its_own_address(dedicated_sync):
    dedicated = dedicated_sync
    node = dedicated.master
    peer, net = dedicated.peer(node), dedicated.sync_net
    files = {f.path: f.content for f in render.all_files(dedicated)[node.name]}
    assert f"--mcast-interface {node.sync_interface} " in files[render.IPVS_SYNC_UNIT]
    assert f"IPv4_Destination_Address {peer.sync_ip}\n" in files[render.CONNTRACKD_CONF]
    assert f"Address={node.sync_ip}/{net.prefixlen}\n" in files[render.network_file_path(node.sync_interface)]
    rules = files[render.FIREWALL_RULES]
    assert f"-A PREROUTING -i {node.sync_interface} ! -s {net.cidr} -j DROP" in rules
    assert (f"-A INPUT -i {node.sync_interface} -s {peer.sync_ip}/32 -d {node.sync_ip}/32 -p udp -m udp "
            f"--dport {dedicated.state_sync.conntrackd_port} -j ACCEPT") in rules
def test_each_own_interface_is_paired_with_its_network(reference, dedicated_sync):
    """Both engines' deploys remove what an interface holds in its network beyond the
    model's (Cluster.own_networks, one place): every interface once, with its own network."""
    for cluster in (reference, dedicated_sync):
        for balancer in cluster.balancers:
            networks = cluster.own_networks(balancer)
            assert [(i, cidrs) for i, _, cidrs in networks] == cluster.own_addresses(balancer)
            expected = [cluster.external_network, cluster.internal_network]
            if cluster.sync_net is not None:
                expected.append(cluster.state_sync.network)
            assert [n for _, n, _ in networks] == expected
            assert all(IPNetwork(c) in IPNetwork(n) for _, n, cidrs in networks for c in cidrs)


def test_ldirectord_runs_with_the_drained_copy_of_its_file(reference):
    dropin = _file(reference, "balancer1", render.LDIRECTORD_DROPIN).content
    assert f"ExecStartPre={render.DRAIN_SCRIPT} render" in dropin
    assert f"ExecStart=/usr/sbin/ldirectord {render.LDIRECTORD_LIVE_CF} start" in dropin
    # the live file's name keeps ldirectord's pid file Debian's (its stop and reload signal that pid)
    assert render.LDIRECTORD_LIVE_CF.rsplit("/", 1)[1] == "ldirectord"
    assert _file(reference, "balancer1", render.DRAIN_SCRIPT).mode == "0755"


def test_floating_ips_script_is_deployed_executable_on_both(reference):
    for balancer in ("balancer1", "balancer2"):
        script = _file(reference, balancer, render.FLOATING_IPS_SCRIPT)
        assert script.mode == "0755" and script.content.startswith("#!/bin/sh\n")


def test_each_site_balances_one_address_of_each_host(reference):
    content = _file(reference, "balancer1", render.LDIRECTORD_CF).content
    blocks = content.split("virtual=")[1:]
    reals = [[l.split("=")[1].split()[0] for l in b.splitlines() if l.strip().startswith("real=")] for b in blocks]
    assert reals == [["192.168.0.1", "192.168.0.4", "192.168.0.7"],
                     ["192.168.0.2", "192.168.0.5", "192.168.0.8"],
                     ["192.168.0.3", "192.168.0.6", "192.168.0.9"]]
    assert content.count("checkport=80") == 3


def _virtual_sections(content: str) -> dict[str, list[str]]:
    """{virtual address: [its settings, stripped]} of an ldirectord.cf."""
    return {block.splitlines()[0]: [line.strip() for line in block.splitlines()[1:] if line.strip()]
            for block in content.split("\nvirtual=")[1:]}


def test_health_checks_ask_for_the_site_by_name(reference, edge):
    for cluster in (reference, edge):
        sections = _virtual_sections(_file(cluster, cluster.balancers[0].name, render.LDIRECTORD_CF).content)
        for vs in cluster.virtual_servers():
            settings = sections[vs.address]
            assert f"virtualhost={vs.site.name}" in settings and f'receive="{vs.site.name}"' in settings
            assert not any(line.startswith("fallback=") for line in settings)  # none unless the model says


def test_a_site_falls_back_where_the_model_says_with_nat(reference):
    from dataclasses import replace
    sites = (replace(reference.sites[0], fallback="127.0.0.1:8080"), replace(reference.sites[1], fallback="192.168.0.3"),
             *reference.sites[2:])
    cluster = replace(reference, sites=sites)
    sections = _virtual_sections(_file(cluster, "balancer1", render.LDIRECTORD_CF).content)
    assert "fallback=127.0.0.1:8080 masq" in sections["10.0.0.1:0"]
    assert "fallback=192.168.0.3 masq" in sections["10.0.0.3:0"]  # an all-ports service: no port, as its reals
    assert not any(line.startswith("fallback=") for line in sections["10.0.0.5:0"])
    ported = replace(reference, sites=(replace(reference.sites[0], virtual_port=80, fallback="192.168.0.3"),
                                       *reference.sites[1:]))
    assert "fallback=192.168.0.3:80 masq" in _virtual_sections(
        _file(ported, "balancer1", render.LDIRECTORD_CF).content)["10.0.0.1:80"]


def test_ha_cf_detects_a_failed_link_with_ping_nodes_and_ipfail(reference, edge):
    hb = reference.heartbeat
    lines = _file(reference, reference.master.name, render.HA_CF).content.splitlines()
    (node,) = reference.external_ping_nodes()
    assert hb.deadping < hb.deadtime  # a ping node is dead before the link is declared dead
    assert f"deadping {hb.deadping}" in lines and f"ping {node}" in lines
    assert "ping_group web_hosts " + " ".join(h.internal_ips[0] for h in reference.web_hosts) in lines
    assert f"respawn hacluster {render.IPFAIL}" in lines and "apiauth ipfail gid=haclient uid=hacluster" in lines
    assert lines.index(f"ping {node}") > lines.index(f"udpport {render.HEARTBEAT_UDP_PORT}")
    # a model without an external ping node gets none of it (README says what that means)
    edge_cf = _file(edge, edge.balancers[0].name, render.HA_CF).content
    assert not any(word in edge_cf for word in ("deadping", "ping_group", "ipfail"))


def test_authkeys_is_private_and_sha1(reference):
    from tests.conftest import TEST_SECRET

    authkeys = _file(reference, "balancer1", render.AUTHKEYS)
    assert authkeys.mode == "0600"
    assert f"1 sha1 {TEST_SECRET}" in authkeys.content


def test_ha_cf_names_nodes_and_peer(reference):
    content = _file(reference, "balancer2", render.HA_CF).content
    assert content.index("udpport") < content.index("ucast")
    assert "ucast eth1 192.168.0.252" in content and "ucast eth0 10.0.0.254" in content
    assert "192.168.0.253" not in content  # its own address is not a heartbeat target


def test_web_host_routes_only_via_floating_gateway(reference):
    content = _file(reference, "hostB", render.network_file_path("eth0")).content
    assert [l for l in content.splitlines() if l.startswith("Gateway=")] == ["Gateway=192.168.0.254"]
    assert [l for l in content.splitlines() if l.startswith("Address=")] == [
        "Address=192.168.0.4/24", "Address=192.168.0.5/24", "Address=192.168.0.6/24"]


def _ports_variant(reference):
    """The reference model with a site on one port checked on another, a site whose https
    check talks to a port of its own, and a site checked by ping."""
    from dataclasses import replace

    from lvsha.model import HealthCheck
    from lvsha.validate import validate

    first, second, third = reference.sites
    cluster = replace(reference, sites=(
        replace(first, ports=(8080, 443), virtual_port=8080, persistent=None),  # checked on 80 (the default)
        replace(second, ports=(80, 8443), health=HealthCheck(service="https", checkport=8443)),
        replace(third, ports=(80,), virtual_port=80, health=HealthCheck(checktype="ping", checkport=None)),
    ))
    validate(cluster)
    return cluster


def _balancers_reach(cluster) -> dict[str, tuple[set[int], set[int]]]:
    """{real server address: (ports the balancers forward to there, ports they check
    there)}, read from the renderings: ldirectord.cf's `real=` and `checkport=`, and,
    for an all-ports service (`real=` without a port), the ports rules.v4 opens to its VIP."""
    files = {f.path: f.content for f in render.all_files(cluster)[cluster.master.name]}
    opened = {}
    for line in files[render.FIREWALL_RULES].splitlines():
        words = line.split()
        if "--dports" in words and "-d" in words:
            opened[words[words.index("-d") + 1].removesuffix("/32")] = {
                int(p) for p in words[words.index("--dports") + 1].split(",")}
    reach, block = {}, {}
    for line in files[render.LDIRECTORD_CF].splitlines() + ["virtual=end"]:
        key, _, value = line.strip().partition("=")
        if key == "virtual":
            for real in block.get("reals", []):
                address, _, port = real.partition(":")
                forwarded = {int(port)} if port else opened[block["vip"]]
                checks = block["checktype"] in ("negotiate", "connect")
                checked = {int(block.get("checkport") or port)} if checks else set()
                reach[address] = (forwarded, checked)
            block = {"vip": value.rpartition(":")[0], "reals": []}
        elif key == "real":
            block["reals"].append(value.split()[0])
        elif key in ("checkport", "checktype"):
            block[key] = value
    return reach


def _http_on_443_variant(reference):
    """The reference model with its first site checked by plain HTTP on 443 (its checkport;
    the site still forwards 80 and 443), the others as they are."""
    from lvsha.model import HealthCheck
    from lvsha.validate import validate

    first, *others = reference.sites
    cluster = replace(reference, sites=(replace(first, health=HealthCheck(service="http", checkport=443)), *others))
    validate(cluster)
    return cluster


# What nginx serves each site on, per model, stated: {site: {port: whether TLS there}}. The
# examples' sites are forwarded 80 and 443 (or 80 alone) and checked by http on 80: TLS on 443.
# The ports variant (_ports_variant): a site on 8080 checked on 80, no TLS (443 is not one of
# its ports then); a site with an https check on 8443: TLS there too; a site checked by ping.
# The http-on-443 variant: the site whose http check talks to 443 gets plain HTTP there.
NGINX_SERVES = {
    "reference": {"www.mysite.com": {80: False, 443: True}, "www.myothersite.com": {80: False, 443: True},
                  "www.mythirdsite.net": {80: False, 443: True}},
    "edge": {"shop.example.org": {80: False, 443: True}, "static.example.org": {80: False}},
    "ports variant": {"www.mysite.com": {80: False, 8080: False}, "www.myothersite.com": {80: False, 8443: True},
                      "www.mythirdsite.net": {80: False}},
    "http check on 443": {"www.mysite.com": {80: False, 443: False}, "www.myothersite.com": {80: False, 443: True},
                          "www.mythirdsite.net": {80: False, 443: True}},
}


def test_nginx_listens_exactly_where_the_balancers_forward_and_check(every_model, reference):
    """Each web host's nginx listens on each site address on exactly the ports the
    balancers' renderings send traffic to or check there (ldirectord.cf, the firewall's
    ports for an all-ports service), which are the site's real_ports, and the deploy's
    listening check waits on exactly those; TLS where NGINX_SERVES says, plain HTTP elsewhere."""
    cases = {every_model.name: every_model, "ports variant": _ports_variant(reference),
             "http check on 443": _http_on_443_variant(reference)}
    for case, cluster in cases.items():
        serves = NGINX_SERVES[case]
        assert set(serves) == {site.name for site in cluster.sites}, case
        reach = _balancers_reach(cluster)
        for host in cluster.web_hosts:
            listens = []  # (address, port, TLS) of each `listen ADDRESS:PORT [ssl];`
            for line in render.web_server_file(cluster, host).content.splitlines():
                words = line.rstrip(";").split()
                if words[:1] == ["listen"]:
                    address, _, port = words[1].rpartition(":")
                    listens.append((address, int(port), words[2:] == ["ssl"]))
            served = {}
            for address, port, tls in listens:
                served.setdefault(address, {})[port] = tls
            assert set(served) == set(host.internal_ips)
            for site, address in cluster.site_addresses(host):
                ports = served[str(address)]
                assert set(ports) == set(site.real_ports) == set(serves[site.name]), (case, site.name)
                forwarded, checked = reach[str(address)]
                assert set(ports) == forwarded | checked, (case, site.name)
                assert ports == serves[site.name], (case, site.name)
            assert render.web_server_listens(cluster, host) == [f"{address}:{port}" for address, port, _ in listens]
    variant = _ports_variant(reference)
    host = variant.web_hosts[0]
    assert render.web_server_listens(variant, host) == [
        f"{host.internal_ips[0]}:80", f"{host.internal_ips[0]}:8080",
        f"{host.internal_ips[1]}:80", f"{host.internal_ips[1]}:8443", f"{host.internal_ips[2]}:80"]


def test_an_http_check_on_443_gets_plain_http_there(reference):
    """A site checked with plain HTTP on NGINX_TLS_PORT (its virtual port, or checkport):
    nginx speaks plain HTTP on that port, where the check talks; the others keep theirs."""
    site = reference.sites[0]
    for checked in (replace(site, virtual_port=render.NGINX_TLS_PORT, ports=(render.NGINX_TLS_PORT,),
                            health=replace(site.health, service="http", checkport=None)),
                    replace(site, health=replace(site.health, service="http", checkport=render.NGINX_TLS_PORT))):
        assert checked.checked_port == render.NGINX_TLS_PORT
        assert (render.NGINX_TLS_PORT, False) in render.nginx_ports(checked)
        assert not any(tls for _, tls in render.nginx_ports(checked))
    https = replace(site, health=replace(site.health, service="https", checkport=8443))
    assert dict(render.nginx_ports(https)) == {**{p: p == render.NGINX_TLS_PORT for p in site.real_ports}, 8443: True}


def test_a_site_without_tls_gets_no_certificate(edge):
    """nginx reads a certificate only for a server block with a TLS port."""
    plain = [s for s in edge.sites if render.NGINX_TLS_PORT not in s.real_ports and s.health.service != "https"]
    assert plain, "the edge model has a site served on plain HTTP only"
    content = render.web_server_file(edge, edge.web_hosts[0]).content
    for block in content.split("server {")[1:]:
        name = block.split("server_name ", 1)[1].split(";")[0]
        has_tls = any(line.rstrip(";").endswith(" ssl") for line in block.splitlines())
        assert ("ssl_certificate " in block) == has_tls, name
        assert has_tls == (name not in {s.name for s in plain}), name


def test_firewall_never_filters_in_nat_table(reference):
    rules = _file(reference, "balancer1", render.FIREWALL_RULES).content
    nat = rules.split("*nat")[1].split("COMMIT")[0]
    assert "DROP" not in nat and "MASQUERADE" not in nat
    assert ":INPUT DROP" in rules and ":FORWARD DROP" in rules
    assert "-j DNAT --to-destination 192.168.0.4" in nat and "-d 10.0.0.22/32" in nat
    assert "-s 192.168.0.4/32,192.168.0.5/32,192.168.0.6/32 -p tcp -m tcp --dport 25 -j SNAT --to-source 10.0.0.22" in nat


def _iptables_restore(program="iptables-restore"):
    exe = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed; .ci/run must install iptables")
        pytest.skip(f"{program} is not installed")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{program} --test needs root")
        pytest.skip(f"{program} --test needs root")
    return exe


@pytest.mark.parametrize("path, program", [(render.FIREWALL_RULES, "iptables-restore"),
                                           (render.FIREWALL6_RULES, "ip6tables-restore")])
@pytest.mark.parametrize("balancer", ["balancer1", "balancer2"])
def test_rules_pass_iptables_restore_test(reference, balancer, path, program, tmp_path):
    exe = _iptables_restore(program)
    rules = tmp_path / path.rsplit("/", 1)[1]
    rules.write_text(_file(reference, balancer, path).content)
    result = subprocess.run([exe, "--test", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_iptables_restore_test_rejects_filtering_in_nat(tmp_path):
    """The check the deploy relies on really refuses the recipe's nat-table DROP."""
    exe = _iptables_restore()
    bad = tmp_path / "bad.v4"
    bad.write_text("*nat\n:PREROUTING DROP [0:0]\n-A PREROUTING -s 10.0.0.0/8 -j DROP\nCOMMIT\n")
    assert subprocess.run([exe, "--test", str(bad)], capture_output=True).returncode != 0


def _tables(rules: str) -> dict[str, tuple[dict[str, str], list[list[str]]]]:
    """iptables-restore input -> {table: ({chain: policy}, [rule as words])}."""
    tables, current = {}, None
    for line in rules.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], ({}, []))
        elif line.startswith(":"):
            chain, policy, _ = line[1:].split()
            current[0][chain] = policy
        elif line.startswith("-A"):
            current[1].append(line.split())
    return tables


@pytest.mark.parametrize("balancer", ["balancer1", "balancer2"])
def test_ipv6_ruleset_accepts_no_new_connection(reference, balancer):
    """sshd listens on IPv6 too: the v6 ruleset (the model has no IPv6 address)
    accepts loopback, replies and on-link neighbour discovery only, nothing to port 22."""
    tables = _tables(_file(reference, balancer, render.FIREWALL6_RULES).content)
    assert list(tables) == ["filter"]
    policies, rules = tables["filter"]
    assert policies == {"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"}
    accepted = [rule for rule in rules if rule[-2:] == ["-j", "ACCEPT"]]
    assert accepted == rules  # only accepts: everything else meets the policy
    assert [rule[:4] for rule in accepted[:2]] == [["-A", "INPUT", "-i", "lo"], ["-A", "INPUT", "-m", "conntrack"]]
    assert accepted[1][4:6] == ["--ctstate", "RELATED,ESTABLISHED"]
    # neighbour discovery, on-link only (hop limit 255): router and neighbour solicitation/advertisement
    nd = accepted[2:]
    assert [rule[rule.index("--icmpv6-type") + 1] for rule in nd] == ["133", "134", "135", "136"]
    assert all(rule[:4] == ["-A", "INPUT", "-p", "ipv6-icmp"] and "--hl-eq" in rule and
               rule[rule.index("--hl-eq") + 1] == "255" for rule in nd)
    assert not any("--dport" in rule or "tcp" in rule or "udp" in rule for rule in rules)


def test_render_never_writes_authkeys_wider_than_0600(reference, tmp_path, monkeypatch):
    """Every file is created with its final mode, also over an existing wider one."""
    modes = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        if str(path).endswith("/authkeys"):
            modes.append(mode)
        return real_open(path, flags, mode, *args, **kwargs)

    target = tmp_path / "balancer1/etc/ha.d/authkeys"
    target.parent.mkdir(parents=True)
    target.write_text("old\n")
    target.chmod(0o644)
    monkeypatch.setattr(os, "open", recording_open)
    render.write_tree(reference, tmp_path)
    assert modes and all(m == 0o600 for m in modes)
    assert target.stat().st_mode & 0o777 == 0o600


def test_forwarding_is_turned_on_by_the_firewall_unit_not_at_boot(reference):
    sysctls = _file(reference, "balancer1", render.SYSCTL_CONF).content
    assert "ip_forward" not in "".join(l for l in sysctls.splitlines() if not l.startswith("#"))
    dropin = _file(reference, "balancer1", render.FIREWALL_DROPIN).content
    assert "ExecStartPost=/usr/sbin/sysctl -q -w net.ipv4.ip_forward=1" in dropin


@pytest.mark.parametrize("sites", [3, 250])
def test_heartbeat_starts_only_once_this_nodes_ipvs_holds_every_site(reference, sites):
    """At boot heartbeat takes the group over (auto_failback, or a peer that is down) while
    ldirectord may still be loading IPVS (its start pass lasts minutes with hundreds of
    sites): the guard's rejoin waits for this node's table first (lvsha.env names the wait
    and the model's bound; tests/unit/test_heartbeat_scripts.py runs it), which heartbeat's
    start timeout and the sync daemons' wait (at boot, before heartbeat) allow for."""
    from lvsha.lab.scale import scale_cluster

    cluster = scale_cluster(reference, sites)
    bound = render.ipvs_takeover_timeout(cluster)
    assert (bound > render.IPVS_TAKEOVER_TIMEOUT) == cluster.ldirectord_forks() == (sites == 250)
    balancer = cluster.balancers[0]
    (env,) = [f for f in render.heartbeat_helper_files(cluster, balancer) if f.path == render.HEARTBEAT_ENV]
    assert {f"LVSHA_IPVS_READY={render.IPVS_READY_SCRIPT}", f"LVSHA_IPVS_WAIT={bound}"} <= set(env.content.splitlines())
    dropin = render.unit_dropin_files(cluster)[0]
    assert dropin.path == render.HEARTBEAT_DROPIN
    lines = dropin.content.splitlines()
    assert [line for line in lines if line.startswith("ExecStartPre=")] == [f"ExecStartPre={render.HEARTBEAT_GUARD} rejoin"]
    assert "After=netfilter-persistent.service ldirectord.service" in lines
    (timeout,) = [int(line.split("=")[1]) for line in lines if line.startswith("TimeoutStartSec=")]
    assert timeout == render.heartbeat_start_timeout(cluster) and timeout > bound + render.REJOIN_TIMEOUT
    sync = {f.path: f.content for f in render.state_sync_files(cluster, balancer)}[render.IPVS_SYNC_UNIT].splitlines()
    assert f"ExecStartPre={render.IPVS_READY_SCRIPT} {bound}" in sync
    (sync_timeout,) = [int(line.split("=")[1]) for line in sync if line.startswith("TimeoutStartSec=")]
    assert sync_timeout > bound


def test_a_hung_heartbeat_is_killed_within_the_stop_timeout_not_debians_half_hour(reference):
    """Debian's heartbeat.service: TimeoutStopSec=30min, SendSIGKILL=no. A hung heartbeat
    would keep the addresses that long; lvsha's drop-in bounds it, then release runs."""
    dropin, ldirectord = render.unit_dropin_files(reference)
    lines = dropin.content.splitlines()
    assert f"TimeoutStopSec={render.STOP_TIMEOUT}" in lines and "SendSIGKILL=yes" in lines
    assert f"ExecStopPost={render.HEARTBEAT_GUARD} release" in lines
    # and ldirectord is stopped by systemd itself, which waits for it (never Debian's fire-and-forget stop)
    assert {"ExecStop=", "KillMode=control-group"} <= set(ldirectord.content.splitlines())
    assert "cleanstop=no" in render.ldirectord_file(reference).content.splitlines()


def test_ldirectords_start_does_not_add_and_remove_each_missing_real_server(reference):
    """ldirectord's ld_start() adds every real server missing from IPVS and removes it at once
    unless readdquiescent=yes (ldirectord.in, the server_down loop): the same table either way,
    at a table read and two ipvsadm runs per real server (docs/scale.md, health checks)."""
    lines = render.ldirectord_file(reference).content.splitlines()
    assert "readdquiescent=yes" in lines
    assert lines.index("readdquiescent=yes") < next(i for i, line in enumerate(lines) if line.startswith("virtual="))
