"""Hundreds of sites (issue 22): the scale model, and what its renderings must keep
within what heartbeat, iptables-restore and the kernel read (docs/scale.md)."""

from __future__ import annotations

import time

import pytest
from netaddr import IPNetwork

from lvsha import render
from lvsha.lab.scale import DEFAULT_SITES, SITES_ENV, scale_cluster, sites_from_environment
from lvsha.validate import problems, validate

SITES = 250


@pytest.fixture(scope="module")
def scaled(reference):
    started = time.monotonic()
    cluster = validate(scale_cluster(reference, SITES))
    print(f"\n{SITES} sites: model and validation {time.monotonic() - started:.2f} s")
    return cluster


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


def test_every_host_renders_at_scale(scaled):
    started = time.monotonic()
    files = render.all_files(scaled)
    print(f"\n{SITES} sites: rendering every host's files {time.monotonic() - started:.2f} s")
    ldirectord = next(f for f in files[scaled.master.name] if f.path == render.LDIRECTORD_CF).content
    assert ldirectord.count("\nvirtual=") == SITES and ldirectord.count("\treal=") == SITES * len(scaled.web_hosts)
    for host in scaled.web_hosts:
        network = next(f for f in files[host.name] if f.path.startswith(render.NETWORKD_DIR)).content
        assert network.count("\nAddress=") == SITES
