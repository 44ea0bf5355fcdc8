"""Models a lab test deploys for a while instead of the lab's (test_8_config_reload):
the inventory text a deploy is pointed at through LVSHA_LAB_INVENTORY, and the free
addresses it takes."""

from __future__ import annotations

import textwrap

ADDED_SITE = "www.lvsha-lab-added.net"

# The lab's model with the last site's health check changed and, given `added`
# (name, VIP, one internal address per web host), one site more (the inventory a
# deploy is pointed at through LVSHA_LAB_INVENTORY).
CHANGED_INVENTORY = textwrap.dedent('''\
    from dataclasses import replace
    from lvsha.loader import load_cluster
    from lvsha.model import Site

    _full = load_cluster({source!r})
    _last = _full.sites[-1]
    _checked = replace(_last, health=replace(_last.health, negotiatetimeout=_last.health.negotiatetimeout + 1))
    _added = {added!r}
    CLUSTER = replace(
        _full,
        sites=(*_full.sites[:-1], _checked, *([Site(_added[0], vip=_added[1])] if _added else [])),
        web_hosts=tuple(replace(h, internal_ips=(*h.internal_ips, ip)) for h, ip in zip(_full.web_hosts, _added[2]))
        if _added else _full.web_hosts,
    )
''')


def changed_inventory(source: str, added: tuple[str, str, tuple[str, ...]] | None) -> str:
    """The text of CHANGED_INVENTORY for the inventory file `source`."""
    return CHANGED_INVENTORY.format(source=source, added=added)


def free_internal_addresses(cluster, count: int) -> list[str]:
    """`count` addresses of the internal network the model does not use."""
    used = {str(a) for a in cluster.used_addresses()} | {str(cluster.internal_gateway)}
    return [str(ip) for ip in cluster.internal_net.iter_hosts() if str(ip) not in used][:count]
