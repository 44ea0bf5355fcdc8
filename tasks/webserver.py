"""An optional web server answering on each site address (the lab uses it)."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Cluster, WebHost
from tasks.facts import Applied, fact
from tasks.operations import symlink, unit
from tasks.rendered import put


def serves_stale(sites: render.RenderedFile) -> bool:
    """nginx may serve another sites file than `sites`: lvsha-applied's record (made
    once nginx was reloaded or restarted with a file and listens on each of its
    addresses) names another file, or none (a host on which no deploy has applied
    one yet, or one that died before it did: a run that wrote the file, then died
    before nginx's reload, leaves the file on disk unchanged for the next run)."""
    return fact(Applied).get(render.NGINX_RECORD, []) != render.applied_record([sites])


@deploy("Web server")
def web_server(cluster: Cluster, web_host: WebHost):
    """nginx answers on every site address, on the ports the balancers forward to and
    check there (the site's real_ports; TLS on 443 and on an https check's port:
    render.nginx_ports), with the site and host name (which the health check's `receive`
    text matches); nginx is installed by then (tasks/roles.py: cluster_host). A changed
    set of sites is applied by a reload (nginx's graceful one: established connections
    carry on, and the balancers' health checks see no refused connection that would take
    the host out of rotation); nginx is restarted only when its default site is traded for
    lvsha's. After either, the deploy waits (NGINX_LISTEN_TIMEOUT s at most) until
    nginx listens on every site address and port, and fails naming those it does not:
    nginx's reload succeeds even when a new address cannot be bound (the old workers
    go on serving the old set of sites). Only then is the sites file recorded as the one
    nginx serves (lvsha-applied record nginx); nginx is reloaded whenever the record
    names another file than the model's (serves_stale), also with the file on disk
    already the model's: a run that died between writing the file and the reload, or
    whose check failed, is finished by the next one.

    Not tasks/operations.restart_for_new_files: it restarts, where nginx applies new
    sites by its graceful reload, and runs the restart alone, where the reload is
    followed in the same operation by the listening check and the record (a check that
    fails must leave no record). Its skip of a service just started (one that has read
    the new files) is not wanted here either: a reload right after nginx's start costs
    nothing, and it is what checks and records the file nginx started with."""
    sites, listening_script, applied_script = render.web_server_files(cluster, web_host)
    stale = serves_stale(sites)
    site_config = put(sites)
    put(listening_script)  # what the reload and the restart below run
    put(applied_script)  # what records, after them, the file nginx serves
    enabled = symlink(name="Enable the lvsha sites", path=render.NGINX_SITE_LINK, target=render.NGINX_SITES)
    default = symlink(name="Disable nginx's default site", path=render.NGINX_DEFAULT_SITE_LINK, target=None)
    unit(name="Enable and start nginx", service="nginx", running=True, enabled=True)
    # --exact: lvsha's sites listen per address; a wildcard left on a port (the default site's,
    # which a reload cannot replace) must not pass for them before the record says nginx serves them.
    listening = " ".join([render.LISTENING_SCRIPT, "--exact", str(render.NGINX_LISTEN_TIMEOUT),
                          *render.web_server_listens(cluster, web_host)])
    record = f"{render.APPLIED_SCRIPT} record {render.NGINX_RECORD}"
    # Restart, not reload, where the default site's wildcard listener gives way to
    # per-address ones: a reload cannot trade them (bind() fails with "Address already in use").
    traded = lambda: enabled.did_change() or default.did_change()  # noqa: E731
    server.shell(name="Restart nginx for lvsha's sites in place of its default one",
                 commands=["systemctl restart nginx.service", listening, record], _if=traded)
    server.shell(name="Reload nginx for its new sites", commands=["systemctl reload nginx.service", listening, record],
                 _if=lambda: (site_config.did_change() or stale) and not traded())
