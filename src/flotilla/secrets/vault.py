"""The vault: app secrets, encrypted at rest in the daemon's SQLite file.

Apps are configured through environment variables, and some of those are
passwords and keys. The vault keeps them in ``$FLOTILLA_HOME/state.db`` (its
own tables, its own connection) so that the daemon, the only holder of the
master key, can decrypt them to inject into containers, and nothing else can.

Each value is sealed with AES-256-GCM under the master key, with a fresh random
96-bit nonce and with associated data naming its app, secret and version, so a
ciphertext moved to another row fails to open instead of delivering the wrong
secret. The vault records the fingerprint of the key it was written with and
refuses any other. Nothing here logs, formats or raises a value: errors name the
app, the secret and the version, never what is in it.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flotilla.errors import FlotillaError, SecretNotFoundError, SecretsError, TamperedError, WrongKeyError

if TYPE_CHECKING:  # keys.py imports the errors below, so only type checkers import it here
    from flotilla.secrets.keys import MasterKey

KEEP_VERSIONS = 5
MAX_VALUE_BYTES = 64 * 1024
NONCE_BYTES = 12
FORMAT = "aes-256-gcm/1"
_AAD_LABEL = "flotilla-secret/1"
# The spec's app-name rule (flotilla.spec.checks.NAME_RULE, at most NAME_MAX=30
# characters), repeated so the vault does not import the spec; a test keeps them equal.
_APP_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?")
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Registry logins (daemon/registries.py) live under a namespace no app can have:
# an app name starts with a letter.
REGISTRY_NAMESPACE = "-registries"
# TLS certificates and their keys (daemon/certificates.py), one entry per app and name.
CERTIFICATE_NAMESPACE = "-certificates"
# Read as blobs whatever their stored type, so a row rewritten as text fails its
# integrity check (TamperedError) instead of failing to decode.
_SEALED = "CAST(nonce AS BLOB), CAST(ciphertext AS BLOB)"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS secrets (app TEXT NOT NULL, name TEXT NOT NULL, "
    "version INTEGER NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, created REAL NOT NULL, "
    "PRIMARY KEY (app, name, version))",
    # The last version ever given to each secret, kept after removal, so a secret
    # removed and set again never reuses a version number the daemon has seen.
    "CREATE TABLE IF NOT EXISTS secret_counters (app TEXT NOT NULL, name TEXT NOT NULL, "
    "last_version INTEGER NOT NULL, PRIMARY KEY (app, name))",
    "CREATE TABLE IF NOT EXISTS vault_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
)


def secret_not_found(app: str, name: str, *, version: int | None = None,
                     latest: int | None = None) -> SecretNotFoundError:
    """The error for a missing secret (or version), saying what to do."""
    if version is not None and latest is not None:
        return SecretNotFoundError(f"secret {name!r} of app {app!r} has no version {version}: the vault keeps "
                                   f"the last {KEEP_VERSIONS} versions, and the latest is {latest}")
    return SecretNotFoundError(f"app {app!r} has no secret {name!r}; set it with: flotilla secrets set {app} {name} "
                               "(the value is read from stdin)")


@dataclass(frozen=True)
class SecretInfo:
    """What may be said about a secret: never its value."""

    name: str
    version: int
    created: float
    versions: int

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "created": self.created,
                "versions": self.versions}


class Vault:
    """Versioned, encrypted secrets per app; thread-safe (one connection behind a lock)."""

    def __init__(self, db_path: Path, key: MasterKey, *, clock: Callable[[], float],
                 key_source: str | None = None) -> None:
        self._path = Path(db_path)
        self._key = key
        self._clock = clock
        self._key_source = key_source
        self._lock = threading.RLock()
        self._db = _connect(self._path)
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"Vault({str(self._path)!r}, fingerprint={self._key.fingerprint!r})"

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the key in use (safe to show)."""
        return self._key.fingerprint

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading -------------------------------------------------------------

    def get(self, app: str, name: str, version: int | None = None) -> bytes:
        """The value of a secret: its latest version, or the one asked for."""
        _check_names(app, name)
        with self._tx(write=False) as db:
            row = _select_row(db, app=app, name=name, version=version)
            latest = _latest(db, app=app, name=name) if row is None else None
            key = self._key
        if row is None:
            raise secret_not_found(app, name, version=version, latest=latest)
        found_version, nonce, ciphertext = row
        return self._open(key, app=app, name=name, version=found_version, sealed=(nonce, ciphertext))

    def version(self, app: str, name: str) -> int | None:
        """The latest version of a secret, or None if it is not set."""
        _check_names(app, name)
        with self._tx(write=False) as db:
            return _latest(db, app=app, name=name)

    def versions(self, app: str) -> dict[str, int]:
        """Every secret of the app with its latest version: cheap, for every reconcile."""
        _check_app(app)
        with self._tx(write=False) as db:
            rows = db.execute("SELECT name, MAX(version) FROM secrets WHERE app=? GROUP BY name",
                              (app,)).fetchall()
        return dict(rows)

    def values(self, app: str) -> builtins.list[bytes]:
        """Every kept version of every secret of the app, in plaintext: what to scrub from output."""
        _check_app(app)
        with self._tx(write=False) as db:
            rows = db.execute(f"SELECT name, version, {_SEALED} FROM secrets WHERE app=?", (app,)).fetchall()
            key = self._key
        return [self._open(key, app=app, name=name, version=version, sealed=(nonce, ciphertext))
                for name, version, nonce, ciphertext in rows]

    def list(self, app: str) -> builtins.list[SecretInfo]:
        """The app's secrets by name: latest version, when it was set, versions kept."""
        _check_app(app)
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT s.name, s.version, s.created, c.n FROM secrets AS s JOIN "
                "(SELECT name, MAX(version) AS v, COUNT(*) AS n FROM secrets WHERE app=? GROUP BY name) AS c "
                "ON s.name = c.name AND s.version = c.v WHERE s.app=? ORDER BY s.name",
                (app, app),
            ).fetchall()
        return [SecretInfo(name=r[0], version=r[1], created=r[2], versions=r[3]) for r in rows]

    # -- writing -------------------------------------------------------------

    def set(self, app: str, name: str, value: bytes) -> int:
        """Store a new version of a secret and return its number; older ones beyond 5 go."""
        _check_names(app, name)
        value = _check_value(name, value)
        with self._tx(write=True) as db:
            version = _next_version(db, app=app, name=name)
            nonce, ciphertext = _seal(self._key, aad=_aad(app=app, name=name, version=version), value=value)
            db.execute("INSERT INTO secrets (app, name, version, nonce, ciphertext, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (app, name, version, nonce, ciphertext, self._clock()))
            db.execute("DELETE FROM secrets WHERE app=? AND name=? AND version<=?",
                       (app, name, version - KEEP_VERSIONS))
        return version

    def remove(self, app: str, name: str) -> bool:
        """Delete every version of a secret; False if there was none."""
        _check_names(app, name)
        with self._tx(write=True) as db:
            return db.execute("DELETE FROM secrets WHERE app=? AND name=?", (app, name)).rowcount > 0

    def remove_app(self, app: str) -> int:
        """Delete every secret of the app; returns how many secrets (not versions) went."""
        _check_app(app)
        with self._tx(write=True) as db:
            (count,) = db.execute("SELECT COUNT(DISTINCT name) FROM secrets WHERE app=?", (app,)).fetchone()
            db.execute("DELETE FROM secrets WHERE app=?", (app,))
        return count

    def rekey(self, new_key: MasterKey) -> int:
        """Re-encrypt every stored version under ``new_key`` in one transaction.

        All or nothing: on any failure the transaction is rolled back and the
        vault, and this object, keep using the old key. Returns the rows re-encrypted.
        """
        with self._lock:
            try:
                with self._tx(write=True) as db:
                    count = self._reseal_all(db, new_key)
                    db.execute("UPDATE vault_meta SET v=? WHERE k='fingerprint'", (new_key.fingerprint,))
            except FlotillaError:
                raise
            except Exception as exc:
                raise SecretsError(
                    f"re-keying the vault failed ({type(exc).__name__}) and was undone; it still uses "
                    f"the old key (fingerprint {self._key.fingerprint})"
                ) from exc
            self._key = new_key
            self._drop_old_pages()
        return count

    # -- internals -----------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; SQLite errors become SecretsError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as exc:
                raise SecretsError(f"vault database error in {self._path}: {exc}") from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one worth reporting

    def _prepare(self) -> None:
        """Create the tables, then record the key's fingerprint or check it against the stored one."""
        with self._tx(write=True) as db:
            for statement in _SCHEMA:
                db.execute(statement)
            meta = dict(db.execute("SELECT k, v FROM vault_meta").fetchall())
            if "fingerprint" not in meta:
                db.executemany("INSERT INTO vault_meta (k, v) VALUES (?, ?)",
                               [("fingerprint", self._key.fingerprint), ("format", FORMAT)])
                return
            if meta.get("format", FORMAT) != FORMAT:
                raise SecretsError(f"the vault in {self._path} has format {meta['format']!r}, which this "
                                   f"version of Flotilla cannot read (it reads {FORMAT!r}); upgrade Flotilla")
            if meta["fingerprint"] != self._key.fingerprint:
                raise self._wrong_key(meta["fingerprint"])

    def _wrong_key(self, stored: str) -> WrongKeyError:
        fix = "set FLOTILLA_MASTER_KEY to the right key"
        if self._key_source and self._key_source != "env":
            fix += f" or restore {self._key_source}"
        elif not self._key_source:
            fix += " or restore the master key file (master.key in FLOTILLA_HOME)"
        return WrongKeyError(
            f"the master key does not match the one this vault was written with "
            f"(fingerprint {self._key.fingerprint}, expected {stored}); {fix}"
        )

    def _open(self, key: MasterKey, *, app: str, name: str, version: int,
              sealed: tuple[bytes, bytes]) -> bytes:
        nonce, ciphertext = sealed
        try:
            aad = _aad(app=app, name=name, version=version)
            return _unseal(key, aad=aad, nonce=nonce, ciphertext=ciphertext)
        except (InvalidTag, ValueError, TypeError):
            pass  # raised below, outside the except, so no cryptography frame rides along
        stored = self._stored_fingerprint()
        if stored is not None and stored != self._key.fingerprint:
            raise self._wrong_key(stored)  # another process re-keyed the vault under us
        raise TamperedError(
            f"secret {name!r} of app {app!r} (version {version}) failed its integrity check: the vault "
            f"file {self._path} was modified or damaged; restore it from a backup, or set the secret "
            f"again with: flotilla secrets set {app} {name}"
        )

    def _stored_fingerprint(self) -> str | None:
        """The fingerprint on disk (one statement: safe inside or outside a transaction)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT v FROM vault_meta WHERE k='fingerprint'").fetchone()
            except sqlite3.Error:
                return None
        return row[0] if row else None

    def _reseal_all(self, db: sqlite3.Connection, new_key: MasterKey) -> int:
        rows = db.execute(f"SELECT app, name, version, {_SEALED} FROM secrets "
                          "ORDER BY app, name, version").fetchall()
        for app, name, version, nonce, ciphertext in rows:
            value = self._open(self._key, app=app, name=name, version=version, sealed=(nonce, ciphertext))
            aad = _aad(app=app, name=name, version=version)
            new_nonce, new_ciphertext = _seal(new_key, aad=aad, value=value)
            db.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE app=? AND name=? AND version=?",
                       (new_nonce, new_ciphertext, app, name, version))
        return len(rows)

    def _drop_old_pages(self) -> None:
        """Best effort: fold the WAL into the file and truncate it, so ciphertexts under the
        old key do not linger there (secure_delete already zeroes freed space in the file)."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass


def _connect(path: Path) -> sqlite3.Connection:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise SecretsError(f"cannot open the vault in {path}: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL").fetchall()
        db.execute("PRAGMA secure_delete=ON").fetchall()
    except sqlite3.Error as exc:
        db.close()
        raise SecretsError(f"cannot open the vault in {path}: {exc}") from exc
    return db


def _select_row(db: sqlite3.Connection, *, app: str, name: str,
                version: int | None) -> tuple[int, bytes, bytes] | None:
    if version is None:
        return db.execute(f"SELECT version, {_SEALED} FROM secrets WHERE app=? AND name=? "
                          "ORDER BY version DESC LIMIT 1", (app, name)).fetchone()
    return db.execute(f"SELECT version, {_SEALED} FROM secrets WHERE app=? AND name=? AND version=?",
                      (app, name, version)).fetchone()


def _latest(db: sqlite3.Connection, *, app: str, name: str) -> int | None:
    return db.execute("SELECT MAX(version) FROM secrets WHERE app=? AND name=?", (app, name)).fetchone()[0]


def _next_version(db: sqlite3.Connection, *, app: str, name: str) -> int:
    row = db.execute("SELECT last_version FROM secret_counters WHERE app=? AND name=?",
                     (app, name)).fetchone()
    version = max(row[0] if row else 0, _latest(db, app=app, name=name) or 0) + 1
    db.execute("INSERT INTO secret_counters (app, name, last_version) VALUES (?, ?, ?) "
               "ON CONFLICT (app, name) DO UPDATE SET last_version=excluded.last_version",
               (app, name, version))
    return version


def _aad(*, app: str, name: str, version: int) -> bytes:
    """What a ciphertext is bound to: its app, secret and version, unambiguously (a JSON array)."""
    return json.dumps([_AAD_LABEL, app, name, version]).encode("utf-8")


def _seal(key: MasterKey, *, aad: bytes, value: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key.material).encrypt(nonce, value, aad)


def _unseal(key: MasterKey, *, aad: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return AESGCM(key.material).decrypt(nonce, ciphertext, aad)


def _check_app(app: object) -> None:
    if app in (REGISTRY_NAMESPACE, CERTIFICATE_NAMESPACE):
        return
    if not isinstance(app, str) or not _APP_NAME.fullmatch(app):
        raise SecretsError(f"invalid app name {_clip(app)}: use lowercase letters, digits and '-', "
                           "starting with a letter and not ending with '-', at most 30 characters")


def _check_names(app: object, name: object) -> None:
    _check_app(app)
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise SecretsError(f"invalid secret name {_clip(name)}: use lowercase letters, digits, '.', '_' "
                           "and '-', starting with a letter or digit, at most 63 characters, "
                           "e.g. db-password")


def _check_value(name: str, value: object) -> bytes:
    if isinstance(value, str):
        raise SecretsError(f"the value of secret {name!r} must be bytes, not text; encode it first")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SecretsError(f"the value of secret {name!r} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if not value:
        raise SecretsError(f"the value of secret {name!r} is empty; a secret holds at least one byte "
                           "(to drop a secret, remove it instead)")
    if len(value) > MAX_VALUE_BYTES:
        raise SecretsError(f"the value of secret {name!r} is {len(value)} bytes; a secret holds at most "
                           f"{MAX_VALUE_BYTES} bytes (64 KiB)")
    return value


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
