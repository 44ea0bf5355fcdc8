"""An optional web server answering on each site address (the lab uses it)."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Cluster, WebHost
from tasks.operations import symlink, unit
from tasks.rendered import put


@deploy("Web server")
def web_server(cluster: Cluster, web_host: WebHost):
    """nginx answers on every site address, on the ports the balancers forward to and
    check there (the site's real_ports; TLS on 443 and on an https check's port:
    render.nginx_ports), with the site and host name (which the health check's `receive` text matches); nginx
    is installed by then (tasks/roles.py: cluster_host). A changed set of sites is
    applied by a reload (nginx's graceful one: established connections carry on, and
    the balancers' health checks see no refused connection that would take the host
    out of rotation); nginx is restarted only when its default site is traded for
    lvsha's. After either, the deploy waits (NGINX_LISTEN_TIMEOUT s at most) until
    nginx listens on every site address and port, and fails naming those it does not:
    nginx's reload succeeds even when a new address cannot be bound (the old workers
    go on serving the old set of sites)."""
    sites, listening_script = render.web_server_files(cluster, web_host)
    site_config = put(sites)
    put(listening_script)  # what the reload and the restart below run
    enabled = symlink(name="Enable the lvsha sites", path=render.NGINX_SITE_LINK, target=render.NGINX_SITES)
    default = symlink(name="Disable nginx's default site", path=render.NGINX_DEFAULT_SITE_LINK, target=None)
    unit(name="Enable and start nginx", service="nginx", running=True, enabled=True)
    listening = " ".join([render.LISTENING_SCRIPT, str(render.NGINX_LISTEN_TIMEOUT),
                          *render.web_server_listens(cluster, web_host)])
    # Restart, not reload, where the default site's wildcard listener gives way to
    # per-address ones: a reload cannot trade them (bind() fails with "Address already in use").
    traded = lambda: enabled.did_change() or default.did_change()  # noqa: E731
    server.shell(name="Restart nginx for lvsha's sites in place of its default one",
                 commands=["systemctl restart nginx.service", listening], _if=traded)
    server.shell(name="Reload nginx for its new sites", commands=["systemctl reload nginx.service", listening],
                 _if=lambda: site_config.did_change() and not traded())
