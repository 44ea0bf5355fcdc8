"""A simulated Debian host that answers pyinfra facts (unit tier only)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pyinfra.operations.apt import APT_UPDATE_FILENAME

from lvsha import ifupdown, render
from tests.deploy.harness import UnknownFact
from tasks.kernel import _sysctls
from tasks.packages import WEB_SERVER_PACKAGES, balancer_packages

NOW = datetime(2026, 11, 26, 12, 0, 0)


@dataclass
class Machine:
    hostname: str
    distro: tuple = ("Debian", 12)
    files: dict = field(default_factory=dict)  # path -> (content, mode int)
    links: dict = field(default_factory=dict)  # path -> target
    packages: set = field(default_factory=set)
    modules: set = field(default_factory=set)
    sysctls: dict = field(default_factory=dict)
    running: dict = field(default_factory=dict)  # "x.service" -> bool
    enabled: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)  # "x.service" -> SubState, where not "running"/"dead" as `running` says
    # "x.service" -> ActiveState, where not "active"/"inactive" as `running` says ("failed" as `states` says)
    actives: dict = field(default_factory=dict)
    addresses: dict = field(default_factory=lambda: {"lo": ["127.0.0.1/8"]})
    routes: list = field(default_factory=list)
    ssh: dict | None = None
    apt_updated: datetime | None = None
    owners: dict = field(default_factory=dict)  # path -> user, when not root
    applied: dict = field(default_factory=dict)  # what lvsha-applied show prints, parsed
    ipvs: list = field(default_factory=list)  # "TCP 10.0.0.1:0"
    loads: list = field(default_factory=list)  # each fact loaded, in order: one SSH round trip each on a real host
    keepalived_applied: str | None = None  # the sha1 keepalived's drop-in recorded (engine keepalived)
    hold: bool = False  # the migration's hold is set (/var/lib/lvsha/vrrp-hold non-zero)
    migrate_dropin: bool = False  # lvsha-migrate retire's runtime drop-in is left

    def put(self, rendered):
        self.files[rendered.path] = (rendered.content, int(rendered.mode[1:]))

    def dirs(self):
        found = {"/etc", "/tmp"}
        for path in list(self.files) + list(self.links):
            parts = path.split("/")[1:-1]
            for i in range(1, len(parts) + 1):
                found.add("/" + "/".join(parts[:i]))
        return found

    def fact(self, name, kw):
        self.loads.append(name)
        if name == "FactBundle":
            return {request: self._answer(request.fact.__name__, request.kwargs) for request in kw["requests"]}
        return self._answer(name, kw)

    def _answer(self, name, kw):
        path = kw.get("path")
        if name == "File":
            if path == APT_UPDATE_FILENAME:
                return {"mtime": self.apt_updated, "mode": 644} if self.apt_updated else None
            if path in self.files:
                content, mode = self.files[path]
                return {"mode": mode, "user": self.owners.get(path, "root"), "group": "root", "size": len(content),
                        "mtime": NOW}
            return None
        if name == "Directory":
            return {"mode": 755, "user": "root", "group": "root"} if path in self.dirs() else None
        if name == "Link":
            return {"link_target": self.links[path], "user": "root", "group": "root"} if path in self.links else None
        if name == "Sha1File":
            return hashlib.sha1(self.files[path][0].encode()).hexdigest() if path in self.files else None
        if name == "FileContents":
            return self.files[path][0].splitlines() if path in self.files else None
        if name == "TmpDir":
            return "/tmp"
        if name == "Date":
            return NOW
        if name == "DebPackages":  # apt.packages's own read
            return {p: {"1.0"} for p in self.packages}
        if name == "InstalledPackages":
            return {p for p in kw["names"] if p in self.packages}
        if name == "LoadedModules":
            return set(self.modules)
        if name == "Sysctl":
            return {k: self.sysctls[k] for k in kw["keys"] if k in self.sysctls}
        if name == "UnitStates":
            return {unit: {"running": self.running.get(unit, False), "enabled": self.enabled.get(unit, False),
                           "state": self.states.get(unit, "running" if self.running.get(unit) else "dead"),
                           "active": self.actives.get(unit, "active" if self.running.get(unit) else
                                                      "failed" if self.states.get(unit) == "failed" else "inactive")}
                    for unit in kw["units"] if unit in self.running or unit in self.enabled or unit in self.states}
        if name == "OsRelease":
            return {"ID": self.distro[0].lower(), "NAME": self.distro[0], "VERSION_ID": str(self.distro[1])}
        if name == "Hostname":
            return self.hostname
        if name == "InterfaceAddresses":
            return {k: list(v) for k, v in self.addresses.items()}
        if name == "DefaultRoutes":
            return list(self.routes)
        if name == "SshConnection":
            return self.ssh
        if name == "ManagedFiles":
            return {path: {"sha1": hashlib.sha1(content.encode()).hexdigest(), "mode": str(mode),
                           "user": self.owners.get(path, "root"), "group": "root"}
                    for path, (content, mode) in self.files.items() if path.rsplit("/", 1)[0] in kw["directories"]} | {
                    path: {"link": target} for path, target in self.links.items()
                    if path.rsplit("/", 1)[0] in kw["directories"]}
        if name == "IpvsVirtualServices":
            return list(self.ipvs)
        if name == "LdirectordServices":
            content = self.files.get(render.LDIRECTORD_CF, ("", 0))[0]
            return [line.split("=", 1)[1].split()[0] for line in content.splitlines() if line.startswith("virtual=")]
        if name == "Applied":
            return {k: list(v) for k, v in self.applied.items()}
        if name == "KeepalivedApplied":
            return self.keepalived_applied
        if name == "KeepalivedHold":
            return self.hold
        if name == "KeepalivedMigrateDropin":
            return self.migrate_dropin
        if name == "IfupdownFiles":
            return {path: content for path, (content, _) in sorted(self.files.items())
                    if path == ifupdown.INTERFACES or path.startswith(ifupdown.INTERFACES_D + "/")}
        raise UnknownFact(f"the simulated host has no answer for fact {name} {kw}")


def _service(machine, name, running, enabled):
    machine.running[f"{name}.service"] = running
    machine.enabled[f"{name}.service"] = enabled


def converged_balancer(cluster, balancer) -> Machine:
    """A balancer exactly as the deploy leaves it (the passive one: no floating IPs;
    ldirectord runs on both)."""
    m = Machine(hostname=balancer.name)
    for f in render.balancer_files(cluster, balancer):
        m.put(f)
    m.packages |= set(balancer_packages(cluster))
    m.apt_updated = NOW - timedelta(minutes=5)
    m.modules |= {"ip_vs", "nf_conntrack", *cluster.scheduler_modules()}
    m.sysctls.update({"net.ipv4.ip_forward": 1, **_sysctls(render.kernel_files(cluster)[0].content)})
    keepalived = cluster.engine == "keepalived"
    if not keepalived:
        _service(m, "ldirectord", True, True)
    m.ipvs = [f"TCP {vs.address}" for vs in cluster.virtual_servers()]
    if cluster.state_sync.enabled:
        _service(m, "conntrackd", True, True)
        _service(m, "lvsha-ipvs-sync", True, True)
    if keepalived:
        _service(m, "keepalived", True, True)
        m.keepalived_applied = hashlib.sha1(render.keepalived_conf(cluster, balancer).content.encode()).hexdigest()
    else:
        _service(m, "heartbeat", True, True)
    _service(m, "systemd-networkd", True, True)
    if cluster.monitoring.enabled:
        _service(m, "prometheus-node-exporter", True, True)
        m.running["lvsha-metrics.timer"] = m.enabled["lvsha-metrics.timer"] = True
    _service(m, "netfilter-persistent", True, True)
    m.addresses[balancer.external_interface] = [f"{balancer.external_ip}/{cluster.external_net.prefixlen}"]
    m.addresses[balancer.internal_interface] = [f"{balancer.internal_ip}/{cluster.internal_net.prefixlen}"]
    m.ssh = {"client": "10.0.0.99", "client_port": 50000, "server": balancer.external_ip, "server_port": 22}
    # heartbeat runs with the model's files and the model's rulesets are the loaded ones
    conntrackd_conf = [f for f in render.state_sync_files(cluster, balancer) if f.path == render.CONNTRACKD_CONF]
    m.applied = {"conntrackd": render.applied_record(conntrackd_conf)} if keepalived else {
        "heartbeat": render.applied_record(render.heartbeat_files(cluster, balancer)),
        "ldirectord": render.applied_record([render.ldirectord_file(cluster)]),
        "conntrackd": render.applied_record(conntrackd_conf)}
    for family, rules in render.firewall_files(cluster, balancer).items():
        record = render.FIREWALL_RECORDS[family]
        m.applied[record] = render.applied_record([rules]) + [f"{record}-digest"]
        m.applied[f"{record}-now"] = [f"{record}-digest"]
    return m


def converged_web_host(cluster, web_host, web_server=True) -> Machine:
    m = Machine(hostname=web_host.name)
    m.put(render.web_host_network_file(cluster, web_host))
    _service(m, "systemd-networkd", True, True)
    m.addresses[web_host.interface] = [f"{ip}/{cluster.internal_net.prefixlen}" for ip in web_host.internal_ips]
    m.routes = [{"gateway": cluster.internal_gateway, "dev": web_host.interface}]
    m.apt_updated = NOW - timedelta(minutes=5)
    if web_server:
        for rendered in render.web_server_files(cluster, web_host):
            m.put(rendered)
        m.links[render.NGINX_SITE_LINK] = render.NGINX_SITES
        m.packages |= set(WEB_SERVER_PACKAGES)
        _service(m, "nginx", True, True)
        # nginx serves the model's sites file, as recorded after its reload
        m.applied[render.NGINX_RECORD] = render.applied_record([render.web_server_file(cluster, web_host)])
    return m


def fresh(hostname, interfaces) -> Machine:
    """A new Debian 12 install: interfaces up without addresses, nothing of ours."""
    m = Machine(hostname=hostname)
    for interface in interfaces:
        m.addresses[interface] = []
    _service(m, "systemd-networkd", False, False)
    return m
