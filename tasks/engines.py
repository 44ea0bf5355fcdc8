"""The failover engines' services, and the rule that only the model's engine runs: the
other engine's services are kept off (one helper, used by both engines' deploys)."""

from __future__ import annotations

from tasks.operations import unit

# Each engine's services, the one that moves the floating addresses first (migration.MOVERS;
# preflight.ENGINE_SERVICES; the lab's tests read them too).
ENGINE_SERVICES = {"heartbeat": ("heartbeat", "ldirectord"), "keepalived": ("keepalived",)}
OTHER_ENGINE = {"heartbeat": "keepalived", "keepalived": "heartbeat"}


def other_engine_off(engine: str, stop: bool = True) -> list:
    """Every service of the engine other than `engine` (ENGINE_SERVICES[OTHER_ENGINE[engine]])
    is not enabled, so that no reboot starts a second engine beside `engine`, and, with `stop`,
    is stopped: one `unit` operation per service, in ENGINE_SERVICES' order, named "SERVICE is
    stopped and not enabled (engine ENGINE)" (without `stop`: "SERVICE is not enabled (engine
    ENGINE)"). pyinfra runs operations in order and stops at the first that fails (config.py),
    so called before `engine`'s own start, the other engine is stopped before `engine` starts.

    Without `stop`, a running service is left running: on a pair migrating, the migration's
    steps (tasks/migration.py, files/keepalived/lvsha-migrate) end the other engine in their own
    order and way (keepalived on the holder frozen and killed, never stopped: its VRRP's shutdown
    would remove the addresses), and this, after them, only keeps it off at boot. Returns the
    operations."""
    what = "stopped and not enabled" if stop else "not enabled"
    return [unit(name=f"{service} is {what} (engine {engine})", service=service, running=False if stop else None,
                 enabled=False)
            for service in ENGINE_SERVICES[OTHER_ENGINE[engine]]]
