"""The cluster's picture, drawn from the model alone: `lvsha diagram INVENTORY -o FILE.svg`.

Networks, both balancers with their own addresses per interface (the master
named), the floating addresses heartbeat moves as one group (each site's VIP
and ports, each web host's mail IP, the internal gateway), each site linked to
the web hosts' addresses that serve it, the heartbeat links and state sync.
With a `live.ClusterStatus` (`--live`: what `lvsha status` reads), the holder
of the floating addresses is highlighted and every real server is marked in
rotation, drained or failed.

Nothing here connects anywhere. The DOT source is deterministic (the model's
order, ids by position); an SVG written here carries that source in its
<metadata>, so a test can tell that docs/reference-cluster.svg was drawn from
the current model whatever Graphviz version laid it out.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from pathlib import Path

import graphviz

from lvsha import live
from lvsha.loader import load_cluster
from lvsha.model import Balancer, Cluster
from lvsha.secrets import SECRET_ENV, SECRET_FILE_ENV

# What -o's suffix asks for; "dot" is the source itself (no Graphviz binary needed).
FORMATS = ("svg", "png", "pdf", "dot")
METADATA_ID = "lvsha-dot-source"
# Stands in for an unset heartbeat secret when only the picture is drawn (validation wants one).
PLACEHOLDER_SECRET = "placeholder-never-drawn-or-deployed"

# One colour per site (cycled), for its VIP and the edges to its real servers.
SITE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
NETWORK_FILL = {"ext": "#dbe9f6", "int": "#e3f1de", "sync": "#f3e6f5"}
FLOATING_FILL = "#fff6d5"
HOLDER_FILL = "#c8f0c8"
PROBLEM = "#d62728"
# A real server's state (live.RealStatus.state) -> cell fill, edge style, what the cell says.
REAL_STATES = {
    "in rotation": ("#c8f0c8", "solid", "in rotation"),
    "drained": ("#e0e0e0", "dashed", "DRAINED"),
    "draining": ("#ffe0a0", "dashed", "DRAINING"),
    "failed health check": ("#f8c0c0", "dotted", "FAILED CHECK"),
    "unknown": ("#ffffff", "dotted", "unknown"),
}


class DiagramError(RuntimeError):
    pass


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(rows: list[str], **attrs: str) -> str:
    """An HTML-like label: a table of `rows` (each '<tr>...</tr>')."""
    base = {"border": "0", "cellborder": "1", "cellspacing": "0", "cellpadding": "4"}
    base.update(attrs)
    return "<<table " + " ".join(f'{k}="{v}"' for k, v in base.items()) + ">" + "".join(rows) + "</table>>"


def _ports(ports: tuple[int, ...]) -> str:
    return ", ".join(map(str, ports))


# ids by position: stable, and never in need of quoting
def _balancer_id(i: int) -> str:
    return f"balancer{i}"


def _host_id(i: int) -> str:
    return f"host{i}"


def _site_port(i: int) -> str:
    return f"site{i}"


def _interface_rows(cluster: Cluster, b: Balancer) -> list[tuple[str, str, str, str]]:
    """(port, interface, CIDR, network) a balancer carries itself, from Cluster.own_addresses."""
    roles = ["ext", "int"] + (["sync"] if cluster.sync_net is not None else [])
    names = {"ext": "external", "int": "internal", "sync": "sync"}
    return [(role, interface, cidrs[0], names[role])
            for role, (interface, cidrs) in zip(roles, cluster.own_addresses(b))]


def build(cluster: Cluster, status: live.ClusterStatus | None = None) -> graphviz.Digraph:
    """The cluster's graph; with `status`, annotated with who holds what now."""
    g = graphviz.Digraph(name=cluster.name, comment=f"lvsha cluster {cluster.name}")
    title = f"cluster {cluster.name}"
    if status is not None:
        title += ": live, " + ("healthy" if status.healthy else f"DEGRADED ({len(status.problems)} problems)")
    g.attr(rankdir="TB", newrank="true", compound="true", nodesep="0.35", ranksep="0.9",
           fontname="Helvetica", fontsize="16", labelloc="t", label=title)
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="11")
    g.attr("edge", dir="none", fontname="Helvetica", fontsize="10")

    holder = status.holder if status else None
    by_name = {b.name: b for b in status.balancers} if status else {}
    held = {a.address: a.holders for a in status.addresses} if status else {}
    real_state = ({(s.name, r.host): r for s in status.sites for r in s.reals} if status else {})

    # ---- networks -------------------------------------------------------------------
    ext_rows = [f'<tr><td><b>external network</b> {_e(cluster.external_net.cidr)}</td></tr>']
    if cluster.external_gateway:
        ext_rows.append(f"<tr><td>gateway {_e(cluster.external_gateway)}</td></tr>")
    for node in cluster.external_ping_nodes():
        ext_rows.append(f"<tr><td>ping node {_e(node)} (tells a failed link from a failed peer)</td></tr>")
    g.node("ext", _table(ext_rows, bgcolor=NETWORK_FILL["ext"], cellborder="0"))
    g.node("int", _table([f'<tr><td><b>internal network</b> {_e(cluster.internal_net.cidr)}</td></tr>'],
                         bgcolor=NETWORK_FILL["int"], cellborder="0"))
    if cluster.sync_net is not None:
        g.node("sync", _table([f'<tr><td><b>sync network</b> {_e(cluster.sync_net.cidr)}</td></tr>'],
                              bgcolor=NETWORK_FILL["sync"], cellborder="0"))

    # ---- the floating group ---------------------------------------------------------
    floating = cluster.floating_ips()
    gateway_ip, site_ips, mail_ips = floating[0], floating[1:1 + len(cluster.sites)], floating[1 + len(cluster.sites):]

    def now(cidr: str, port: str) -> str:
        """A cell saying where an address is now (live only)."""
        holders, port = held.get(cidr, []), f' port="{port}"' if port else ""
        if len(holders) > 1:
            return f'<td{port} bgcolor="#f8c0c0"><b>SPLIT BRAIN: on {_e(" + ".join(holders))}</b></td>'
        if not holders:
            return f'<td{port} bgcolor="#f8c0c0"><b>on no balancer</b></td>'
        return f'<td{port} bgcolor="{HOLDER_FILL if holders[0] == holder else FLOATING_FILL}">now on {_e(holders[0])}</td>'

    if status is None:
        group_label = (f"floating addresses: on {cluster.master.name} (the master) when both run; "
                       "heartbeat moves them together")
    elif holder:
        group_label = f"floating addresses: held now by {holder}"
    else:
        group_label = "floating addresses: NOT held by one balancer"
    # One column per address, the sites' first: each site's edges leave its column's foot.
    heads, where, what, how, live_row = [], [], [], [], []
    for i, (site, ip) in enumerate(zip(cluster.sites, site_ips)):
        colour = SITE_COLOURS[i % len(SITE_COLOURS)]
        mode = (f"IPVS port {site.virtual_port}" if site.virtual_port else "IPVS all ports") + f", {site.scheduler}"
        if site.persistent:
            mode += f", persistent {site.persistent} s"
        heads.append(f'<td bgcolor="{colour}"><font color="white"><b>{_e(site.name)}</b></font></td>')
        where.append(f"<td>VIP {_e(ip.cidr)} on {_e(ip.interface)}</td>")
        what.append(f"<td>ports {_e(_ports(site.ports))}</td>")
        # the site's edges leave the foot of its column: this row, or the live row below it
        how.append(f'<td port="{_site_port(i)}">{_e(mode)}</td>' if status is None else f"<td>{_e(mode)}</td>")
        live_row.append((ip.cidr, _site_port(i)))
    purpose = "outbound traffic" if cluster.firewall.outbound_nat == "mail-ip" else "outbound mail"
    for h, ip in zip(cluster.web_hosts, mail_ips):
        heads.append(f"<td><b>mail IP of {_e(h.name)}</b></td>")
        where.append(f"<td>{_e(ip.cidr)} on {_e(ip.interface)}</td>")
        what.append(f'<td rowspan="2">source of {_e(h.name)}\'s<br/>{purpose}</td>')
        live_row.append((ip.cidr, ""))
    heads.append("<td><b>internal gateway</b></td>")
    where.append(f"<td>{_e(gateway_ip.cidr)} on {_e(gateway_ip.interface)}</td>")
    what.append('<td rowspan="2">the web hosts\'<br/>default route</td>')
    live_row.append((gateway_ip.cidr, ""))
    rows = [f'<tr><td colspan="{len(heads)}"><b>{_e(group_label)}</b></td></tr>',
            "<tr>" + "".join(heads) + "</tr>", "<tr>" + "".join(where) + "</tr>",
            "<tr>" + "".join(what) + "</tr>", "<tr>" + "".join(how) + "</tr>"]
    if status is not None:
        rows.append("<tr>" + "".join(now(cidr, port) for cidr, port in live_row) + "</tr>")
    g.node("floating", _table(rows, bgcolor=FLOATING_FILL, color="#b08000", border="1"))

    # ---- the balancers --------------------------------------------------------------
    with g.subgraph(name="balancers") as s:
        s.attr(rank="same")
        for i, b in enumerate(cluster.balancers):
            role = (f"master: preferred holder" + (", fails back" if cluster.heartbeat.auto_failback else ", no automatic failback")
                    if b is cluster.master else f"standby: takes over when {cluster.master.name} fails")
            head_fill, rows_after = "#eeeeee", []
            if status is not None:
                bs = by_name[b.name]
                if not bs.reachable:
                    head_fill = "#f8c0c0"
                    rows_after.append(f'<tr><td colspan="3"><font color="{PROBLEM}"><b>UNREACHABLE</b>: {_e(bs.error)}</font></td></tr>')
                else:
                    if b.name == holder:
                        head_fill = HOLDER_FILL
                        rows_after.append('<tr><td colspan="3"><b>HOLDS the floating addresses now</b></td></tr>')
                    hb = f"heartbeat {bs.heartbeat}" + (f", resources {bs.resources}" if bs.resources else "")
                    colour = "black" if bs.heartbeat == "running" else PROBLEM
                    rows_after.append(f'<tr><td colspan="3"><font color="{colour}">{_e(hb)}; ldirectord {_e(bs.ldirectord)}</font></td></tr>')
            rows = [f'<tr><td colspan="3" bgcolor="{head_fill}"><b>{_e(b.name)}</b><br/>{_e(role)}</td></tr>']
            for port, interface, cidr, network in _interface_rows(cluster, b):
                # Mirrored: each balancer's addresses face its peer (the heartbeat links join them).
                cells = [f"<td>{network}</td>", f"<td>{_e(interface)}</td>", f'<td port="{port}">{_e(cidr)}</td>']
                rows.append("<tr>" + "".join(cells if i == 0 else cells[::-1]) + "</tr>")
            if b.management_interface:
                rows.append(f'<tr><td>{_e(b.management_interface)}</td><td colspan="2">management (SSH)</td></tr>')
            s.node(_balancer_id(i), _table(rows + rows_after,
                                           color="#208020" if b.name == holder else "black",
                                           border="3" if b.name == holder else "0"))

    # ---- the web hosts --------------------------------------------------------------
    with g.subgraph(name="web_hosts") as s:
        s.attr(rank="same")
        for i, h in enumerate(cluster.web_hosts):
            rows = [f'<tr><td colspan="{3 if status else 2}" bgcolor="#eeeeee"><b>{_e(h.name)}</b> ({_e(h.interface)})</td></tr>']
            for j, (site, ip) in enumerate(cluster.site_addresses(h)):
                state = ""
                if status is not None:
                    fill, _, words = REAL_STATES.get(real_state[(site.name, h.name)].state, REAL_STATES["unknown"])
                    state = f'<td bgcolor="{fill}">{_e(words)}</td>'
                rows.append(f'<tr><td port="s{j}">{_e(site.name)}</td><td>{_e(ip)}/{cluster.internal_net.prefixlen}</td>{state}</tr>')
            rows.append(f'<tr><td>mail IP (floating)</td><td colspan="{2 if status else 1}">{_e(h.mail_ip)}</td></tr>')
            s.node(_host_id(i), _table(rows))

    # ---- links ----------------------------------------------------------------------
    for i, b in enumerate(cluster.balancers):
        g.edge("ext", f"{_balancer_id(i)}:ext")
        g.edge(f"{_balancer_id(i)}:int", "int", minlen="2")
        if cluster.sync_net is not None:
            g.edge(f"{_balancer_id(i)}:sync", "sync")
    for i, _ in enumerate(cluster.web_hosts):
        g.edge("int", _host_id(i))
    # Top to bottom: external network, the floating group, the balancers (the master left).
    g.edge("ext", "floating", style="invis")
    g.edge(_balancer_id(0), _balancer_id(1), style="invis")
    for i in range(1, len(cluster.web_hosts)):  # the model's order, left to right
        g.edge(_host_id(i - 1), _host_id(i), style="invis")

    # The group hangs off the balancers: solid to whoever holds it (the master in the model).
    shown_holder = holder if status is not None else cluster.master.name
    for i, b in enumerate(cluster.balancers):
        holds = b.name == shown_holder
        g.edge("floating", _balancer_id(i), dir="forward", weight="10", style="solid" if holds else "dashed",
               color="#b08000" if holds else "#c0c0c0", penwidth="2.5" if holds else "1",
               label="holds" if holds else "takes over", fontcolor="#805000")

    # heartbeat links, one per link; state sync if enabled
    b0, b1 = cluster.balancers
    port_of = {"internal": "int", "external": "ext"}
    interface_of = {"internal": b0.internal_interface, "external": b0.external_interface}
    for link in cluster.heartbeat.links:
        label = f"heartbeat {cluster.heartbeat.media} on {interface_of[link]}"
        colour = "#c04000"
        if status is not None:
            seen = [by_name[b.name].links.get(getattr(b, f"{link}_interface")) for b in cluster.balancers
                    if by_name[b.name].reachable and by_name[b.name].heartbeat == "running"]
            if seen and all(state == "up" for state in seen):
                label += ": up"
            else:
                label += ": " + ("/".join(str(state or "unknown") for state in seen) if seen else "unknown")
                colour = PROBLEM
        g.edge(f"{_balancer_id(0)}:{port_of[link]}:e", f"{_balancer_id(1)}:{port_of[link]}:w", label=label,
               color=colour, fontcolor=colour, style="bold", dir="both", arrowsize="0.6", constraint="false")
    if cluster.state_sync.enabled:
        port = "sync" if cluster.sync_net is not None else "int"
        link = cluster.sync_link(b0)
        g.edge(f"{_balancer_id(0)}:{port}:e", f"{_balancer_id(1)}:{port}:w", dir="both", arrowsize="0.6",
               label=f"state sync on {link.interface}: IPVS (syncid {cluster.state_sync.syncid}), "
                     f"conntrackd udp/{cluster.state_sync.conntrackd_port}",
               color="#7030a0", fontcolor="#7030a0", style="dashed", constraint="false")

    # each site to the web hosts' addresses that serve it
    for i, vs in enumerate(cluster.virtual_servers()):
        colour = SITE_COLOURS[i % len(SITE_COLOURS)]
        for k, (h, _) in enumerate(vs.reals):
            attrs = {"dir": "forward", "color": colour, "arrowsize": "0.7"}
            if status is not None:
                _, style, _ = REAL_STATES.get(real_state[(vs.site.name, h.name)].state, REAL_STATES["unknown"])
                attrs["style"] = style
                if style != "solid":
                    attrs["color"] = "#a0a0a0"
            g.edge(f"floating:{_site_port(i)}:s", f"{_host_id(k)}:s{i}", **attrs)

    if status is not None and status.problems:
        rows = ['<tr><td align="left"><b>problems</b></td></tr>']
        rows += [f'<tr><td align="left"><font color="{PROBLEM}">{_e(p)}</font></td></tr>' for p in status.problems]
        g.node("problems", _table(rows, cellborder="0", bgcolor="#fff0f0"))
    return g


def with_source(svg: str, source: str) -> str:
    """The SVG with the DOT source it was drawn from in a <metadata> element."""
    match = re.search(r"<svg\b[^>]*>", svg)
    if match is None:
        raise DiagramError("Graphviz printed no <svg> element")
    element = f'\n<metadata id="{METADATA_ID}">{html.escape(source, quote=False)}</metadata>'
    return svg[:match.end()] + element + svg[match.end():]


def source_of(svg: str) -> str | None:
    """The DOT source an SVG written here carries (None if it carries none)."""
    match = re.search(rf'<metadata id="{METADATA_ID}">(.*?)</metadata>', svg, re.S)
    return html.unescape(match.group(1)) if match else None


def render(graph: graphviz.Digraph, fmt: str) -> bytes:
    """The picture in `fmt` (FORMATS); an SVG carries its DOT source."""
    if fmt == "dot":
        return graph.source.encode()
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DiagramError("Graphviz's `dot` is not installed: apt-get install graphviz (bin/setup does)") from None
    except graphviz.CalledProcessError as error:
        raise DiagramError(f"Graphviz's dot failed: {(error.stderr or b'').decode(errors='replace').strip()}") from None
    if fmt == "svg":
        data = with_source(data.decode(), graph.source).encode()
    return data


def load(inventory: str | Path) -> Cluster:
    """INVENTORY's model for a picture: the heartbeat secret is never drawn, so a
    placeholder stands in when none is configured (a newcomer draws without one)."""
    if os.environ.get(SECRET_ENV) or os.environ.get(SECRET_FILE_ENV):
        return load_cluster(inventory)
    os.environ[SECRET_ENV] = PLACEHOLDER_SECRET
    try:
        return load_cluster(inventory)
    finally:
        os.environ.pop(SECRET_ENV, None)


def target(path: str | Path) -> tuple[Path, str]:
    """(path, format) of an output file, or a DiagramError naming what is wrong with it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DiagramError(f"{path}: unknown picture format {path.suffix or '(no suffix)'!r}: "
                           f"name the file .{', .'.join(FORMATS)}")
    if path.is_dir():
        raise DiagramError(f"{path}: is a directory; name the picture's file")
    if not path.parent.is_dir():
        raise DiagramError(f"{path}: no such directory {str(path.parent)!r}")
    return path, fmt


def write(cluster: Cluster, path: str | Path, status: live.ClusterStatus | None = None) -> Path:
    """Draw the cluster into `path` (its suffix names the format), written beside it and
    renamed over it: a reader never sees half a picture."""
    path, fmt = target(path)
    folder = path.parent
    data = render(build(cluster, status), fmt)
    staged = None
    try:
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{path.name}.", delete=False) as staged:
            staged.write(data)
        os.chmod(staged.name, 0o644)
        os.replace(staged.name, path)
    except OSError as error:
        if staged is not None and os.path.exists(staged.name):
            os.unlink(staged.name)
        raise DiagramError(f"{path}: cannot write: {error.strerror or error}") from None
    return path
