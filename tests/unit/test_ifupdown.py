"""lvsha.ifupdown: reading ifupdown's stanzas and handing interfaces over to systemd-networkd."""

import pytest
from netaddr import IPAddress, IPNetwork

from lvsha import ifupdown
from lvsha.lab.stock import installer_interfaces

STOCK = installer_interfaces("eth0", "10.0.0.254/24", "10.0.0.250")


def test_the_installers_file_reads_as_one_static_stanza():
    stanzas, started = ifupdown.parse({ifupdown.INTERFACES: STOCK})
    (eth0,) = stanzas["eth0"]
    assert (eth0.family, eth0.method, eth0.path) == ("inet", "static", ifupdown.INTERFACES)
    assert eth0.addresses() == [IPNetwork("10.0.0.254/24")] and eth0.gateway() == IPAddress("10.0.0.250")
    assert eth0.uncarried_options() == []  # dns-* change nothing without resolvconf
    assert started == {"lo", "eth0"}
    assert ifupdown.configured({ifupdown.INTERFACES: STOCK}) == {"eth0"}


def test_an_address_with_a_netmask_line():
    text = "iface eth1 inet static\n  address 192.168.0.5\n  netmask 255.255.255.0\n  mtu 9000\n"
    (eth1,) = ifupdown.parse({"f": text})[0]["eth1"]
    assert eth1.addresses() == [IPNetwork("192.168.0.5/24")]
    assert eth1.uncarried_options() == ["mtu"]


def test_hand_over_comments_the_stanza_out_keeps_the_rest_and_is_idempotent():
    text = STOCK + "\nauto eth0 eth1\niface eth1 inet manual\n"
    handed = ifupdown.hand_over(text, {"eth0"})
    assert ifupdown.configured({"f": handed}) == {"eth1"}  # eth1 stays ifupdown's, lo too
    assert "iface lo inet loopback" in handed.splitlines()
    assert "auto eth1" in handed.splitlines() and "# lvsha: auto eth0 eth1" in handed.splitlines()
    assert "# lvsha: \taddress 10.0.0.254/24" in handed.splitlines()  # kept for the record
    assert handed.splitlines()[0].startswith("# lvsha: eth0: configured by systemd-networkd")
    assert ifupdown.hand_over(handed, {"eth0"}) == handed
    assert ifupdown.hand_over(STOCK, {"eth3"}) == STOCK  # nothing to hand over: the same text


def test_a_line_that_is_not_a_stanza_is_named():
    with pytest.raises(ifupdown.IfupdownError, match=r"f: cannot read 'iface eth0'"):
        ifupdown.parse({"f": "iface eth0\n"})
