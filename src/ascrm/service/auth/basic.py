"""HTTP Basic authentication: credentials, scrypt password hashes, and the per-request check."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from ascrm.service.auth.login import LoginGuard

_SCHEME = "scrypt"
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
MAX_KDF_MEMORY = 64 * 1024 * 1024  # bytes of 128·r·N one KDF run may use (the defaults: 16 MiB)
MAX_KDF_COST = 2**20  # N·r·p: 8 times the default's CPU work


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed `scrypt$N$r$p$salt$hash` string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        """Read a hash made by hash_password; ValueError says what is wrong with it."""
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != _SCHEME:
            raise ValueError("expected scrypt$N$r$p$salt$hash, as printed by `ascrm hash-password`")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"malformed scrypt hash: {exc}") from None
        if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt or len(digest) < 16:
            raise ValueError("scrypt parameters out of range")
        check_cost(n, r, p)
        return cls(n, r, p, salt, digest)

    @property
    def memory(self) -> int:
        """Bytes one KDF run takes (OpenSSL's accounting, which its maxmem check uses)."""
        return kdf_memory(self.n, self.r, self.p)

    def matches(self, password: bytes) -> bool:
        """Run the KDF on password and compare in constant time."""
        derived = hashlib.scrypt(
            password, salt=self.salt, n=self.n, r=self.r, p=self.p, maxmem=self.memory, dklen=len(self.digest)
        )
        return hmac.compare_digest(derived, self.digest)


def kdf_memory(n: int, r: int, p: int) -> int:
    """Bytes an scrypt run with these parameters takes: 128·r·(N + p) and a little more."""
    return 128 * r * (n + p + 2) + 64 * 1024


def check_cost(n: int, r: int, p: int) -> None:
    """ValueError when one KDF run would take more than MAX_KDF_MEMORY bytes or MAX_KDF_COST work."""
    if r < 16 and n >= 2 ** (16 * r):  # OpenSSL's own bound
        raise ValueError(f"scrypt N={n} must be below 2^(16·r) = {2 ** (16 * r)} with r={r}")
    memory = 128 * r * n  # the big array; kdf_memory adds a little for the small ones
    if memory > MAX_KDF_MEMORY:
        mib = MAX_KDF_MEMORY // 2**20
        raise ValueError(f"scrypt N={n} r={r} needs {memory / 2**20:.0f} MiB per check; the cap is {mib} MiB")
    if n * r * p > MAX_KDF_COST:
        raise ValueError(f"scrypt N={n} r={r} p={p}: N·r·p is {n * r * p}; the cap is {MAX_KDF_COST}")


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """Hash a password with scrypt and a random salt, in the form the config's password_hash takes."""
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt N must be a power of two above 1 (got {n})")
    check_cost(n, r, p)
    salt = secrets.token_bytes(16)
    maxmem = kdf_memory(n, r, p)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"{_SCHEME}${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True, slots=True)
class Credential:
    """One user name with a plain password or a password hash (exactly one of the two)."""

    user: str
    password: str | None = field(default=None, repr=False)
    password_hash: PasswordHash | None = field(default=None, repr=False)


_DUMMY_HASH = PasswordHash(_N, _R, _P, b"\0" * 16, b"\0" * _DKLEN)


def parse_basic(header: str) -> tuple[bytes, bytes] | None:
    """Split an `Authorization: Basic …` value into user and password bytes; None if malformed."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


class BasicAuth:
    """Checks Basic credentials against one role's list; successful checks are cached (bounded).

    Every check goes through the app's LoginGuard: a client over its failure budget is refused
    (LoginRefusedError, 429) before anything else, a cached header is accepted without a check, and
    a KDF run waits its turn on the guard's KDF pool.
    """

    def __init__(
        self,
        credentials: Sequence[Credential],
        *,
        cache_size: int = 1024,
        guard: LoginGuard | None = None,
        role: str = "platform",
    ) -> None:
        self._plain = [(c.user.encode(), c.password.encode(), c.user) for c in credentials if c.password]
        self._hashed = [(c.user.encode(), c.password_hash, c.user) for c in credentials if c.password_hash]
        self._cache: dict[str, str] = {}  # header value -> user, for headers that passed
        self._cache_size = cache_size
        self._guard = guard or LoginGuard()
        self._role = role

    @property
    def enabled(self) -> bool:
        """Whether any credential is configured for this role."""
        return bool(self._plain or self._hashed)

    def known(self, header: str | None, client: str | None = None) -> str | None:
        """The user of a header that passed before, its client within its failure budget: accepted
        without a check or a wait (the hot path). None: ask authenticate."""
        if header is None:
            return None
        user = self._cache.get(header)
        if user is None or not self._guard.client_within_budget(client):
            return None
        return user

    async def authenticate(self, header: str | None, client: str | None = None) -> str | None:
        """The user name the header proves, or None; LoginRefusedError when refused unchecked.

        client: the client's address (scope["client"]), the key of its failure budget.
        """
        if not header:
            return None
        guard = self._guard
        guard.admit_client(self._role, client, lambda: (parse_basic(header) or (b"", b""))[0])
        user = self._cache.get(header)
        if user is not None:
            return user
        pair = parse_basic(header)
        if pair is None:
            guard.malformed(self._role, client)
            return None
        attempt = guard.begin(self._role, client, pair[0])
        user = self._check_plain(*pair)
        if user is None and self._hashed:
            user = await guard.check(attempt, functools.partial(self._check_hashed, *pair))
        if user is None:
            attempt.failed()
            return None
        attempt.succeeded()
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[header] = user
        return user

    def _check_plain(self, user: bytes, password: bytes) -> str | None:
        found = None
        for cred_user, cred_password, name in self._plain:  # no early return: same work for any name
            user_ok = hmac.compare_digest(user, cred_user)
            password_ok = hmac.compare_digest(password, cred_password)
            if user_ok and password_ok:
                found = name
        return found

    def _check_hashed(self, user: bytes, password: bytes) -> str | None:
        chosen, chosen_name = _DUMMY_HASH, None
        for cred_user, cred_hash, name in self._hashed:
            if hmac.compare_digest(user, cred_user) and cred_hash is not None:
                chosen, chosen_name = cred_hash, name
        matched = chosen.matches(password)  # one KDF run whether or not the user exists
        return chosen_name if matched and chosen_name is not None else None
