"""Which addresses a webhook may reach: public ones, and special ones only when listed by address."""

from __future__ import annotations

import pytest

from worker.webhooks import DeliveryFailed, listed, resolve


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "169.254.169.254", "::1", "0.0.0.0",
                                     "100.64.0.1", "fd00::1"])
def test_loopback_private_and_link_local_addresses_are_refused_unless_listed(address: str) -> None:
    with pytest.raises(DeliveryFailed) as refused:
        resolve(address, 8080, listed("example.org, localhost"))  # a listed *name* never opens them
    assert refused.value.code == "address_refused"
    assert resolve(address, 8080, listed(f"{address}:8080")) == address
    assert resolve(address, 8080, listed(address)) == address


def test_public_addresses_are_reached_as_resolved() -> None:
    assert resolve("93.184.215.14", 443, listed("")) == "93.184.215.14"
    assert resolve("2606:4700::1111", 443, listed("")) == "2606:4700::1111"
