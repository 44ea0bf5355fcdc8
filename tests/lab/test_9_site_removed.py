"""A site removed from the model is gone from both balancers after one deploy:
its address, its IPVS service, its firewall rules, and the client's reach.
Last in the tier: the lab is not brought back to the full model."""

from lvsha.lab.model import source_inventory
from lvsha.lab.run import deploy, record
from tests.lab.test_4_firewall import tcp


def test_a_removed_site_disappears_from_both_balancers(lab, tmp_path, monkeypatch):
    removed = lab.cluster.sites[-1]
    smaller = tmp_path / "inventory_without_a_site.py"
    smaller.write_text(
        "from dataclasses import replace\n"
        "from lvsha.loader import load_cluster\n"
        f"_full = load_cluster({str(source_inventory(lab.state))!r})\n"
        "CLUSTER = replace(_full, sites=_full.sites[:-1], web_hosts=tuple(\n"
        "    replace(h, internal_ips=h.internal_ips[:-1]) for h in _full.web_hosts))\n"
    )
    monkeypatch.setenv("LVSHA_LAB_INVENTORY", str(smaller))
    result = deploy()
    record("deploy removing a site", result.seconds)
    assert result.ok, result.output[-6000:]
    for balancer in lab.cluster.balancers:
        addresses, table = lab.carries(balancer.name)
        assert removed.vip not in addresses, balancer.name
        assert not any(virtual.startswith(f"{removed.vip}:") for virtual in table), (balancer.name, table)
        assert removed.vip not in lab.ssh(balancer.name, "iptables-save").stdout, balancer.name
    assert tcp(lab, removed.vip, 80) != "open"
    for site in lab.cluster.sites[:-1]:
        answer = lab.client("curl", "-s", "--max-time", "5", f"http://{site.vip}/", timeout=15).stdout
        assert site.name in answer, site.name
