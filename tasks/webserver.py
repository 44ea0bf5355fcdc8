"""An optional web server answering on each site address (the lab uses it)."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Cluster, WebHost
from tasks.operations import symlink, unit
from tasks.rendered import put


@deploy("Web server")
def web_server(cluster: Cluster, web_host: WebHost):
    """nginx answers on every site address, ports 80 and 443, with the site
    and host name (which the health check's `receive` text matches); nginx
    is installed by then (tasks/roles.py: cluster_host)."""
    site_config = put(render.web_server_file(cluster, web_host))
    enabled = symlink(name="Enable the lvsha sites", path=render.NGINX_SITE_LINK, target=render.NGINX_SITES)
    default = symlink(name="Disable nginx's default site", path=render.NGINX_DEFAULT_SITE_LINK, target=None)
    unit(name="Enable and start nginx", service="nginx", running=True, enabled=True)
    # Restart, not reload: a reload cannot trade the default site's wildcard
    # listener for per-address ones (bind() fails with "Address already in use").
    server.shell(
        name="Restart nginx for its new configuration", commands=["systemctl restart nginx.service"],
        _if=lambda: any(op.did_change() for op in (site_config, enabled, default)),
    )
