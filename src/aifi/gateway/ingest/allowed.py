"""Which peers may talk to the gateway: each listener (DIMSE, STOW-RS, the status page) has
a list of IP addresses or networks from the configuration; an empty list allows any."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_of(values: Sequence[Any]) -> tuple[Network, ...]:
    """The networks written in the configuration (a bare address is a /32 or /128)."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an IP address or network (e.g. 10.0.0.0/24)"
            ) from exc
    return tuple(out)


def address_allowed(address: str, networks: tuple[Network, ...]) -> bool:
    """Is ``address`` (a peer's IP) in one of ``networks``? An empty list allows any."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)
