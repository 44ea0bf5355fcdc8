"""Balancing through the VIPs: every real server used, persistence honoured."""

import pytest

pytestmark = pytest.mark.every_model


def test_ipvs_loaded_on_both_addresses_on_the_active_node_only(lab):
    active = lab.carrier()
    for balancer in lab.pair:
        assert lab.ipvs_reals(balancer) == lab.expected_ipvs(), balancer
    assert lab.holder_of(lab.cluster.internal_gateway) == [active]
    assert lab.carries_none(lab.other(active))


def _served_by(lab, vip, source):
    r = lab.client("curl", "-s", "--max-time", "5", "--interface", source, f"http://{vip}/", timeout=15)
    assert r.returncode == 0, f"{source} -> {vip}: curl exit {r.returncode} {r.stderr}"
    site, _, host = r.stdout.strip().partition(" served by ")
    return site, host


def test_every_site_is_served_by_every_real_server(lab, client_sources):
    """Each site answers with its own name from every web host; a persistent site
    keeps each client on one web host."""
    for site in lab.cluster.sites:
        seen = set()
        for source in client_sources:
            answers = {_served_by(lab, site.vip, source) for _ in range(3)}
            assert {name for name, _ in answers} == {site.name}
            if site.persistent:
                assert len(answers) == 1, f"{site.name}: persistence broken for {source}: {answers}"
            seen |= {host for _, host in answers}
        assert seen == {h.name for h in lab.cluster.web_hosts}, (site.name, seen)


def test_https_is_balanced_too(lab):
    tls = [site for site in lab.cluster.sites if 443 in site.ports]
    if not tls:
        pytest.skip(f"no site of {lab.cluster.name} serves 443")
    for site in tls:
        r = lab.client("curl", "-sk", "--max-time", "5", f"https://{site.vip}/", timeout=15)
        assert site.name in r.stdout, r.stderr
