"""ldirectord keeps IPVS loaded on both balancers; heartbeat owns the floating addresses."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import FileContents
from pyinfra.operations import server, systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks import migration
from tasks.engines import other_engine_off
from tasks.facts import (Applied, InterfaceAddresses, IpvsVirtualServices, LdirectordServices, fact, managed_state,
                         on_host, unit_state)
from tasks.migration import Migration
from tasks.operations import (
    absent_file,
    only_model_addresses,
    only_model_ipvs_services,
    private_file,
    secret_file,
    sha1_of,
    unit,
)
from tasks.rendered import is_as_rendered, put


# ldirectord's own reading of the staged ldirectord.cf, `{}` (bounded by the script).
LDIRECTORD_CHECK = f"{render.LDIRECTORD_CHECK_SCRIPT} {{}}"


def running(service: str) -> bool:
    return unit_state(service)["running"]


def runs_stale(service: str, rendered: list) -> bool:
    """`service` is running with other files than `rendered` (lvsha-applied's record,
    compared file by file, as far as `rendered` goes): written by a run that died
    before the restart, or edited and restarted by hand."""
    recorded = fact(Applied).get(service, [])
    return running(service) and recorded[:len(rendered)] != render.applied_record(rendered)


ROTATION = (
    ("accept", "both nodes accept the new key as well"),
    ("sign", "sign with the new key"),
    ("bridge", "drop the old key"),
    ("resign", "sign with the new key's final index"),
    ("final", "the new key alone, as rendered"),
)


def key_rotation(cluster: Cluster, balancer: Balancer) -> tuple[bool, bool]:
    """(whether `balancer` rotates heartbeat's key in this run, whether the pair's
    heartbeat restarts come before the rotation), decided for the pair from both
    nodes' facts, so that both balancers run the same operations in the same order.

    A rotation is due when a node whose heartbeat runs has another authkeys than
    the model's. Every node whose heartbeat runs then takes part, one a failed
    run left done or a phase ahead included: lvsha-authkeys does nothing where a
    node has got that far, so the two are never more than a phase apart (a node
    rotated alone would sign with a key index its peer does not have for two
    phases). A node whose heartbeat is stopped gets the file written and is
    started with it after its peer's rotation.

    The restarts come first when a running node's heartbeat runs an ha.cf or
    haresources other than the one on disk (lvsha-applied; a haresources whose
    floating addresses alone differ is not other: runs_as), such as one a run
    that died before the restart wrote: the rotation's SIGHUP makes heartbeat
    reread ha.cf too, and a changed one turns the reread into heartbeat's own
    restart (it execs itself), with none of lvsha-heartbeat-restart's care.
    Restarted first by the usual path (the backup first, each waiting for the
    pair to settle), with the authkeys both nodes share, the pair then rotates
    with the files it runs. The rotation is not folded into that restart: a
    node restarted with the new key alone could not authenticate its peer and
    would take the group over. Otherwise the rotation comes first, before
    anything heartbeat rereads changes (an ha.cf new in this run is written and
    restarted for after it). A pair that would need both orders, its restarts
    first and a stopped node started with the new key only after its peer's
    rotation, is refused (the restart waits for the stopped node to serve)."""
    nodes = {}
    for b in cluster.balancers:
        with on_host(b.name):
            ha_cf, haresources, authkeys = render.heartbeat_files(cluster, b)
            runs = running("heartbeat")
            on_disk = [(managed_state(f.path) or {}).get("sha1") for f in (ha_cf, haresources)]
            recorded = fact(Applied).get("heartbeat", [])
            differs = (managed_state(authkeys.path) or {}).get("sha1") != sha1_of(authkeys.content)
        nodes[b.name] = (runs, differs, runs and not runs_as(cluster, b, recorded, on_disk))
    due = any(runs and differs for runs, differs, _ in nodes.values())
    restart_first = due and any(pending for _, _, pending in nodes.values())
    stopped = [name for name, (runs, _, _) in nodes.items() if not runs]
    if restart_first and stopped:
        raise DeployError(
            f"{host.name}: the heartbeat secret changes while heartbeat is stopped on {', '.join(stopped)} and runs "
            "on its peer with an ha.cf or haresources other than those on disk: the restart needs the stopped node "
            "serving, the new key needs its peer rotated first. Start heartbeat there and deploy again.")
    return due and nodes[balancer.name][0], restart_first


def haresources_change(cluster: Cluster, balancer: Balancer) -> str | None:
    """How the haresources on `balancer` differs from the model's: None (its content is
    the model's), "addresses" (only in the floating addresses it names: the same group
    owner and the same other resources, render.haresources_shape) or "group" (anything
    else, or no file). heartbeat reads haresources at every takeover and release: a
    change of the addresses alone is applied without a restart (lvsha-floating-ips
    reload on the node carrying the group: see heartbeat), any other needs one."""
    _, haresources, _ = render.heartbeat_files(cluster, balancer)
    with on_host(balancer.name):
        if (managed_state(haresources.path) or {}).get("sha1") == sha1_of(haresources.content):
            return None
        lines = fact(FileContents, path=haresources.path)
    if lines is None:
        return "group"
    same = render.haresources_shape("\n".join(lines)) == render.haresources_shape(haresources.content)
    return "addresses" if same else "group"


def runs_as(cluster: Cluster, balancer: Balancer, recorded: list, want: list) -> bool:
    """heartbeat on `balancer`, recorded (lvsha-applied) as started with `recorded`
    (the sha1 of ha.cf, haresources, authkeys), runs as it would with `want` (as far
    as `want` goes): the same files, or a haresources whose floating addresses alone
    differ, where the two are the one on disk and the model's (haresources_change):
    heartbeat reads haresources at each takeover and release, and this run writes the
    model's and records it without a restart."""
    recorded = recorded[:len(want)]
    if recorded == want:
        return True
    if len(recorded) != len(want) or len(want) < 2 or recorded[:1] + recorded[2:] != want[:1] + want[2:]:
        return False
    _, haresources, _ = render.heartbeat_files(cluster, balancer)
    with on_host(balancer.name):
        on_disk = (managed_state(haresources.path) or {}).get("sha1")
    return ({recorded[1], want[1]} == {on_disk, sha1_of(haresources.content)}
            and haresources_change(cluster, balancer) == "addresses")


def heartbeat_runs_stale(cluster: Cluster, balancer: Balancer, rotate: bool) -> bool:
    """heartbeat runs on `balancer` with other files than the model's ha.cf, haresources
    and authkeys (lvsha-applied's record, compared file by file; authkeys left out
    while the key is rotated in place), such as files written by a run that died
    before the restart, or edited and restarted by hand. Not stale: a haresources
    whose floating addresses alone differ from the model's, when heartbeat runs with
    the one on disk (runs_as)."""
    ha_cf, haresources, authkeys = render.heartbeat_files(cluster, balancer)
    want = render.applied_record([ha_cf, haresources] if rotate else [ha_cf, haresources, authkeys])
    with on_host(balancer.name):
        if not running("heartbeat"):
            return False
        recorded = fact(Applied).get("heartbeat", [])
    return not runs_as(cluster, balancer, recorded, want)


def restart_due(cluster: Cluster, balancer: Balancer) -> bool:
    """Whether heartbeat on `balancer` restarts in this run, read from its facts
    while the run is planned: the condition of its restart operation (see
    heartbeat), read here on either node, so that its peer knows it too.

    heartbeat runs and is enabled (one started or enabled in this run is not
    restarted), and ha.cf or authkeys (not while the key is rotated in place) is
    not as rendered, or haresources differs from the model's in more than its
    floating addresses (haresources_change), or it runs with other files than the
    model's (heartbeat_runs_stale). A change of the floating addresses alone (a
    site added or removed, a mail address) restarts nothing."""
    rotate, _ = key_rotation(cluster, balancer)
    with on_host(balancer.name):
        state = unit_state("heartbeat")
        if not (state["running"] and state["enabled"]):
            return False
        ha_cf, _, authkeys = render.heartbeat_files(cluster, balancer)
        new_ha_cf = not is_as_rendered(ha_cf.path, ha_cf.content, ha_cf.mode)
        new_secret = not rotate and (managed_state(authkeys.path) or {}).get("sha1") != sha1_of(authkeys.content)
    return bool(new_ha_cf or new_secret or haresources_change(cluster, balancer) == "group"
                or heartbeat_runs_stale(cluster, balancer, rotate))


def carries_part_of_the_group(cluster: Cluster, balancer: Balancer) -> bool:
    """`balancer` has some of the model's floating addresses as the model gives them,
    not all (from its facts): the node carrying the group lacks an address the model
    added (a run that died before adding it, or one removed by hand)."""
    with on_host(balancer.name):
        addresses = fact(InterfaceAddresses)
    held = [ip for ip in cluster.floating_ips() if ip.cidr in addresses.get(ip.interface, [])]
    return 0 < len(held) < len(cluster.floating_ips())


def rotate_authkeys(authkeys):
    """Change heartbeat's key on a running pair without a moment where the two
    nodes cannot authenticate each other: five phases (files/heartbeat/lvsha-authkeys),
    each its own operation, so both balancers finish one before either starts
    the next. The new file is staged 0600 beside authkeys."""
    secret_file(name="Stage the new authkeys", content=authkeys.content, path=f"{authkeys.path}.lvsha-new")
    for turn, (phase, what) in enumerate(ROTATION, start=1):
        server.shell(name=f"Rotate the heartbeat key {turn}/{len(ROTATION)}: {what}", commands=[f"{render.AUTHKEYS_SCRIPT} {phase}"])


def ipvs_drift(cluster: Cluster) -> list[str]:
    """The model's virtual services (by address) that a running ldirectord's IPVS
    table lacks although the file it runs names them: drift (the node would serve
    nothing of that site after a takeover), repaired by a restart. Known only when it
    runs the file on disk (lvsha-applied's record); a service that file does not name
    yet (a site added in this run) is not drift: the reload adds it."""
    if not running("ldirectord"):
        return []
    recorded = fact(Applied).get("ldirectord", [])
    if recorded[:1] != [(managed_state(render.LDIRECTORD_CF) or {}).get("sha1")]:
        return []  # it runs another file: the reload applies the model's, its wait checks the table
    table, named = fact(IpvsVirtualServices), set(fact(LdirectordServices))
    return [vs.address for vs in cluster.virtual_servers() if f"TCP {vs.address}" not in table and vs.address in named]


@deploy("ldirectord")
def ldirectord(cluster: Cluster, balancer: Balancer):
    """ldirectord runs as Debian's ldirectord.service on both balancers, enabled
    at boot, with the drained real servers at weight 0 (lvsha-drain, its unit
    drop-in); systemd restarts it if it dies. IPVS is thus loaded on the node
    that takes over, and heartbeat moves only the floating addresses.

    A running ldirectord is **reloaded** for a new ldirectord.cf, or when it runs
    with another file than the model's (lvsha-applied, recorded at each start and
    reload), such as one written by a run that died before the reload: SIGHUP, and
    ldirectord rereads its file and edits IPVS in place (ipvsadm -E for the
    virtual services it has, -A for new ones, -D for those its old file named and
    the new one does not; real servers likewise), so a site added, a health check
    or a real server changed leaves the other sites and their connections alone.
    The reload is then followed by a wait until IPVS holds every virtual service of
    the file (lvsha-ipvs-ready --strict, at most render.ipvs_takeover_timeout s), and, for a
    service without a real server (one the reload added, its first health checks
    pending), a round of ldirectord's health checks from then (--reloaded), so that
    what comes next (heartbeat adding a new site's address) finds it loaded with its
    real servers, unless they fail their checks.

    It is **restarted** when its unit drop-in changed (systemd runs the new unit
    only from a start), or when its IPVS table lacks a virtual service of the model
    that the file it runs names (ipvs_drift: the node would not serve that site
    after a takeover). systemd stops ldirectord itself and waits for it (the
    drop-in), so a restart never races the old daemon, and with `cleanstop=no` the
    table is edited in place. What the model no longer has is removed from IPVS
    (ldirectord only manages what its files named).

    ldirectord.cf is uploaded beside the file and checked there by ldirectord itself
    (lvsha-ldirectord-check: `ldirectord COPY status` reads the file as a start or a
    reload does, under a name of its own, so no pid file of the running daemon is
    touched); a file it refuses fails the operation and never replaces the one in
    place: a reload of a refused file would remove the daemon's pid file, and any
    later start would fail on it, in a loop, with IPVS left unchecked.
    """
    put(render.drain_script())
    put(render.ipvs_ready_script())  # the sync daemons' and heartbeat's waits, the reload's and the peer's before a restart
    put(render.ldirectord_check_script())  # before ldirectord.cf: it checks the staged file
    _, dropin_file = render.unit_dropin_files(cluster)
    dropin = put(dropin_file)
    systemd.daemon_reload(name="Reload systemd for ldirectord's drop-in", _if=dropin.did_change)
    config = render.ldirectord_file(cluster)
    stale = runs_stale("ldirectord", [config])
    lacking = ipvs_drift(cluster)
    written = put(config, check=LDIRECTORD_CHECK)
    started = unit(name="ldirectord runs on both balancers, enabled at boot", service="ldirectord",
                   running=True, enabled=True)

    def restart() -> bool:  # one just started has read the new files already
        return not started.did_change() and bool(lacking or dropin.did_change())

    server.shell(
        name=(f"Restart ldirectord: its IPVS table lacks {', '.join(lacking)}" if lacking
              else "Restart ldirectord for its new unit drop-in"),
        commands=["systemctl restart ldirectord.service"],
        _if=restart,
    )
    server.shell(
        name="Reload ldirectord for its new configuration",
        commands=["systemctl reload ldirectord.service",
                  f"{render.IPVS_READY_SCRIPT} --strict --reloaded {render.ipvs_takeover_timeout(cluster)}"],
        _if=lambda: not started.did_change() and not restart() and bool(stale or written.did_change()),
    )
    services = [f"TCP {vs.address}" for vs in cluster.virtual_servers()]
    only_model_ipvs_services(name="No IPVS service the model does not have", services=services)


@deploy("heartbeat")
def heartbeat(cluster: Cluster, balancer: Balancer, migrating: Migration | None = None):
    """ha.cf, haresources (identical on both nodes), authkeys (0600, sha1), the
    resource scripts and lvsha's helpers are in place. Runs after ldirectord
    and the state sync deploys: the node it may hand the group to has IPVS
    loaded and the connections synced.

    heartbeat.service gets lvsha's drop-in: whenever heartbeat stops, the node
    gives up every floating address at once, and systemd starts heartbeat
    again, which rejoins only once its peer has taken over
    (files/heartbeat/lvsha-heartbeat-guard).

    heartbeat is enabled and running, restarted only when its configuration
    changed (ha.cf, authkeys outside a rotation, haresources beyond its floating
    addresses: restart_due), the backup first and then the master, each by
    lvsha-heartbeat-restart, which refuses to restart the only node serving and
    returns once the pair has settled.
    A change of the floating addresses alone (a site added or removed) restarts
    nothing and moves nothing: both nodes get the new haresources and lvsha.env
    (which heartbeat's resource chain, the guard and the takeover watch read at
    each use), then the node carrying the group adds the new addresses and
    announces them (lvsha-floating-ips reload, which decides on the node, from
    heartbeat's own view and the group's owner in lvsha.env, whether it carries the
    group: after a failback heartbeat says `local` on both nodes); the peer takes the new
    set at its next takeover. Addresses the model no longer has are removed from
    both nodes.
    Before each restart, which may hand the peer the floating addresses, the
    peer waits until its IPVS holds every virtual service of the model
    (lvsha-ipvs-ready --strict, at most render.ipvs_takeover_timeout s); one that does
    not by then fails the run before the restart. The wait runs only in a run
    that restarts that node (restart_due, read from both nodes' facts).
    A new heartbeat secret is rotated in place on a running pair (see
    rotate_authkeys), never by restarts with keys that differ, decided for the
    pair and ordered around the restarts as key_rotation says. It is also
    restarted when it runs with other files than the model's (lvsha-applied).
    keepalived, where it is installed, is stopped and not enabled before heartbeat
    starts (the other engine never runs or starts at boot beside heartbeat).

    On a pair migrating from keepalived (`migrating`, tasks/migration.py), heartbeat is
    neither started on both at once nor restarted: the migration's steps start it one
    balancer at a time, where the addresses are first.
    """
    for helper in render.heartbeat_helper_files(cluster, balancer):
        put(helper)  # read afresh at each use: a new version needs no restart
    dropin_file, _ = render.unit_dropin_files(cluster)
    heartbeat_dropin = put(dropin_file)
    systemd.daemon_reload(name="Reload systemd for lvsha's unit drop-ins", _if=heartbeat_dropin.did_change)
    ha_cf, haresources, authkeys = render.heartbeat_files(cluster, balancer)
    rotate, restart_first = key_rotation(cluster, balancer)
    if rotate and not restart_first:
        rotate_authkeys(authkeys)  # before anything heartbeat rereads changes
    # Both nodes' restarts, known on both from both nodes' facts: the peer's wait below.
    due = {b.name: restart_due(cluster, b) for b in cluster.balancers}
    runs = running("heartbeat")
    addresses_only = haresources_change(cluster, balancer) == "addresses"
    put(ha_cf)
    # A haresources whose addresses alone changed is what heartbeat runs with once it is
    # in place (read at each takeover and release): recorded so, in the same operation.
    group = put(haresources, then=(f"{render.APPLIED_SCRIPT} record haresources",)
                if runs and addresses_only and not due[balancer.name] else ())
    if not rotate:
        secret_file(name=f"Write {authkeys.path}", content=authkeys.content, path=authkeys.path)
    # Mode and owner on their own: drift there is fixed without restarting heartbeat.
    private_file(name=f"{authkeys.path} is private", path=authkeys.path)
    if migrating:
        migration.operations(cluster, balancer, migrating)
        # Not a second engine at the next boot (the migration's steps end keepalived, their own way).
        other_engine_off("heartbeat", stop=False)
        return _only_the_model(cluster, balancer)

    # Stopped before heartbeat starts (an idle pair's failed keepalived: migration.plan), and
    # off at boot; preflight.check_engine refuses one running or enabled otherwise.
    other_engine_off("heartbeat")
    started = unit(name="Enable and start heartbeat", service="heartbeat", running=True, enabled=True)
    # The group's addresses as the model has them on the node carrying it, once both nodes
    # have the new haresources (a takeover from now on moves the new set): no restart,
    # nothing moves. Also where the carrier lacks one of the model's (a run that died
    # before this). The script decides on the node whether it carries the group.
    lacks = carries_part_of_the_group(cluster, balancer)
    server.shell(
        name="The group's floating addresses as the model has them where heartbeat carries it (no restart)",
        commands=[f"{render.FLOATING_IPS_SCRIPT} {' '.join(render.floating_ips_arguments(cluster))} reload"],
        _if=lambda: runs and not due[balancer.name] and (lacks or (addresses_only and group.did_change())),
    )
    # One operation per balancer, the backup's first: pyinfra runs operations in
    # order and (config.py: FAIL_PERCENT = 0) stops at the first failure, so a
    # restart that fails leaves the other balancer untouched, and a bad
    # configuration shows on the node that serves nothing.
    for turn, name in enumerate(b.name for b in reversed(cluster.balancers)):
        peer = cluster.peer(cluster.balancer(name)).name
        # The restart may hand the peer the floating addresses: the peer's IPVS holds every
        # virtual service of the model first (an ldirectord restarted earlier in this run
        # loads it seconds later; an empty table never), or the run stops here, bounded.
        server.shell(
            name=f"IPVS on {peer} holds the model's virtual services before heartbeat restarts on {name} "
                 f"({turn + 1} of 2)",
            commands=[f"{render.IPVS_READY_SCRIPT} --strict {render.ipvs_takeover_timeout(cluster)}"],
            # On the peer, and only in a run that restarts `name`'s heartbeat (never in a no-op run).
            _if=lambda peer=peer, name=name: balancer.name == peer and due[name],
        )
        server.shell(
            name=f"Restart heartbeat for its new configuration ({turn + 1} of 2: {name})",
            commands=[render.HEARTBEAT_RESTART],
            # restart_due: never one just started (it has read the new files already).
            _if=lambda name=name: balancer.name == name and due[name],
        )
    if rotate and restart_first:
        rotate_authkeys(authkeys)  # heartbeat runs the files on disk now: its SIGHUP rereads authkeys alone
    _only_the_model(cluster, balancer)


def _only_the_model(cluster: Cluster, balancer: Balancer):
    """No address or script the model does not have, once heartbeat runs."""
    # What the model no longer has is gone too: heartbeat only manages what its current files name.
    floating = cluster.floating_ips()
    for interface, network, own in cluster.own_networks(balancer):
        only_model_addresses(name=f"No address on {interface} the model does not have", interface=interface,
                             network=network, keep=own + [ip.cidr for ip in floating if ip.interface == interface])
    # lvsha before 0.6 ran ldirectord as a heartbeat resource; haresources no longer names it.
    absent_file(name=f"No {render.OLD_LDIRECTORD_SCRIPT}", path=render.OLD_LDIRECTORD_SCRIPT)
