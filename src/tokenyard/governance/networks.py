"""CIDR lists (IPv4 and IPv6): parsing with one-line errors, and membership tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> Network:
    """'10.0.0.0/8', '2001:db8::/32' or a single address; host bits are allowed ('10.1.2.3/8')."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR: {text!r}") from None


def normalise_networks(values: Iterable[str]) -> list[str]:
    """Validated CIDRs in canonical form ('10.1.2.3/8' -> '10.0.0.0/8'); ValueError names a bad one."""
    return [str(parse_network(value)) for value in values if value.strip()]


def parse_address(text: str) -> Address | None:
    """A client address, or None when it is not one (a Unix socket, a garbled header)."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 for every list
    return address


def contains(networks: Iterable[Network], address: Address) -> bool:
    return any(address in network for network in networks)
