"""Connection state sync: the kernel's IPVS sync daemons and conntrackd."""

from pyinfra.api import deploy
from pyinfra.operations import server, systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks.heartbeat import runs_stale
from tasks.operations import absent_file, restart_for_new_files, unit
from tasks.rendered import put


@deploy("Connection state sync")
def state_sync(cluster: Cluster, balancer: Balancer):
    """With the model's state sync on, both balancers keep each other's
    connections, so that a takeover carries them on:

    - lvsha-ipvs-sync.service runs both IPVS sync daemons (master and backup)
      on the sync link, enabled at boot, once ldirectord has loaded IPVS
      (lvsha-ipvs-ready, which the ldirectord deploy installs); restarted when
      its unit changed.
    - conntrackd runs with lvsha's configuration (FTFW, unicast to the peer),
      enabled at boot; restarted when its configuration or drop-in changed, or
      when it runs with another file (it asks the peer for its whole table at
      start). Which node commits the states is the engine's: lvsha-conntrackd,
      heartbeat's first resource, or run by keepalived's notify.

    Runs after the ldirectord deploy and before heartbeat is (re)started by the heartbeat deploy; their
    units are ordered before heartbeat.service at boot: a node never takes
    over without them. With state sync off, both are stopped and disabled and
    the unit lvsha wrote is removed.
    """
    if not cluster.state_sync.enabled:
        unit(name="conntrackd stopped and disabled (state sync off)", service="conntrackd",
             running=False, enabled=False)
        unit(name="IPVS sync daemons stopped and disabled (state sync off)", service="lvsha-ipvs-sync",
             running=False, enabled=False)
        removed = [absent_file(name=f"No {path}", path=path)
                   for path in (render.IPVS_SYNC_UNIT, render.CONNTRACKD_DROPIN)]
        systemd.daemon_reload(name="Reload systemd for the removed units",
                              _if=lambda: any(op.did_change() for op in removed))
        return
    files = {f.path: f for f in render.state_sync_files(cluster, balancer)}
    config, dropin, sync_unit = (files[p] for p in (render.CONNTRACKD_CONF, render.CONNTRACKD_DROPIN, render.IPVS_SYNC_UNIT))
    conntrackd_stale = runs_stale("conntrackd", [config])
    config_written, dropin_written, unit_written = put(config), put(dropin), put(sync_unit)
    systemd.daemon_reload(name="Reload systemd for the state sync units",
                          _if=lambda: dropin_written.did_change() or unit_written.did_change())

    conntrackd = unit(name="conntrackd runs on both balancers, enabled at boot", service="conntrackd",
                      running=True, enabled=True)
    server.shell(
        name="Restart conntrackd for its new configuration",
        commands=["systemctl restart conntrackd.service"],
        # One just started has read the new file already.
        _if=lambda: not conntrackd.did_change()
        and (conntrackd_stale or config_written.did_change() or dropin_written.did_change()),
    )
    daemons = unit(name="IPVS sync daemons run on both balancers, enabled at boot", service="lvsha-ipvs-sync",
                   running=True, enabled=True)
    restart_for_new_files(daemons, "lvsha-ipvs-sync.service", "Restart the IPVS sync daemons for their new unit",
                          unit_written.did_change)
