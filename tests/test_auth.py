"""Basic credentials: header parsing, plain and scrypt passwords, the verification cache."""

from __future__ import annotations

import base64

import anyio
import pytest

from ascrm.service.auth.basic import BasicAuth, Credential, PasswordHash, hash_password, parse_basic
from ascrm.service.auth.login import LoginGuard, LoginLimits, LoginRefusedError


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("a", "b"), (b"a", b"b")),
        (basic("a", "b:c"), (b"a", b"b:c")),
        (basic("a", ""), (b"a", b"")),
        ("basic " + base64.b64encode(b"a:b").decode(), (b"a", b"b")),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic %%%", None),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), None),
        ("Bearer token", None),
        ("Basic", None),
        ("", None),
    ],
)
def test_parse_basic(header: str, expected: tuple[bytes, bytes] | None) -> None:
    assert parse_basic(header) == expected


def test_hash_round_trip() -> None:
    encoded = hash_password("pässword")
    assert encoded.startswith("scrypt$16384$8$1$")
    parsed = PasswordHash.parse(encoded)
    assert parsed.matches("pässword".encode())
    assert not parsed.matches(b"password")
    assert hash_password("pässword") != encoded  # salted


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt$1$2",
        "bcrypt$16384$8$1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$100$8$1$c2FsdA==$aGFzaA==",
        "scrypt$x$8$1$a$b",
    ],
)
def test_bad_hashes_are_refused(encoded: str) -> None:
    with pytest.raises(ValueError, match=r"scrypt"):
        PasswordHash.parse(encoded)


def authenticate(auth: BasicAuth, header: str | None, client: str | None = None) -> str | None:
    async def main() -> str | None:
        return await auth.authenticate(header, client)

    return anyio.run(main)


def test_plain_and_hashed_credentials() -> None:
    auth = BasicAuth(
        [
            Credential("old", password="one"),
            Credential("new", password_hash=PasswordHash.parse(hash_password("two"))),
        ]
    )
    assert auth.enabled
    assert authenticate(auth, basic("old", "one")) == "old"
    assert authenticate(auth, basic("new", "two")) == "new"
    assert authenticate(auth, basic("new", "one")) is None
    assert authenticate(auth, basic("old", "two")) is None
    assert authenticate(auth, basic("nobody", "two")) is None
    assert authenticate(auth, None) is None
    assert not BasicAuth([]).enabled


@pytest.fixture
def kdf_runs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords each KDF run checked, in order."""
    runs: list[bytes] = []
    original = PasswordHash.matches

    def counting(self: PasswordHash, password: bytes) -> bool:
        runs.append(password)
        return original(self, password)

    monkeypatch.setattr(PasswordHash, "matches", counting)
    return runs


def test_successful_hashed_checks_are_cached_and_bounded(kdf_runs: list[bytes]) -> None:
    hashed = PasswordHash.parse(hash_password("two"))
    auth = BasicAuth([Credential("new", password_hash=hashed)], cache_size=2)
    runs = kdf_runs
    for _ in range(5):
        assert authenticate(auth, basic("new", "two")) == "new"
    assert len(runs) == 1  # one KDF run, then the cache
    for _ in range(3):
        assert authenticate(auth, basic("new", "bad")) is None
    assert len(runs) == 4  # failures are never cached
    # other header spellings of the same credentials fill the bounded cache
    authenticate(auth, "basic " + base64.b64encode(b"new:two").decode())
    authenticate(auth, "BASIC " + base64.b64encode(b"new:two").decode())
    assert len(auth._cache) == 2


def test_unknown_user_still_costs_one_kdf_run(kdf_runs: list[bytes]) -> None:
    auth = BasicAuth([Credential("new", password_hash=PasswordHash.parse(hash_password("two")))])
    assert authenticate(auth, basic("nobody", "two")) is None
    assert kdf_runs == [b"two"]  # the same work as for a known user: no early return on the name


def test_a_known_header_is_accepted_without_a_check_only_within_the_clients_budget() -> None:
    guard = LoginGuard(LoginLimits(per_client=2))
    auth = BasicAuth([Credential("autosecretary", password="s3cret")], guard=guard)
    good = basic("autosecretary", "s3cret")
    assert auth.known(good, "192.0.2.1") is None  # never checked: ask authenticate
    assert authenticate(auth, good, "192.0.2.1") == "autosecretary"
    assert auth.known(good, "192.0.2.1") == "autosecretary"
    assert auth.known(basic("autosecretary", "other"), "192.0.2.1") is None
    assert auth.known(None, "192.0.2.1") is None
    for _ in range(2):
        assert authenticate(auth, basic("autosecretary", "bad"), "192.0.2.1") is None
    assert auth.known(good, "192.0.2.1") is None  # over its budget: the full path, which refuses
    with pytest.raises(LoginRefusedError):
        authenticate(auth, good, "192.0.2.1")
    assert auth.known(good, "192.0.2.2") == "autosecretary"  # another client: untouched
