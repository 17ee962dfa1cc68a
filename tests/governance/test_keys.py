"""Tenants and keys on every database kind: keys stored only as digests, shown once, revocable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from tokenyard.errors import AuthenticationError, ConflictError, InvalidRequestError, NotFoundError
from tokenyard.governance import keys, tenants
from tokenyard.governance.keys import KeySettings
from tokenyard.governance.tenants import TenantSettings
from tokenyard.governance.verifier import KeyVerifier
from tokenyard.store import ApiKey, Store
from tokenyard.store.models import utcnow

INJECTIONS = [
    "x' OR '1'='1",
    "x'; DROP TABLE api_keys; --",
    '" OR ""="',
    "%",
    "_",
    "x\\' OR 1=1 #",
    "1; SELECT pg_sleep(5)",
    "租户' UNION SELECT key_hash FROM api_keys --",
]


def dump(store: Store) -> str:
    """Every value in every table, as text."""
    rows = []
    with store.engine.connect() as connection:
        for table in ("tenants", "api_keys", "counters"):
            rows += [repr(tuple(r)) for r in connection.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(rows)


def test_a_key_is_256_random_bits_and_never_stored(store: Store) -> None:
    created = keys.create_key(store, KeySettings(tenant="acme", models=["m1"]))
    assert created.key.startswith("ty-") and len(created.key) == keys.KEY_LENGTH
    assert created.prefix == created.key[: keys.PREFIX_LENGTH]
    stored = dump(store)
    assert created.key not in stored
    assert created.key[keys.PREFIX_LENGTH :] not in stored  # not even the secret part
    assert keys.key_digest(created.key) in stored
    assert created.key not in repr(keys.list_keys(store))


def test_keys_create_their_tenant_and_list_by_tenant(store: Store) -> None:
    a = keys.create_key(store, KeySettings(tenant="甲公司", rpm=10))
    keys.create_key(store, KeySettings(tenant="b"))
    assert [t.name for t in tenants.list_tenants(store)] == sorted(["甲公司", "b"])
    listed = keys.list_keys(store, "甲公司")
    assert [(k.prefix, k.rpm, k.state) for k in listed] == [(a.prefix, 10, "active")]


def test_tenant_defaults_and_conflicts(store: Store) -> None:
    tenants.create_tenant(store, "t", TenantSettings(models=["m"], rpm=5))
    with pytest.raises(ConflictError):
        tenants.create_tenant(store, "t")
    changed = tenants.set_tenant(store, "t", TenantSettings(tpm=100, ip_allowlist=["10.1.2.3/8", "2001:db8::1/32"]))
    assert (changed.models, changed.rpm, changed.tpm) == (["m"], 5, 100)
    assert changed.ip_allowlist == ["10.0.0.0/8", "2001:db8::/32"]
    assert tenants.set_tenant(store, "t", TenantSettings(rpm=0, models=["*"])).rpm is None
    with pytest.raises(InvalidRequestError, match="CIDR"):
        tenants.set_tenant(store, "t", TenantSettings(ip_allowlist=["10.0.0.0/33"]))
    with pytest.raises(InvalidRequestError):
        tenants.create_tenant(store, "bad\x00name")


async def test_verification_follows_revocation_expiry_and_tenant_models(store: Store) -> None:
    tenants.create_tenant(store, "t", TenantSettings(models=["m1", "m2"], rpm=7))
    created = keys.create_key(store, KeySettings(tenant="t", models=["m2", "m3"], max_parallel=2))
    verifier = KeyVerifier(store, cache_seconds=60)
    principal = await verifier.verify(created.key)
    assert principal.tenant == "t" and principal.key_prefix == created.prefix
    assert principal.models == frozenset({"m2"})  # a key cannot exceed its tenant
    assert (principal.key_limits.max_parallel, principal.tenant_limits.rpm) == (2, 7)

    keys.revoke_key(store, created.prefix)
    await verifier.poll_store_version()  # what the gateway's poll does at least once a second
    with pytest.raises(AuthenticationError, match="revoked"):
        await verifier.verify(created.key)

    expiring = keys.create_key(store, KeySettings(tenant="t", expires_days=1))
    with store.session() as session:
        session.execute(
            update(ApiKey).where(ApiKey.prefix == expiring.prefix).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(AuthenticationError, match="expired"):
        await verifier.verify(expiring.key)
    with pytest.raises(AuthenticationError, match="Incorrect"):
        await verifier.verify(created.key[:-1] + ("A" if created.key[-1] != "A" else "B"))


@pytest.mark.parametrize("probe", INJECTIONS)
def test_injection_strings_in_every_filter_are_plain_text(store: Store, probe: str) -> None:
    created = keys.create_key(store, KeySettings(tenant="victim"))
    before = dump(store)
    assert keys.list_keys(store, probe) == []
    assert tenants.list_tenants(store, probe) == []
    with pytest.raises((NotFoundError, InvalidRequestError)):
        keys.revoke_key(store, probe)
    assert dump(store) == before
    with store.session() as session:
        assert session.scalar(select(ApiKey.prefix)) == created.prefix
