import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEST_SECRET = "test-secret-not-for-production-0123"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden from the current renderings")


def load_with_test_secret(inventory: Path):
    """An inventory file's model, with a fixed test secret (the environment restored)."""
    from lvsha.loader import load_cluster

    saved = {k: os.environ.pop(k, None) for k in ("LVSHA_HEARTBEAT_SECRET", "LVSHA_HEARTBEAT_SECRET_FILE")}
    os.environ["LVSHA_HEARTBEAT_SECRET"] = TEST_SECRET
    try:
        return load_cluster(inventory)
    finally:
        os.environ.pop("LVSHA_HEARTBEAT_SECRET")
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="session")
def reference():
    """The reference inventory's model."""
    return load_with_test_secret(ROOT / "inventory.py")


@pytest.fixture(scope="session")
def edge():
    """The second example cluster's model (examples/edge)."""
    return load_with_test_secret(ROOT / "examples" / "edge" / "inventory.py")


@pytest.fixture(scope="session", params=["reference", "edge"])
def every_model(request):
    """Each example cluster's model in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def monitored(reference):
    """The reference model with monitoring on, scraped from its external network and from
    one internal address."""
    from dataclasses import replace

    from lvsha.model import Monitoring

    return replace(reference, monitoring=Monitoring(enabled=True, sources=("10.0.0.0/24", "192.168.0.200/32")))


@pytest.fixture(scope="session")
def monitored_keepalived(monitored):
    """`monitored` on engine keepalived (state sync on)."""
    from dataclasses import replace

    return replace(monitored, engine="keepalived")


def promtool() -> str:
    """promtool (Debian's `prometheus` package's, which bin/setup unpacks into the venv's
    bin): found in PATH or beside the running Python; a skip without it, a failure under CI."""
    import shutil

    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed; bin/setup unpacks it from Debian's prometheus package")
        pytest.skip("promtool is not installed (bin/setup unpacks it from Debian's prometheus package)")
    return found


@pytest.fixture(scope="session")
def dedicated_sync(reference):
    """The reference model with state sync on a link of its own (eth3, 192.168.100.0/24)."""
    from dataclasses import replace

    b1, b2 = reference.balancers
    return replace(
        reference, state_sync=replace(reference.state_sync, network="192.168.100.0/24"),
        balancers=(replace(b1, sync_interface="eth3", sync_ip="192.168.100.1"),
                   replace(b2, sync_interface="eth3", sync_ip="192.168.100.2")))
