"""The packet judge against the reference cluster's rendered ruleset (raw, nat, filter)."""

import pytest
from netaddr import IPAddress

from lvsha import render
from lvsha.firewall_check import Packet, UnsupportedRule, judge


@pytest.fixture
def rules(reference):
    return render.firewall_file(reference, reference.balancer("balancer1")).content


LOCAL = {IPAddress(a) for a in ("10.0.0.254", "192.168.0.252", "10.0.0.1", "10.0.0.21")}


def _packet(source, destination="10.0.0.254", port=22, interface="eth0"):
    return Packet(interface, IPAddress(source), IPAddress(destination), "tcp", port)


def test_ssh_from_the_internet_reaches_the_balancer(rules):
    verdict = judge(rules, _packet("203.0.113.9"), LOCAL)
    assert verdict.accepted and "--dport 22 -j ACCEPT" in verdict.why


def test_ssh_from_a_private_address_is_dropped_by_anti_spoofing_in_raw(rules):
    """The lockout the old check missed: an operator at 10.0.5.20."""
    verdict = judge(rules, _packet("10.0.5.20"), LOCAL)
    assert not verdict.accepted
    assert verdict.why == "-A PREROUTING -i eth0 -s 10.0.4.0/22 -j DROP"


def test_the_external_network_is_exempt_from_anti_spoofing(rules):
    assert judge(rules, _packet("10.0.0.99"), LOCAL).accepted


def test_ssh_to_a_vip_falls_to_the_input_policy(rules):
    verdict = judge(rules, _packet("203.0.113.9", destination="10.0.0.1"), LOCAL)
    assert not verdict.accepted and verdict.why == "the policy of filter INPUT (DROP)"


def test_internal_interface_only_accepts_internal_sources(rules):
    verdict = judge(rules, _packet("203.0.113.9", destination="192.168.0.252", interface="eth1"), LOCAL)
    assert not verdict.accepted and "! -s 192.168.0.0/24 -j DROP" in verdict.why


def test_mail_is_rewritten_to_its_web_host_not_delivered_here(rules):
    verdict = judge(rules, _packet("203.0.113.9", destination="10.0.0.21", port=25), LOCAL)
    assert not verdict.accepted and "192.168.0.1" in verdict.why


def test_something_it_does_not_model_fails_closed(rules):
    with pytest.raises(UnsupportedRule, match="recent"):
        judge(rules.replace("COMMIT", "-A PREROUTING -m recent --update -j DROP\nCOMMIT", 1), _packet("203.0.113.9"), LOCAL)
