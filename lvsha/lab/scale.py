"""A model of N sites grown from another (the reference): the scale benchmark's.

`scale_cluster(base, n)` keeps everything of `base` (balancers, web hosts,
their names and addresses, timers, firewall, state sync) and gives it `n`
sites: the base's own first, then `site<k>.scale.test` (k from len(base.sites) + 1),
each with a VIP on the external network and one internal address on every web
host. The two networks keep their first address and are widened only as far as
the addresses need (/24 holds the reference up to 83 sites: 3 web hosts x 83 internal
addresses and the gateway and the two balancers), so that the lab brings the
same five VMs up on the same segments, and `scale_cluster(reference, 3)` is
the reference model itself.
"""

from __future__ import annotations

from dataclasses import fields, replace

from netaddr import IPAddress, IPNetwork

from lvsha.model import ENGINES, Cluster, Site

# Environment variable: the number of sites of examples/scale/inventory.py's model.
SITES_ENV = "LVSHA_SCALE_SITES"
DEFAULT_SITES = 250
# Environment variable: the failover engine of examples/scale/inventory.py's model, which
# grows that engine's example (heartbeat: the reference `inventory.py`; keepalived:
# examples/keepalived/inventory.py). Unset: the model's default engine.
ENGINE_ENV = "LVSHA_SCALE_ENGINE"
DEFAULT_ENGINE = next(f.default for f in fields(Cluster) if f.name == "engine")
# Environment variable: the most health checks a second (real servers / checkinterval) the scale
# model asks of a balancer; past it the model's checkinterval is lengthened to fit (0: never).
# The lab's balancers (one emulated vCPU each) did not keep up with 150 a second (250 sites x 3
# web hosts every 5 s, on either engine): VRRP's timers ran seconds late, ping tracks timed out
# and real servers flapped out of IPVS (docs/scale.md). On hardware that rate costs little; the
# default keeps the reference (1.8 a second) and 50 sites (30) as they are, and gives 250 sites
# checkinterval 25.
CHECK_RATE_ENV = "LVSHA_SCALE_CHECK_RATE"
DEFAULT_CHECK_RATE = 30
# Names of the sites added beyond the base model's.
SITE_NAME = "site{k}.scale.test"
# Free addresses the external network keeps for the lab (its client takes the highest free one).
EXTERNAL_SPARE = 1


def sites_from_environment(environ) -> int:
    """SITES_ENV as a number of sites (DEFAULT_SITES when unset); ValueError naming it otherwise."""
    text = environ.get(SITES_ENV, "").strip() or str(DEFAULT_SITES)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{SITES_ENV} = {text!r}: must be a whole number of sites above 0")
    return int(text)


def engine_from_environment(environ) -> str:
    """ENGINE_ENV as a failover engine (DEFAULT_ENGINE when unset); ValueError naming it otherwise."""
    text = environ.get(ENGINE_ENV, "").strip() or DEFAULT_ENGINE
    if text not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} = {text!r}: must be one of {', '.join(ENGINES)}")
    return text


def check_rate_from_environment(environ) -> int:
    """CHECK_RATE_ENV as health checks a second (DEFAULT_CHECK_RATE when unset, 0: no bound);
    ValueError naming it otherwise."""
    text = environ.get(CHECK_RATE_ENV, "").strip() or str(DEFAULT_CHECK_RATE)
    if not text.isdigit():
        raise ValueError(f"{CHECK_RATE_ENV} = {text!r}: must be a whole number of health checks a second "
                         "(0: the model's checkinterval whatever the rate)")
    return int(text)


def _widened(network: IPNetwork, needed: int, keep: int) -> IPNetwork:
    """`network` from the same first address, its prefix shortened until it has
    `needed` host addresses and stays at or below /`keep` (never narrower than given)."""
    prefix = network.prefixlen
    while IPNetwork(f"{network.network}/{prefix}").size - 2 < needed:
        prefix -= 1
        candidate = IPNetwork(f"{network.network}/{prefix}")
        if candidate.network != network.network or prefix < keep:
            raise ValueError(f"{network.cidr} cannot be widened to {needed} addresses from its first address")
    return IPNetwork(f"{network.network}/{prefix}")


def _free(network: IPNetwork, used: set[IPAddress]):
    """The host addresses of `network` not in `used`, lowest first (`used` grows as they are taken)."""
    for address in network.iter_hosts():
        if address not in used:
            used.add(address)
            yield address


def scale_cluster(base: Cluster, sites: int, check_rate: int = 0) -> Cluster:
    """`base` with `sites` sites (see the module's docstring); with `check_rate`, a
    checkinterval long enough that its real servers are checked at most `check_rate`
    times a second (the model's name then says the checkinterval)."""
    if sites < 1:
        raise ValueError(f"sites = {sites}: at least one site")
    kept, added = base.sites[:sites], sites - min(sites, len(base.sites))
    hosts = len(base.web_hosts)
    # Everything the base model holds apart from its sites' VIPs and internal addresses stays where it is.
    fixed = base.used_addresses() - {IPAddress(s.vip) for s in base.sites[sites:]} - {
        IPAddress(ip) for h in base.web_hosts for ip in h.internal_ips[sites:]}
    external = _widened(base.external_net, sum(a in base.external_net for a in fixed) + added + EXTERNAL_SPARE, keep=16)
    internal = _widened(base.internal_net, sum(a in base.internal_net for a in fixed) + added * hosts, keep=16)
    used = set(fixed)
    vips = _free(external, used)
    new_sites = [replace(base.sites[0], name=SITE_NAME.format(k=len(base.sites) + i + 1), vip=str(next(vips)))
                 for i in range(added)]
    inner = _free(internal, used)
    # Host by host, as the reference numbers them (hostA's addresses first).
    extra = [[str(next(inner)) for _ in range(added)] for _ in base.web_hosts]
    web_hosts = tuple(replace(h, internal_ips=(*h.internal_ips[:sites], *extra[i])) for i, h in enumerate(base.web_hosts))
    grown = replace(
        base,
        name=base.name if sites == len(base.sites) else f"{base.name}-{sites}-sites",
        external_network=str(external.cidr),
        internal_network=str(internal.cidr),
        sites=(*kept, *new_sites),
        web_hosts=web_hosts,
    )
    reals = sites * hosts
    if check_rate and reals > check_rate * grown.ldirectord.checkinterval:
        interval = -(-reals // check_rate)  # ceil
        grown = replace(grown, name=f"{grown.name}-checkinterval-{interval}",
                        ldirectord=replace(grown.ldirectord, checkinterval=interval))
    return grown

