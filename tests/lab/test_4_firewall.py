"""The balancers' firewall and mail NAT, seen from the client on the external network."""

import subprocess
import textwrap

import pytest

pytestmark = pytest.mark.every_model

PROBE = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.settimeout(float(sys.argv[3]))
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        print("open")
    except ConnectionRefusedError:
        print("refused")
    except (socket.timeout, TimeoutError):
        print("dropped")
    except OSError as e:
        print("error", e)
""")

# One-shot TCP server: answers the first connection with `uname -n`, or prints the peer's address.
ONE_SHOT = textwrap.dedent("""
    import os, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(1)
    s.settimeout(float(sys.argv[3]))
    conn, peer = s.accept()
    if sys.argv[4] == "say-name":
        conn.sendall(os.uname().nodename.encode() + b"\\n")
    else:
        print(peer[0], flush=True)
    conn.close()
""")


def tcp(lab, ip, port, timeout=2):
    return lab.client("python3", "-c", PROBE, ip, str(port), str(timeout), timeout=timeout + 10).stdout.strip()


def test_web_ports_on_every_vip_pass(lab):
    for site in lab.cluster.sites:
        for port in site.ports:
            assert tcp(lab, site.vip, port) == "open", f"{site.vip}:{port}"


@pytest.mark.parametrize("port", [22, 25, 8080])
def test_other_ports_on_vips_are_dropped(lab, port):
    for site in lab.cluster.sites:
        assert tcp(lab, site.vip, port) == "dropped", f"{site.vip}:{port}"


def test_ssh_reaches_only_the_balancers_own_addresses(lab):
    for b in lab.cluster.balancers:
        assert tcp(lab, b.external_ip, 22) == "open", b.name
    for ip in lab.cluster.floating_ips():
        if ip.interface == lab.cluster.master.external_interface:
            assert tcp(lab, str(ip.address), 22) == "dropped", ip.cidr


def test_internal_addresses_are_unreachable_from_outside(lab):
    """Even a client that routes the internal network through the balancer gets nothing."""
    internal, master = str(lab.cluster.internal_net.cidr), lab.cluster.master
    lab.client("ip", "route", "add", internal, "via", master.external_ip)
    try:
        for host in lab.cluster.web_hosts:
            assert tcp(lab, host.internal_ips[0], 80) == "dropped", host.name
        assert tcp(lab, lab.cluster.internal_gateway, 22) == "dropped"
    finally:
        lab.client("ip", "route", "del", internal, "via", master.external_ip)


def test_inbound_mail_reaches_each_host(lab):
    for host in lab.cluster.web_hosts:
        lab.ssh(host.name, f"nohup timeout 60 python3 -c '{ONE_SHOT}' 0.0.0.0 25 50 say-name >/dev/null 2>&1 &")
    for host in lab.cluster.web_hosts:
        lab.ssh(host.name, "for i in $(seq 100); do ss -ltn | grep -q ':25 ' && exit 0; sleep 0.2; done; exit 1")
        reply = lab.client("python3", "-c",
                           f"import socket; s = socket.create_connection(('{host.mail_ip}', 25), timeout=10); "
                           "print(s.recv(100).decode().strip())", timeout=30)
        assert reply.stdout.strip() == host.name, f"{host.mail_ip}:25 -> {reply.stdout!r} {reply.stderr}"


def test_outbound_mail_leaves_from_each_hosts_mail_ip(lab):
    client_ip = lab.state["client"]["address"].split("/")[0]
    for host in lab.cluster.web_hosts:
        listener = subprocess.Popen(
            ["ip", "netns", "exec", lab.state["client"]["netns"], "python3", "-c", ONE_SHOT, client_ip, "25", "30", "print-peer"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lab.ssh(host.name, f"python3 -c \"import socket, time; time.sleep(1); "
                               f"socket.create_connection(('{client_ip}', 25), timeout=10).close()\"")
            out, err = listener.communicate(timeout=40)
        finally:
            listener.kill()
            listener.wait()
        assert out.strip() == host.mail_ip, f"{host.name}: arrived from {out.strip()!r} {err}"
