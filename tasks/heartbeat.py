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
    changed (one balancer at a time), and a running ldirectord is restarted
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
    systemd.service(
        name="Restart heartbeat for its new configuration",
        service="heartbeat", running=None, restarted=True,
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
