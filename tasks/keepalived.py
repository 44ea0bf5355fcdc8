"""keepalived (engine "keepalived"): VRRP moves the floating addresses, its checker keeps IPVS loaded."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server, systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks import migration
from tasks.engines import other_engine_off
from tasks.facts import (InterfaceAddresses, KeepalivedApplied, KeepalivedHold, KeepalivedMigrateDropin, fact, on_host,
                         unit_off, unit_state)
from tasks.migration import Migration
from tasks.operations import only_model_addresses, only_model_ipvs_services, sha1_of, unit
from tasks.rendered import put

KEEPALIVED_CHECK = render.KEEPALIVED_CHECK  # keepalived's own check of a file, bounded


@deploy("keepalived")
def keepalived(cluster: Cluster, balancer: Balancer, migrating: Migration | None = None):
    """keepalived runs on both balancers, enabled at boot, with the model's
    keepalived.conf: one VRRP instance carrying every floating address, and a
    health-checked IPVS virtual server per site (so IPVS is loaded on the node that
    takes over). lvsha's program (notify, track scripts), lvsha-drain and
    conntrackd's primary/backup script are in place before the files that name them.
    keepalived runs with the file lvsha-drain derives from it before every start and
    reload (drained real servers at weight 0, checked with keepalived -t), so a drain
    survives the deploy's reload; the record compared is the deployed file's.

    keepalived.conf is uploaded beside the file, checked there with `keepalived -t`
    (any non-zero exit fails the operation and leaves the running file alone), and
    only then renamed over it. A running keepalived is then **reloaded**, never
    restarted: it applies the differences (no address moves, unchanged virtual
    servers keep their connections). It is also reloaded when it runs with another
    file than the one on disk (its drop-in records the file's sha1 at each start and
    reload), such as one a run that died before the reload wrote. A stopped one is
    started with the new file.

    The unit's drop-in keeps keepalived off a node whose firewall did not load and
    restarts it if it dies; a runtime drop-in lvsha-migrate retire left (Restart=no: the
    script was killed while it ended keepalived) is removed before keepalived starts. heartbeat and ldirectord are not installed by this
    engine; where they are, they are stopped and disabled before keepalived starts
    (preflight.check_engine refuses a pair where they run, would restart or are
    enabled, unless the pair is idle: no address carried, no heartbeat running), and
    stay disabled, so a reboot does not start a second engine. What the model no longer has (a
    virtual service, an address) does not outlive it.

    On a pair migrating from heartbeat (`migrating`, tasks/migration.py), keepalived is
    not started on both at once: the migration's steps start it one balancer at a time
    and stop heartbeat and ldirectord; one already running is reloaded as above. The
    node that takes the group from heartbeat in this run gets the handover's
    keepalived.conf (a master-down timer of one advertisement, migration.hands_over_to)
    until the handover's last step gives it the model's again.
    Otherwise no migration's hold outlives it (clear_left_hold).
    """
    # The node taking the group from heartbeat in this run: the handover rendering (tasks/migration.py).
    *helpers, dropin_file, config = render.keepalived_files(cluster, balancer,
                                                            handover=migration.hands_over_to(migrating, balancer))
    for helper in helpers:
        put(helper)  # before keepalived.conf: `keepalived -t` checks the scripts it names
    dropin = put(dropin_file)
    systemd.daemon_reload(name="Reload systemd for keepalived's drop-in", _if=dropin.did_change)
    if fact(KeepalivedMigrateDropin):
        server.shell(name=f"No runtime drop-in of a migration left for keepalived ({render.KEEPALIVED_MIGRATE_DROPIN}: "
                          "systemd restarts keepalived again)",
                     commands=[f"rm -f {render.KEEPALIVED_MIGRATE_DROPIN}", "systemctl daemon-reload"])
    runs = unit_state("keepalived")["running"]
    stale = runs and fact(KeepalivedApplied) != sha1_of(config.content)
    written = put(config, check=KEEPALIVED_CHECK)
    if migrating:
        server.shell(
            name="Reload keepalived for its new configuration",
            commands=["systemctl reload keepalived.service"],
            _if=lambda: runs and (stale or written.did_change()),
        )
        migration.operations(cluster, balancer, migrating)
    else:
        # Stopped (an idle pair's ldirectord: migration.plan) before keepalived starts, and off at boot.
        other_engine_off("keepalived")
        clear_left_hold(cluster, balancer)
        _start_or_reload(written, stale)
    services = [f"TCP {vs.address}" for vs in cluster.virtual_servers()]
    only_model_ipvs_services(name="No IPVS service the model does not have", services=services)
    floating = cluster.floating_ips()
    for interface, network, own in cluster.own_networks(balancer):
        only_model_addresses(name=f"No address on {interface} the model does not have", interface=interface,
                             network=network, keep=own + [ip.cidr for ip in floating if ip.interface == interface])


def clear_left_hold(cluster: Cluster, balancer: Balancer):
    """No migration's hold (render.KEEPALIVED_HOLD_FILE, which keeps keepalived in FAULT
    across reboots) is left on a balancer of a pair no longer migrating: one left set (a
    migration that stopped half-way, an operator's) is cleared when the peer runs neither
    heartbeat nor ldirectord, nor would at boot. When the peer carries every floating
    address and this node is the model's master with auto_failback on, `lvsha failover`'s
    request is set first, as the migration's last step does, so that clearing moves
    nothing (`lvsha failover --to` this node moves the group). A peer on heartbeat is the
    migration's business: refused, naming the hold. Nothing runs when no hold is set."""
    if not fact(KeepalivedHold):
        return
    peer = cluster.peer(balancer)
    with on_host(peer.name):
        states = {s: unit_state(s) for s in migration.OLD_SERVICES}
        addresses = fact(InterfaceAddresses)
    live = [s for s, u in states.items() if u["enabled"] or not unit_off(u)]
    if live:
        raise DeployError(f"{host.name}: the migration's hold is set on {balancer.name} ({render.KEEPALIVED_HOLD_FILE}: "
                          f"keepalived there stays in FAULT), and {peer.name} runs {' and '.join(live)} or starts it "
                          f"at boot: clearing it would let {balancer.name} take addresses heartbeat holds. Nothing "
                          f"was changed. See docs/engines.md#migrating.")
    floating = cluster.floating_ips()
    peer_carries = all(ip.cidr in addresses.get(ip.interface, []) for ip in floating)
    yields = peer_carries and cluster.heartbeat.auto_failback and balancer.name == cluster.master.name
    program = render.KEEPALIVED_PROGRAM
    server.shell(name=f"The migration's hold left on {balancer.name} cleared ({peer.name} runs no heartbeat)"
                 + (f": it yields to {peer.name} (`lvsha failover --to {balancer.name}` moves the group)" if yields
                    else ""),
                 commands=[*([f"{program} failover 1"] if yields else []), f"{program} hold 0"])


def _start_or_reload(written, stale):
    """keepalived running and enabled, reloaded for a new file."""
    started = unit(name="keepalived runs on both balancers, enabled at boot", service="keepalived",
                   running=True, enabled=True)
    server.shell(
        name="Reload keepalived for its new configuration",
        commands=["systemctl reload keepalived.service"],
        # One just started has read the new file already.
        _if=lambda: not started.did_change() and (stale or written.did_change()),
    )
