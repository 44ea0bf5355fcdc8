"""Load the cluster model out of an inventory file, as pyinfra would."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from lvsha.model import Cluster


class InventoryError(RuntimeError):
    pass


def run_inventory(inventory: str | Path) -> dict:
    """Execute an inventory file as pyinfra would; return its module namespace."""
    path = Path(inventory).resolve()
    if not path.is_file():
        raise InventoryError(f"inventory {inventory}: no such file")
    # Inventory files import `lvsha` and may import each other from their folder.
    for folder in (str(path.parent), str(Path(__file__).resolve().parent.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return runpy.run_path(str(path), run_name="lvsha_inventory")


def load_cluster(inventory: str | Path) -> Cluster:
    """Execute an inventory file and return its `CLUSTER` (validated there)."""
    namespace = run_inventory(inventory)
    cluster = namespace.get("CLUSTER")
    if not isinstance(cluster, Cluster):
        raise InventoryError(f"inventory {inventory}: defines no CLUSTER (a lvsha.model.Cluster)")
    return cluster
