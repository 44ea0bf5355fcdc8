"""Long-lived connections through the lab, held across a takeover (stateful failover).

`LongLived(lab)` opens, from the client side, at once:
  - an HTTP keep-alive connection to the first site's VIP, a request every 200 ms,
  - a connection on which the web server streams a body (nginx, rate limited),
  - new connections every second to the same VIP (which web host answers: persistence),
  - an SMTP-like session through the first web host's mail IP (inbound DNAT),
  - a connection a web host opens to the client (outbound, through its mail IP),
all from tests/lab/clients/sessions.py in the client netns, against nginx and
tests/lab/clients/peer.py on the web hosts. `result()` says how each fared.

The web hosts get, for the time of the test only, an nginx server block for
the Host name `lvsha-lab` on the first site's address (the site's own block
stays the default there): / names the web host, /stream sends a large file at
32 KB/s, and a keep-alive connection is not closed after nginx's default 1000
requests (200 s at 5 a second).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from lvsha.lab import LabError, wait_until

CLIENTS = Path(__file__).parent / "clients"
HOST_NAME = "lvsha-lab"
# After lvsha-sites in nginx's include order: the site's own block stays its address's default server.
NGINX_CONF = "/etc/nginx/sites-enabled/zz-lvsha-lab-sessions"
STREAM_DIR = "/var/lib/lvsha-lab"
PEER = "/root/lvsha-lab-peer.py"
NGINX_PID = "/run/nginx.pid"  # Debian's nginx.conf: pid /run/nginx.pid
OUTBOUND_PORT = 8025
SECONDS = 900  # the peers' own end, should a test die without cleaning up
# A connection is broken by a reset, an end, or this long without an answer. TCP's
# retransmissions back off exponentially (0.2, 0.4, 0.8 ... s): an outage of 16 s is
# a stall of about 26 s for the client, one of 26 s about 51 s.
TIMEOUT = 120
KINDS = ("http", "stream", "probe", "smtp", "outbound")


def _nginx_block(address: str) -> str:
    return f"""# lvsha lab test (tests/lab/sessions.py): removed after the test
server {{
	listen {address}:80;
	server_name {HOST_NAME};
	keepalive_requests 1000000;
	keepalive_timeout 900s;
	location = / {{
		default_type text/plain;
		return 200 "{HOST_NAME} served by $hostname\\n";
	}}
	location = /stream {{
		root {STREAM_DIR};
		try_files /stream.bin =404;
		limit_rate 32k;
		add_header X-Served-By $hostname;
	}}
}}
"""


def fresh_client_address(lab, index: int) -> str:
    """The index-th free address of the external network from its low end: a client
    no test has used, so that it has no persistence template yet (the lab's other
    extra clients are taken from the high end)."""
    used = {str(a) for a in lab.cluster.used_addresses()} | {lab.state["client"]["address"].split("/")[0]}
    return [str(ip) for ip in lab.cluster.external_net.iter_hosts() if str(ip) not in used][index]


class LongLived:
    """`source`: the client address the sessions come from (added to the client
    side for the time of the test)."""

    def __init__(self, lab, source: str):
        self.lab = lab
        self.cluster = lab.cluster
        self.site = self.cluster.sites[0]
        self.mail_host = self.cluster.web_hosts[0]
        self.outbound_host = self.cluster.web_hosts[-1]
        self.client_ip = lab.state["client"]["address"].split("/")[0]
        self.source = source
        self.source_cidr = f"{source}/{self.cluster.external_net.prefixlen}"
        self.state_file = Path("/tmp") / f"lvsha-lab-sessions-{self.cluster.name}.json"
        self.process: subprocess.Popen | None = None
        self.final: dict | None = None

    # ---- setup and teardown ------------------------------------------------
    def __enter__(self) -> LongLived:
        self.lab.client("ip", "addr", "add", self.source_cidr, "dev", "eth0")
        peer = (CLIENTS / "peer.py").read_text()
        for index, host in enumerate(self.cluster.web_hosts):
            address = host.internal_ips[0]
            self.lab.ssh(host.name, f"cat > {PEER}", input=peer)
            self.lab.ssh(host.name, f"cat > {NGINX_CONF}", input=_nginx_block(address))
            self.lab.ssh(host.name, f"mkdir -p {STREAM_DIR} && truncate -s 1G {STREAM_DIR}/stream.bin")
            self._reload_nginx(host.name)
        self.lab.ssh(self.mail_host.name,
                     f"nohup python3 {PEER} listen 0.0.0.0 25 {SECONDS} > /tmp/lvsha-lab-peer.log 2>&1 &")
        self.lab.ssh(self.mail_host.name, "for i in $(seq 50); do ss -ltn | grep -q ':25 ' && exit 0; sleep 0.2; done; exit 1")
        vip = self.site.vip
        self.state_file.unlink(missing_ok=True)
        self.process = self.lab.client_program(
            "sessions", "--state", self.state_file, "--interval", "0.2", "--timeout", TIMEOUT, "--source", self.source,
            "--http", vip, HOST_NAME, "--stream", vip, HOST_NAME, "/stream", "--probe", vip, HOST_NAME,
            "--smtp", self.mail_host.mail_ip, "--outbound", self.client_ip, OUTBOUND_PORT)
        self.lab.ssh(self.outbound_host.name, f"nohup python3 {PEER} connect {self.client_ip} {OUTBOUND_PORT} {SECONDS} "
                                              "> /tmp/lvsha-lab-peer-out.log 2>&1 &")
        line = self.process.stdout.readline()
        assert line.strip() == "READY", f"sessions did not start: {line!r}"
        state = self.state()
        broken = {c["kind"]: c["error"] for c in state["connections"] if not c["established"] or c["error"]}
        assert not broken, f"connections that did not open: {broken}"
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.result()
        self.lab.client("ip", "addr", "del", self.source_cidr, "dev", "eth0")
        for host in self.cluster.web_hosts:
            self.lab.ssh(host.name, f"pkill -f {PEER}; rm -f {NGINX_CONF} {PEER}; rm -rf {STREAM_DIR}; "
                                    "systemctl reload nginx", check=False)

    def _nginx_workers(self, host: str, check: bool = False) -> dict[int, str]:
        """{pid: title} of the processes nginx's master runs on `host` ({} when it cannot
        be read; with `check`, an error naming what was read instead)."""
        out = self.lab.ssh(host, f'ps -o pid=,args= --ppid "$(cat {NGINX_PID})"', check=check).stdout
        workers = {int(pid): title for pid, _, title in (line.strip().partition(" ") for line in out.splitlines())
                   if pid.isdigit()}
        assert workers or not check, f"no nginx worker on {host} (its master: {NGINX_PID}): {out!r}"
        return workers

    def _reload_nginx(self, host: str) -> None:
        """nginx on `host` reloaded, and the reload in effect: every worker is one started
        since, none of the old ones left (not even shutting down). nginx reads its
        configuration after `systemctl reload` returns, seconds at 250 sites; meanwhile its
        old workers accept connections, and close them when their shutdown comes: the lab
        saw the held connections end (EOF) 2.7 s after they opened, with no takeover yet."""
        before = set(self._nginx_workers(host, check=True))  # none read would pass at once
        self.lab.ssh(host, "nginx -t -q && systemctl reload nginx")
        seen: dict[int, str] = {}

        def in_effect() -> bool:
            seen.clear()
            seen.update(self._nginx_workers(host))
            return bool(seen) and not before & set(seen) and not any("shutting down" in t for t in seen.values())

        try:
            wait_until(in_effect, 120, interval=0.5, what=f"nginx on {host} to run its new configuration only "
                                                          f"(every worker new, none of {sorted(before)} left)")
        except LabError as error:
            raise LabError(f"{error}; its workers at the last look: {seen}") from None

    # ---- reading ---------------------------------------------------------------
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def connections(self, state: dict | None = None) -> dict[str, dict]:
        return {c["kind"]: c for c in (state or self.state())["connections"]}

    def result(self) -> dict[str, dict]:
        """Stops the client; every connection's final record by kind."""
        if self.final is None:
            self.process.send_signal(signal.SIGTERM)
            out, _ = self.process.communicate(timeout=30)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert lines, f"sessions printed no result: {out[-2000:]}"
            self.final = json.loads(lines[-1][len("RESULT "):])
        return self.connections(self.final)

    def wait_synced_to(self, balancer: str, timeout: float = 30) -> float:
        """Wait until `balancer` (the standby) holds the connections it would take
        over: the IPVS connections of the HTTP and stream sessions (IPVS sync), the
        mail session's and the outbound connection's NAT states (conntrackd's
        external cache on heartbeat; on keepalived the kernel's own table, which
        conntrackd writes them into: templates/conntrackd.conf.j2)."""
        started = time.monotonic()
        now = self.connections()
        ports = [now["http"]["local_port"], now["stream"]["local_port"]]
        mail_port = now["smtp"]["local_port"]

        states = "cat /proc/net/nf_conntrack" if self.lab.engine == "keepalived" else "conntrackd -e"

        def synced():
            out = self.lab.ssh(balancer, f"ipvsadm -Lnc; echo @@; {states}", check=False).stdout
            ipvs, _, conntrack = out.partition("@@")
            return (all(f"{self.source}:{port} " in ipvs for port in ports)
                    and f"sport={mail_port} " in conntrack and f"dport={OUTBOUND_PORT} " in conntrack)

        wait_until(synced, timeout, interval=1, what=f"{balancer} to hold the sessions' connection states")
        return time.monotonic() - started
