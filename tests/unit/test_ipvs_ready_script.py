"""files/lvsha/lvsha-ipvs-ready, run for real against a fake ipvsadm: the IPVS
sync daemons start once ldirectord has loaded every virtual service with a real
server, and never wait forever for it."""

import subprocess
import time

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "lvsha" / "lvsha-ipvs-ready")
HEADER = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
          "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
SITE_1 = "TCP  10.0.0.1:0 wlc persistent 3600\n  -> 192.168.0.1:0                Masq    1      0          0\n"
SITE_2_EMPTY = "TCP  10.0.0.3:0 wlc persistent 3600\n"
SITE_2 = SITE_2_EMPTY + "  -> 192.168.0.2:0                Masq    1      0          0\n"


@pytest.fixture
def run(tmp_path, reference):
    (tmp_path / "ldirectord.cf").write_text(render.ldirectord_file(reference).content)
    table = tmp_path / "table"
    ipvsadm = tmp_path / "ipvsadm"
    ipvsadm.write_text(f'#!/bin/sh\ncat "{table}"\n')
    ipvsadm.chmod(0o755)
    (tmp_path / "logger").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "logger").chmod(0o755)

    def run(timeout: str, *tables: str, every: float = 0.0):
        """Run with `tables` shown by ipvsadm one after another, `every` seconds apart."""
        table.write_text(tables[0])
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LVSHA_LDIRECTORD_CF": str(tmp_path / "ldirectord.cf")}
        started = time.monotonic()
        process = subprocess.Popen([SCRIPT, timeout], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for later in tables[1:]:
            time.sleep(every)
            table.write_text(later)
        _, err = process.communicate(timeout=30)
        return process.returncode, err, time.monotonic() - started

    return run


def test_a_loaded_table_is_ready_at_once(run, reference):
    third = "TCP  10.0.0.5:0 wlc persistent 3600\n  -> 192.168.0.3:0                Masq    1      0          0\n"
    assert len(reference.sites) == 3
    rc, err, took = run("10", HEADER + SITE_1 + SITE_2 + third)
    assert rc == 0 and took < 1.5 and "IPVS is loaded: 3 virtual service(s)" in err


def test_it_waits_for_ldirectord_to_load_every_virtual_service(run):
    third = "TCP  10.0.0.5:0 wlc persistent 3600\n  -> 192.168.0.3:0                Masq    1      0          0\n"
    rc, err, took = run("10", HEADER, HEADER + SITE_1 + SITE_2_EMPTY, HEADER + SITE_1 + SITE_2 + third, every=1.2)
    assert rc == 0 and 2 <= took < 5, err
    assert "IPVS is loaded" in err


def test_a_site_without_real_servers_stops_the_wait_at_the_timeout_not_the_sync(run):
    rc, err, took = run("2", HEADER + SITE_1 + SITE_2_EMPTY)
    assert rc == 0 and 2 <= took < 4.5
    assert "after 2 s, 1 of 3 virtual service(s) have real servers: syncing anyway" in err


def test_a_bad_timeout_is_a_usage_error(run):
    rc, err, _ = run("soon", HEADER)
    assert rc == 2
