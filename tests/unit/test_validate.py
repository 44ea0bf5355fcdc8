"""One failing example per validation rule; each error names field and value."""

from dataclasses import replace

import pytest

from lvsha.model import Balancer, Cluster, HealthCheck, Monitoring, Service
from lvsha.validate import ValidationError, problems, validate


def test_reference_cluster_is_valid(reference):
    assert problems(reference) == []


def _with_balancer(c, i, **changes):
    bs = list(c.balancers)
    bs[i] = replace(bs[i], **changes)
    return replace(c, balancers=tuple(bs))


def _with_site(c, i, **changes):
    ss = list(c.sites)
    ss[i] = replace(ss[i], **changes)
    return replace(c, sites=tuple(ss))


def _with_host(c, i, **changes):
    hs = list(c.web_hosts)
    hs[i] = replace(hs[i], **changes)
    return replace(c, web_hosts=tuple(hs))


def _with_heartbeat(c, **changes):
    return replace(c, heartbeat=replace(c.heartbeat, **changes))


def _with_auth(c, **changes):
    return _with_heartbeat(c, auth=replace(c.heartbeat.auth, **changes))


CASES = {
    "bad address": (lambda c: _with_balancer(c, 0, external_ip="10.0.0.300"),
                    "balancers[balancer1].external_ip", "10.0.0.300", "not an IPv4 address"),
    "bad network": (lambda c: replace(c, internal_network="192.168.0.1/24"),
                    "internal_network", "192.168.0.1/24", "host bits"),
    "overlapping networks": (lambda c: replace(c, internal_network="10.0.0.0/25"),
                             "internal_network", "10.0.0.0/25", "overlaps"),
    "duplicate address": (lambda c: _with_site(c, 2, vip="10.0.0.21"),
                          "web_hosts[hostA].mail_ip", "10.0.0.21", "used twice: also by sites[www.mythirdsite.net].vip"),
    "vip outside external": (lambda c: _with_site(c, 0, vip="10.0.1.1"),
                             "sites[www.mysite.com].vip", "10.0.1.1", "outside the external network"),
    "mail ip outside external": (lambda c: _with_host(c, 1, mail_ip="192.168.0.122"),
                                 "web_hosts[hostB].mail_ip", "192.168.0.122", "outside the external network"),
    "real server off the internal net": (lambda c: _with_host(c, 2, internal_ips=("192.168.0.7", "10.0.0.88", "192.168.0.9")),
                                         "web_hosts[hostC].internal_ips[1]", "10.0.0.88", "outside the internal network"),
    "real server not owned per site": (lambda c: _with_host(c, 0, internal_ips=("192.168.0.1", "192.168.0.2")),
                                       "web_hosts[hostA].internal_ips", ["192.168.0.1", "192.168.0.2"], "one internal IP per site"),
    "virtual host with a space": (lambda c: _with_site(c, 0, health=replace(c.sites[0].health, virtualhost="www mysite")),
                                  "sites[www.mysite.com].health.virtualhost", "www mysite", "must be a host name"),
    "https checked on port 80": (lambda c: _with_site(c, 0, health=replace(c.sites[0].health, service="https")),
                                 "sites[www.mysite.com].health.checkport", 80, "an https check on port 80"),
    "fallback not an address": (lambda c: _with_site(c, 0, fallback="sorry.example"),
                                "sites[www.mysite.com].fallback", "sorry.example", "not an IPv4 address"),
    "fallback with a bad port": (lambda c: _with_site(c, 0, fallback="192.168.0.200:http"),
                                 "sites[www.mysite.com].fallback", "192.168.0.200:http", "port after ':' must be a number"),
    "fallback port out of range": (lambda c: _with_site(c, 0, fallback="192.168.0.200:70000"),
                                   "sites[www.mysite.com].fallback", 70000, "port number"),
    "fallback on a VIP": (lambda c: _with_site(c, 0, fallback="10.0.0.3:80"),
                          "sites[www.mysite.com].fallback", "10.0.0.3:80", "balancers' own or floating addresses"),
    "fallback on the gateway": (lambda c: _with_site(c, 1, fallback="192.168.0.254"),
                                "sites[www.myothersite.com].fallback", "192.168.0.254", "balancers' own or floating"),
    "fallback is a real server of the site": (lambda c: _with_site(c, 0, fallback="192.168.0.4:80"),
                                              "sites[www.mysite.com].fallback", "192.168.0.4:80", "real server of this site"),
    "ping node off the external network": (lambda c: _with_heartbeat(c, ping_nodes=("192.168.0.200",)),
                                           "heartbeat.ping_nodes[0]", "192.168.0.200", "outside the external network"),
    "ping node is a VIP": (lambda c: _with_heartbeat(c, ping_nodes=("10.0.0.1",)),
                           "heartbeat.ping_nodes[0]", "10.0.0.1", "used twice"),
    "ping nodes without the external link": (lambda c: _with_heartbeat(c, links=("internal",)),
                                             "heartbeat.links", ("internal",), "ipfail acts when a heartbeat link dies"),
    "ping nodes with a short deadtime": (lambda c: _with_heartbeat(c, keepalive=3, warntime=3, deadtime=10, initdead=30),
                                         "heartbeat.deadtime", 10, "at least 4 x keepalive (12) with ping nodes"),
    "site without real servers": (lambda c: replace(c, web_hosts=()),
                                  "sites[www.mysite.com]", "www.mysite.com", "no real servers"),
    "gateway collides with a host": (lambda c: replace(c, internal_gateway="192.168.0.4"),
                                     "web_hosts[hostB].internal_ips[0]", "192.168.0.4", "used twice: also by internal_gateway"),
    "gateway is the broadcast address": (lambda c: replace(c, internal_gateway="192.168.0.255"),
                                         "internal_gateway", "192.168.0.255", "broadcast"),
    "three balancers": (lambda c: replace(c, balancers=c.balancers + (Balancer("balancer3", "10.0.0.250", "192.168.0.250"),)),
                        "balancers", ["balancer1", "balancer2", "balancer3"], "exactly two"),
    "one balancer": (lambda c: replace(c, balancers=c.balancers[:1]),
                     "balancers", ["balancer1"], "exactly two"),
    "balancers disagree on interfaces": (lambda c: _with_balancer(c, 1, external_interface="ens3"),
                                         "balancers[balancer2].external_interface", "ens3", "haresources is shared"),
    "deadtime not above keepalive": (lambda c: _with_heartbeat(c, keepalive=10, warntime=10, deadtime=10),
                                     "heartbeat.deadtime", 10, "above keepalive"),
    "initdead under twice deadtime": (lambda c: _with_heartbeat(c, initdead=15),
                                      "heartbeat.initdead", 15, "twice deadtime (20)"),
    "warntime not below deadtime": (lambda c: _with_heartbeat(c, warntime=10),
                                    "heartbeat.warntime", 10, "below deadtime"),
    "crc auth": (lambda c: _with_auth(c, method="crc"),
                 "heartbeat.auth.method", "crc", "authenticates nothing"),
    "missing secret": (lambda c: _with_auth(c, secret=None),
                       "heartbeat.auth.secret", None, "needs a secret"),
    "weak secret": (lambda c: _with_auth(c, secret="short"),
                    "heartbeat.auth.secret", "<hidden>", "at least 16"),
    "port 0 without checkport": (lambda c: _with_site(c, 1, health=HealthCheck(checkport=None)),
                                 "sites[www.myothersite.com].health.checkport", None, "no port to check"),
    "port 0 without persistence": (lambda c: _with_site(c, 1, persistent=None),
                                   "sites[www.myothersite.com].persistent", None, "requires persistence"),
    "unknown scheduler": (lambda c: _with_site(c, 0, scheduler="fastest"),
                          "sites[www.mysite.com].scheduler", "fastest", "not an IPVS scheduler"),
    "virtual port not opened": (lambda c: _with_site(c, 0, virtual_port=8080),
                                "sites[www.mysite.com].virtual_port", 8080, "not among the ports"),
    "quote in receive": (lambda c: _with_site(c, 0, health=HealthCheck(receive='say "hi"')),
                         "sites[www.mysite.com].health.receive", 'say "hi"', "double quotes"),
    "duplicate site name": (lambda c: _with_site(c, 1, name="www.mysite.com"),
                            "sites[www.mysite.com].name", "www.mysite.com", "two sites"),
    "unknown link": (lambda c: _with_heartbeat(c, links=("internal", "serial")),
                     "heartbeat.links", "serial", "'internal' or 'external'"),
    "bad service protocol": (lambda c: replace(c, firewall=replace(c.firewall, services=(Service("ssh", "sctp", 22),))),
                             "firewall.services[ssh].protocol", "sctp", "'tcp' or 'udp'"),
    "bad interface name": (lambda c: _with_host(c, 0, interface="eth0 up"),
                           "web_hosts[hostA].interface", "eth0 up", "not a valid interface name"),
    "management interface reused": (lambda c: _with_balancer(c, 0, management_interface="eth0"),
                                     "balancers[balancer1].management_interface", "eth0", "third interface"),
    "management source dropped as spoofed": (
        lambda c: replace(c, firewall=replace(c.firewall, services=(Service("ssh", "tcp", 22, ("10.0.5.0/24",)),))),
        "firewall.services[ssh].sources", "10.0.5.0/24", "dropped on arrival at the external interface"),
    "bad spoofed source": (lambda c: replace(c, firewall=replace(c.firewall, spoofed_sources=("10.0.0.0/33",))),
                           "firewall.spoofed_sources", "10.0.0.0/33", "not an IPv4 network"),
    "sync id above 255": (lambda c: _with_sync(c, syncid=256), "state_sync.syncid", 256, "from 0 to 255"),
    "conntrackd on heartbeat's port": (lambda c: _with_sync(c, conntrackd_port=694),
                                       "state_sync.conntrackd_port", 694, "taken on the same link"),
    "conntrackd port out of range": (lambda c: _with_sync(c, conntrackd_port=70000),
                                     "state_sync.conntrackd_port", 70000, "port number"),
    "no refresh period": (lambda c: _with_sync(c, refresh_period=0), "state_sync.refresh_period", 0, "above 0"),
    "sync switch not a bool": (lambda c: _with_sync(c, enabled="no"), "state_sync.enabled", "no", "True or False"),
    "sync address without a sync network": (lambda c: _with_balancer(c, 0, sync_interface="eth3", sync_ip="192.168.100.1"),
                                            "balancers[balancer1].sync_ip", "192.168.100.1", "set state_sync.network"),
    "sync network overlapping the internal one": (lambda c: _dedicated(c, network="192.168.0.0/16"),
                                                  "state_sync.network", "192.168.0.0/16", "overlaps internal_network"),
    "sync network without a balancer's address": (lambda c: _with_balancer(_dedicated(c), 1, sync_ip=None),
                                                  "balancers[balancer2].sync_ip", None, "needs sync_interface and sync_ip"),
    "sync address outside the sync network": (lambda c: _with_balancer(_dedicated(c), 0, sync_ip="192.168.101.1"),
                                              "balancers[balancer1].sync_ip", "192.168.101.1", "outside the sync network"),
    "sync address used twice": (lambda c: _with_balancer(_dedicated(c), 1, sync_ip="192.168.100.1"),
                                "balancers[balancer2].sync_ip", "192.168.100.1", "used twice"),
    "sync link on the internal interface": (lambda c: _with_balancer(_dedicated(c), 0, sync_interface="eth1"),
                                            "balancers[balancer1].sync_interface", "eth1", "interface of its own"),
    "monitoring switch not a bool": (lambda c: _with_monitoring(c, enabled="yes"),
                                     "monitoring.enabled", "yes", "True or False"),
    "monitoring on without sources": (lambda c: _with_monitoring(c, enabled=True, sources=()),
                                      "monitoring.sources", (), "name the networks allowed to scrape"),
    "monitoring source not a network": (lambda c: _with_monitoring(c, sources=("10.0.0.0/24", "10.0.0.7/24")),
                                        "monitoring.sources", "10.0.0.7/24", "host bits set"),
    "monitoring source dropped as spoofed": (lambda c: _with_monitoring(c, sources=("172.20.0.0/16",)),
                                             "monitoring.sources", "172.20.0.0/16",
                                             "dropped on arrival at the external interface"),
    "monitoring port out of range": (lambda c: _with_monitoring(c, port=0), "monitoring.port", 0, "port number"),
    "monitoring port of a management service": (lambda c: _with_monitoring(c, port=22),
                                                 "monitoring.port", 22, "taken by firewall.services[ssh]"),
    "monitoring interval of 0": (lambda c: _with_monitoring(c, interval=0), "monitoring.interval", 0, "above 0"),
}


def _with_monitoring(c, **changes):
    """The reference with monitoring on, scraped from its external network, then `changes`."""
    return replace(c, monitoring=replace(c.monitoring, **{"enabled": True, "sources": ("10.0.0.0/24",), **changes}))


def test_monitoring_is_off_by_default_and_valid_when_on(reference):
    assert Monitoring().enabled is False and Cluster.__dataclass_fields__["monitoring"].default_factory is Monitoring
    assert problems(_with_monitoring(reference)) == []
    assert problems(_with_monitoring(replace(reference, engine="keepalived"))) == []  # on either engine
    # an internal source is scraped on the internal interface: anti-spoofing does not concern it
    internal = _with_monitoring(reference, sources=("192.168.0.0/24", "10.0.0.0/24"), port=9101, interval=2)
    assert problems(internal) == []
    balancer = internal.master
    assert internal.monitoring_rules(balancer) == [
        (balancer.internal_interface, "192.168.0.0/24", balancer.internal_ip),
        (balancer.external_interface, "10.0.0.0/24", balancer.external_ip)]
    # a udp service on the same number does not take node_exporter's tcp port
    assert problems(_with_monitoring(reference, port=161)) == []


def _with_sync(c, **changes):
    return replace(c, state_sync=replace(c.state_sync, **changes))


def _dedicated(c, network="192.168.100.0/24"):
    """The reference with a dedicated sync link (valid as it is)."""
    c = _with_balancer(_with_balancer(c, 0, sync_interface="eth3", sync_ip="192.168.100.1"),
                       1, sync_interface="eth3", sync_ip="192.168.100.2")
    return _with_sync(c, network=network)


def test_a_dedicated_sync_link_is_valid(reference):
    assert problems(_dedicated(reference)) == []


def test_narrowed_anti_spoofing_admits_a_private_management_network(reference):
    admins = (Service("ssh", "tcp", 22, ("10.0.5.0/24",)),)
    narrowed = replace(reference, firewall=replace(reference.firewall, services=admins,
                                                   spoofed_sources=("172.16.0.0/12", "192.168.0.0/16")))
    assert problems(narrowed) == []
    assert problems(replace(narrowed, firewall=replace(narrowed.firewall, spoofed_sources=()))) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_reports_field_and_value(reference, case):
    mutate, field, value, text = CASES[case]
    found = problems(mutate(reference))
    matching = [p for p in found if p.field == field and p.value == value and text in p.message]
    assert matching, f"expected {field} = {value!r} ({text}); got {[str(p) for p in found]}"


def test_crc_allowed_when_explicitly_insecure(reference):
    c = _with_auth(reference, method="crc", secret=None, allow_insecure=True)
    assert problems(c) == []


def test_validate_raises_with_every_problem(reference):
    broken = _with_site(_with_balancer(reference, 0, external_ip="10.0.0.300"), 0, scheduler="nope")
    with pytest.raises(ValidationError) as info:
        validate(broken)
    message = str(info.value)
    assert "balancers[balancer1].external_ip = '10.0.0.300'" in message
    assert "sites[www.mysite.com].scheduler = 'nope'" in message


def test_secret_never_in_messages_or_repr(reference):
    from tests.conftest import TEST_SECRET

    assert TEST_SECRET not in repr(reference)
    assert TEST_SECRET not in str(reference.to_json())
    weak = _with_auth(reference, secret="weak secret")
    assert "weak secret" not in " ".join(map(str, problems(weak)))


def test_a_fallback_elsewhere_and_an_https_check_on_443_are_valid(reference):
    site = replace(reference.sites[0], fallback="127.0.0.1:80",
                   health=replace(reference.sites[0].health, service="https", checkport=443, virtualhost="shop.example"))
    assert problems(replace(reference, sites=(site, *reference.sites[1:]))) == []
    # another site's address on a web host is a server outside this site's pool
    assert problems(_with_site(reference, 0, fallback="192.168.0.2")) == []


def test_the_external_gateway_is_a_ping_node_by_default_and_may_be_named_as_one(reference):
    routed = replace(_with_heartbeat(reference, ping_nodes=()), external_gateway="10.0.0.250")
    assert problems(routed) == [] and [str(a) for a in routed.external_ping_nodes()] == ["10.0.0.250"]
    assert problems(_with_heartbeat(routed, ping_nodes=("10.0.0.250",))) == []
    assert _with_heartbeat(reference, ping_nodes=()).external_ping_nodes() == []


# ---- engine "keepalived": the same model, VRRP's timers and keepalived's checkers ----

def _keepalived(c, **changes):
    return replace(c, engine="keepalived", **changes)


KEEPALIVED_CASES = {
    "unknown engine": (lambda c: replace(c, engine="pacemaker"), "engine", "pacemaker", "not a failover engine"),
    "advert interval above VRRPv2's": (lambda c: _with_heartbeat(_keepalived(c), keepalive=256, warntime=256,
                                                                 deadtime=1280, initdead=2560),
                                       "heartbeat.keepalive", 256, "advert_int: 1 to 255"),
    "deadtime not whole advertisements": (lambda c: _with_heartbeat(_keepalived(c), deadtime=11),
                                          "heartbeat.deadtime", 11, "multiple of keepalive (2)"),
    "deadtime under three advertisements": (lambda c: _with_heartbeat(_keepalived(c), ping_nodes=(), keepalive=3,
                                                                      warntime=3, deadtime=6, initdead=12),
                                            "heartbeat.deadtime", 6, "3 to 100 keepalives"),
    "broadcast heartbeat": (lambda c: _with_heartbeat(_keepalived(c), media="bcast"),
                            "heartbeat.media", "bcast", "unicast to the peer only"),
    "ping nodes with nopreempt": (lambda c: _with_heartbeat(_keepalived(c), auto_failback=False),
                                  "heartbeat.auto_failback", False, "nopreempt (auto_failback off) ignores"),
    "a check keepalived cannot run": (lambda c: _with_site(_keepalived(c), 0, health=HealthCheck(checktype="off")),
                                      "sites[www.mysite.com].health.checktype", "off", "keepalived has no such check"),
    "a negotiate check of another service": (lambda c: _with_site(_keepalived(c), 1, health=HealthCheck(service="smtp")),
                                             "sites[www.myothersite.com].health.service", "smtp",
                                             "negotiates only http and https"),
    "a request with a space": (lambda c: _with_site(_keepalived(c), 2, health=HealthCheck(request="/a b")),
                               "sites[www.mythirdsite.net].health.request", "/a b", "one word"),
}


@pytest.mark.parametrize("case", sorted(KEEPALIVED_CASES))
def test_keepalived_rule_reports_field_and_value(reference, case):
    mutate, field, value, text = KEEPALIVED_CASES[case]
    found = problems(mutate(reference))
    matching = [p for p in found if p.field == field and p.value == value and text in p.message]
    assert matching, f"expected {field} = {value!r} ({text}); got {[str(p) for p in found]}"


@pytest.mark.parametrize("case", sorted(c for c in KEEPALIVED_CASES if c != "unknown engine"))
def test_keepalived_rules_do_not_apply_to_heartbeat(reference, case):
    """The same model on heartbeat: no problem with that field (heartbeat can carry it)."""
    mutate, field, value, _ = KEEPALIVED_CASES[case]
    on_heartbeat = replace(mutate(reference), engine="heartbeat")
    if case == "advert interval above VRRPv2's":
        assert problems(on_heartbeat) == []
    else:
        assert [p for p in problems(on_heartbeat) if "keepalived" in p.message] == []


def test_the_example_models_are_valid_on_keepalived(reference, edge):
    assert problems(_keepalived(reference)) == []
    assert problems(_keepalived(edge)) == []


def test_heartbeat_only_rules_do_not_apply_to_keepalived(reference):
    """heartbeat's authkeys, initdead, warntime and ipfail's needs mean nothing to keepalived."""
    k = _keepalived(reference)
    assert problems(_with_auth(k, secret=None)) == []
    assert problems(_with_auth(k, method="crc")) == []
    assert problems(_with_heartbeat(k, initdead=15, warntime=10)) == []
    assert problems(_with_heartbeat(k, links=("internal",))) == []
    # each of them is refused on heartbeat
    for mutated in (_with_auth(reference, secret=None), _with_heartbeat(reference, initdead=15),
                    _with_heartbeat(reference, links=("internal",))):
        assert problems(mutated)
