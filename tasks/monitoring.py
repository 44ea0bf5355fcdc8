"""Monitoring of the balancers (Cluster.monitoring): Debian's node_exporter and lvsha's metrics."""

from pyinfra.api import deploy
from pyinfra.operations import server, systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks.facts import managed_state
from tasks.operations import absent_file, restart_for_new_files, unit
from tasks.rendered import put


@deploy("Monitoring")
def monitoring(cluster: Cluster, balancer: Balancer):
    """With the model's monitoring on (its package installed with the role's, the
    firewall opening its port to the monitoring sources: tasks/firewall.py):

    - prometheus-node-exporter runs, enabled at boot, on the model's port and
      reading lvsha's metrics from its textfile directory (lvsha's drop-in);
      restarted when the drop-in changed.
    - lvsha-metrics.timer runs lvsha-metrics every `interval` seconds, enabled at
      boot; restarted when the timer changed (a new interval). lvsha-metrics and
      its settings (the engine whose view it reads, the floating addresses) are
      read afresh at each run.

    Off, on a host that has lvsha's monitoring files (it was on before): the
    timer and node_exporter are stopped and disabled and lvsha's files and metrics
    removed (the package stays). On a host that never had them: no operation.
    """
    if not cluster.monitoring.enabled:
        if all(managed_state(path) is None for path in (render.METRICS_TIMER, render.NODE_EXPORTER_DROPIN)):
            return
        unit(name="lvsha's metrics stopped and disabled (monitoring off)", service="lvsha-metrics.timer",
             running=False, enabled=False)
        unit(name="node_exporter stopped and disabled (monitoring off)", service="prometheus-node-exporter",
             running=False, enabled=False)
        removed = [absent_file(name=f"No {path}", path=path)
                   for path in (render.METRICS_TIMER, render.METRICS_SERVICE, render.NODE_EXPORTER_DROPIN,
                                render.METRICS_SCRIPT, render.METRICS_ENV)]
        server.shell(name="No lvsha metrics for node_exporter", commands=[f"rm -f {render.METRICS_FILE}"],
                     _if=lambda: any(op.did_change() for op in removed))
        systemd.daemon_reload(name="Reload systemd for the removed monitoring units",
                              _if=lambda: any(op.did_change() for op in removed))
        return
    script, settings, service, timer, dropin = render.monitoring_files(cluster, balancer)
    put(settings)  # both read afresh at each run
    put(script)
    service_written, timer_written, dropin_written = put(service), put(timer), put(dropin)
    systemd.daemon_reload(name="Reload systemd for the monitoring units",
                          _if=lambda: any(op.did_change() for op in (service_written, timer_written, dropin_written)))
    exporter = unit(name="node_exporter runs, enabled at boot", service="prometheus-node-exporter",
                    running=True, enabled=True)
    restart_for_new_files(exporter, "prometheus-node-exporter.service", "Restart node_exporter for lvsha's drop-in",
                          dropin_written.did_change)
    timer_unit = unit(name="lvsha's metrics every few seconds, enabled at boot", service="lvsha-metrics.timer",
                      running=True, enabled=True)
    restart_for_new_files(timer_unit, "lvsha-metrics.timer", "Restart lvsha-metrics.timer for its new interval",
                          timer_written.did_change)
