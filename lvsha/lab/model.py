"""The lab's view of the cluster: the inventory's model, reached the lab's way.

The lab deploys the same model as production: the inventory file named by
LVSHA_LAB_INVENTORY, else the one the running lab was brought up with
(state.json), else the reference `inventory.py`. It adds only what
the lab's VMs physically have on top: a management NIC on each balancer, on
which the firewall accepts SSH, and connection settings for the forwarded ports.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from pathlib import Path

from lvsha.inventory import WEB_SERVER_KEY
from lvsha.loader import load_cluster
from lvsha.model import Cluster
from lvsha.secrets import SECRET_ENV, SECRET_FILE_ENV
from lvsha.validate import validate

# The engine the lab deploys, when it is not its model's (lab_cluster).
LAB_ENGINE_ENV = "LVSHA_LAB_ENGINE"

ROOT = Path(__file__).resolve().parent.parent.parent
LAB_INVENTORY_ENV = "LVSHA_LAB_INVENTORY"


REFERENCE_INVENTORY = ROOT / "inventory.py"


def source_inventory(state: dict | None = None) -> Path:
    """The inventory file whose model the lab lays out and deploys."""
    chosen = os.environ.get(LAB_INVENTORY_ENV) or (state or {}).get("inventory") or REFERENCE_INVENTORY
    return Path(chosen).resolve()


def _load_with_secret(env: dict[str, str], inventory: Path) -> Cluster:
    saved = {k: os.environ.pop(k, None) for k in (SECRET_ENV, SECRET_FILE_ENV)}
    os.environ.update(env)
    try:
        return load_cluster(inventory)
    finally:
        for k in (SECRET_ENV, SECRET_FILE_ENV):
            os.environ.pop(k, None)
            if saved[k] is not None:
                os.environ[k] = saved[k]


def topology_cluster(inventory: Path | None = None) -> Cluster:
    """The model for laying out VMs and networks. The lab makes its heartbeat
    secret when it comes up, so a throwaway one stands in here; nothing
    rendered from this model is ever deployed."""
    return _load_with_secret({SECRET_ENV: secrets.token_hex(16)}, inventory or source_inventory())


def lab_cluster(state: dict) -> Cluster:
    """The model the lab deploys: the inventory's, with the lab's secret and
    each balancer's management NIC."""
    cluster = _load_with_secret({SECRET_FILE_ENV: state["heartbeat_secret_file"]}, source_inventory(state))
    balancers = tuple(
        replace(b, management_interface=state["hosts"][b.name]["management_interface"]) for b in cluster.balancers
    )
    # LVSHA_LAB_ENGINE: the lab deployed on another engine than its model's (the migration's
    # lab test, tests/lab/test_9_migration.py, turns the running pair to it and back).
    engine = os.environ.get(LAB_ENGINE_ENV) or cluster.engine
    return validate(replace(cluster, balancers=balancers, engine=engine))


def lab_connections(cluster: Cluster, state: dict) -> dict[str, dict]:
    """pyinfra connection data for every host: the forwarded SSH port, the lab
    key, and strict host key checking against the lab's known_hosts."""
    connections = {}
    for name, h in state["hosts"].items():
        connections[name] = {
            "ssh_hostname": h["ssh_host"],
            "ssh_port": h["ssh_port"],
            "ssh_user": state["ssh_user"],
            "ssh_key": state["ssh_key"],
            "ssh_known_hosts_file": state["known_hosts"],
            "ssh_strict_host_key_checking": "yes",
            "ssh_look_for_keys": False,
            "ssh_allow_agent": False,
        }
    for h in cluster.web_hosts:
        connections[h.name][WEB_SERVER_KEY] = True
    return connections
