"""heartbeat owns the floating addresses and ldirectord."""

from pyinfra.api import deploy
from pyinfra.operations import server, systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks.operations import secret_file
from tasks.rendered import put


@deploy("heartbeat")
def heartbeat(cluster: Cluster, balancer: Balancer):
    """ha.cf, haresources (identical on both nodes), authkeys (0600, sha1),
    the resource script that moves the floating addresses and ldirectord.cf
    are in place; Debian's standalone ldirectord unit is disabled and stopped
    so only heartbeat's resource programs IPVS;
    heartbeat is enabled and running, restarted only when its configuration
    changed, one balancer at a time and only once the pair has settled (see
    restart_heartbeat_script), and a running ldirectord is restarted
    when its configuration changed (a reload cannot add or remove virtuals).
    """
    systemd.service(
        name="Disable the standalone ldirectord (heartbeat runs it)",
        service="ldirectord", running=False, enabled=False,
    )
    ha_cf, haresources, authkeys, floating_ips_script = render.heartbeat_files(cluster, balancer)
    # heartbeat runs the script afresh each time: a new version needs no restart.
    put(floating_ips_script)
    changes = [put(ha_cf), put(haresources), secret_file(name=f"Write {authkeys.path}", content=authkeys.content,
                                                          path=authkeys.path)]
    ldirectord_cf = put(render.ldirectord_file(cluster))

    started = systemd.service(name="Enable and start heartbeat", service="heartbeat", running=True, enabled=True)
    server.shell(
        name="Restart heartbeat for its new configuration",
        commands=[restart_heartbeat_script(cluster, balancer)],
        # A heartbeat just started has read the new files already.
        _if=lambda: any(op.did_change() for op in changes) and not started.did_change(),
        _serial=True,
    )
    cf = render.LDIRECTORD_CF
    server.shell(
        name="Restart the running ldirectord for its new configuration",
        commands=[f"if ldirectord {cf} status >/dev/null 2>&1; then ldirectord {cf} restart; fi"],
        _if=ldirectord_cf.did_change,
    )


# A healthy pair settles in seconds; in the TCG lab a restart of the master took up to ~2.5 min.
RESTART_SETTLE_TIMEOUT = 600


def restart_heartbeat_script(cluster: Cluster, balancer: Balancer, timeout: int = RESTART_SETTLE_TIMEOUT) -> str:
    """Shell that restarts heartbeat on `balancer` and returns once this node is steady.

    `systemctl restart` is not enough with heartbeat v1: a node back within a
    second of leaving is not given its resources back by auto_failback, and the
    pair stays on the wrong node (seen in the lab; so does handing over with
    hb_standby first, which auto_failback undoes at once). So, when the peer is
    active: stop (this node's resources go to the peer), give the peer time to
    see this node leave (twice deadtime: a peer that misses the shutdown notice
    declares the node dead only after deadtime), start, and wait until this
    node's `cl_status rscstatus` says "local" (auto_failback) for 8 s. Alone:
    restart and wait for "all". Fails, naming what it saw, after `timeout` s.

    Known gap (lab): after the backup returns, heartbeat on the master may
    still be in its takeover of the backup's (empty) foreign resources and
    report "all" or "transition" for a while, although it serves everything.
    """
    peer = cluster.peer(balancer).name
    hb = cluster.heartbeat
    settled_with_peer = "local" if hb.auto_failback else "local none"
    return f"""set -u
settled() {{  # settled STATE...: `cl_status rscstatus` says one of STATE for 8 s, within {timeout} s
    seen=0; n={timeout // 2}
    while [ $n -gt 0 ]; do
        now=$(cl_status rscstatus 2>/dev/null || echo unreachable)
        case " $* " in *" $now "*) seen=$((seen + 1)); [ $seen -ge 5 ] && return 0 ;; *) seen=0 ;; esac
        sleep 2; n=$((n - 1))
    done
    echo "heartbeat on {balancer.name}: resources '$now' after {timeout} s, expected: $*" >&2
    exit 1
}}
if [ "$(cl_status nodestatus {peer} 2>/dev/null)" = active ]; then
    systemctl stop heartbeat.service  # gives what this node holds to the peer
    sleep {2 * hb.deadtime + hb.keepalive}
    systemctl start heartbeat.service
    settled {settled_with_peer}
else
    systemctl restart heartbeat.service
    settled all
fi"""
