"""The edge cluster (`examples/edge/inventory.py`, reused, not retyped) migrated to
keepalived: `engine="keepalived"` and nothing else. Deployed to a pair running the edge
cluster on heartbeat, it is the live migration (docs/engines.md#migrating); deployed to
new machines, a plain keepalived install.

    LVSHA_HEARTBEAT_SECRET_FILE=~/secrets/edge-heartbeat pyinfra examples/edge-keepalived/inventory.py deploy.py --dry --diff

Nothing else needs changing for keepalived to carry it (validation says so, field by
field: docs/model.md#on-keepalived-engine--keepalived): its timers map (advert_int 1 s,
the master declared dead after deadtime / keepalive = 6 missed advertisements; warntime
and initdead are heartbeat's own), VRRP travels on the first heartbeat link (the
internal one), `auto_failback` off is keepalived's `nopreempt`, which is allowed because
the model has no ping nodes, and its health checks are keepalived's (HTTP_GET). The
cluster keeps its name: every file the deploy manages says which model it came from, and
a migration changes the engine, not what is written on every host.

The heartbeat secret is still read (loading `examples/edge/inventory.py` validates its
heartbeat model, which needs it): keepalived has no use for it (VRRP is accepted from the
peer's address only: docs/engines.md), and the way back to heartbeat needs it again.

The default test run takes the edge lab over once its heartbeat tests are done: this
model deployed to it (the migration, no boot of its own), then the tests marked
`every_model` on keepalived (docs/lab.md, "Two releases, two engines").
"""

import runpy
from dataclasses import replace
from pathlib import Path

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.secrets import heartbeat_secret

_edge = runpy.run_path(str(Path(__file__).resolve().parents[1] / "edge" / "inventory.py"), run_name="lvsha_edge")


def edge_keepalived_cluster(secret: str | None = None):
    return replace(_edge["edge_cluster"](secret), engine="keepalived")


CLUSTER = validated_or_exit(lambda: edge_keepalived_cluster(heartbeat_secret()))

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
