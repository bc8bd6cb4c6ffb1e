"""The vault and the master key, against real SQLite files and real AES-256-GCM.

These tests are the evidence for the vault's promises: values round-trip and
are versioned, never leave it in plaintext (not in the database file, its WAL,
reprs or errors), a wrong key or a tampered row is refused without anything
being overwritten, and a re-key is all or nothing.
"""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from flotilla.errors import FlotillaError, NotFoundError
from flotilla.secrets import (
    KEEP_VERSIONS,
    MAX_VALUE_BYTES,
    MasterKey,
    SecretNotFoundError,
    SecretsError,
    TamperedError,
    Vault,
    WrongKeyError,
    generate_key,
    load_master_key,
    write_key_file,
)
from flotilla.secrets import vault as vault_module

CANARY = b"canary-7f3a9"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def key() -> MasterKey:
    return generate_key()


@pytest.fixture
def vault(db_path: Path, key: MasterKey):
    with Vault(db_path, key, clock=Clock()) as v:
        yield v


def raw_rows(db_path: Path) -> list[tuple]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT app, name, version, CAST(nonce AS BLOB), CAST(ciphertext AS BLOB) "
                          "FROM secrets ORDER BY app, name, version").fetchall()
    finally:
        db.close()


def execute(db_path: Path, sql: str, params: tuple = ()) -> None:
    db = sqlite3.connect(db_path)
    with db:
        db.execute(sql, params)
    db.close()


def db_files(db_path: Path) -> list[Path]:
    candidates = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
    return [p for p in candidates if p.exists()]


# -- round trip and versions ---------------------------------------------------


def test_round_trip(vault: Vault) -> None:
    assert vault.set("shop", "db-password", b"hunter2") == 1
    assert vault.get("shop", "db-password") == b"hunter2"
    assert vault.version("shop", "db-password") == 1
    assert vault.version("shop", "missing") is None


def test_binary_values_and_the_size_limit_round_trip(vault: Vault) -> None:
    blob = bytes(range(256)) * (MAX_VALUE_BYTES // 256)
    vault.set("shop", "tls.key", blob)
    assert vault.get("shop", "tls.key") == blob


def test_versions_increment_and_old_ones_stay_readable_until_pruned(vault: Vault) -> None:
    for n in range(1, 8):
        assert vault.set("shop", "api-key", f"value-{n}".encode()) == n
    assert vault.get("shop", "api-key") == b"value-7"
    kept = range(8 - KEEP_VERSIONS, 8)
    for n in kept:
        assert vault.get("shop", "api-key", n) == f"value-{n}".encode()
    for n in (1, 2):
        with pytest.raises(SecretNotFoundError, match=f"no version {n}.*latest is 7"):
            vault.get("shop", "api-key", n)
    assert [r[2] for r in raw_rows(vault._path)] == list(kept)


def test_a_secret_removed_and_set_again_never_reuses_a_version(vault: Vault) -> None:
    vault.set("shop", "token", b"one")
    vault.set("shop", "token", b"two")
    assert vault.remove("shop", "token") is True
    assert vault.version("shop", "token") is None
    assert vault.set("shop", "token", b"three") == 3
    assert vault.remove_app("shop") == 1
    assert vault.set("shop", "token", b"four") == 4


def test_missing_secret_names_app_secret_and_the_command(vault: Vault) -> None:
    with pytest.raises(SecretNotFoundError) as info:
        vault.get("shop", "db-password")
    assert isinstance(info.value, NotFoundError)
    assert info.value.exit_code == 3
    assert "'shop'" in info.value.message and "'db-password'" in info.value.message
    assert "flotilla secrets set shop db-password" in info.value.message


def test_list_and_versions_describe_without_values(vault: Vault) -> None:
    vault.set("shop", "db-password", CANARY)
    vault.set("shop", "db-password", CANARY + b"-2")
    vault.set("shop", "api-key", CANARY + b"-3")
    vault.set("other", "api-key", CANARY + b"-4")
    infos = vault.list("shop")
    assert [(i.name, i.version, i.versions) for i in infos] == [("api-key", 1, 1), ("db-password", 2, 2)]
    assert (infos[0].created, infos[1].created) == (1003.0, 1002.0)  # when the latest version was set
    assert vault.versions("shop") == {"api-key": 1, "db-password": 2}
    assert vault.versions("nobody") == {} and vault.list("nobody") == []
    shown = [repr(infos), str(infos), repr(vault.versions("shop")), repr(vault)]
    shown += [repr(getattr(i, f)) for i in infos for f in ("name", "version", "created", "versions")]
    shown += [repr(i.to_dict()) for i in infos]
    assert not any("canary" in text for text in shown)


def test_remove_and_remove_app(vault: Vault) -> None:
    vault.set("shop", "a", b"1")
    vault.set("shop", "a", b"2")
    vault.set("shop", "b", b"3")
    vault.set("blog", "a", b"4")
    assert vault.remove("shop", "a") is True
    assert vault.remove("shop", "a") is False
    assert vault.remove_app("shop") == 1
    assert vault.remove_app("shop") == 0
    assert vault.versions("shop") == {}
    assert vault.get("blog", "a") == b"4"


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "DB_PASSWORD", "-x", ".x", "a" * 64, "a b", "a/b", "é", "x\n"])
def test_bad_secret_names_are_refused_with_a_hint(vault: Vault, name: str) -> None:
    with pytest.raises(SecretsError, match="invalid secret name.*lowercase letters"):
        vault.set("shop", name, b"v")


@pytest.mark.parametrize("app", ["", "Shop", "1shop", "shop-", "a" * 31, "sh_op", "shop\n"])
def test_bad_app_names_are_refused_with_a_hint(vault: Vault, app: str) -> None:
    with pytest.raises(SecretsError, match="invalid app name.*starting with a letter"):
        vault.set(app, "x", b"v")


def test_app_names_follow_the_spec_rule() -> None:
    from flotilla.spec.checks import NAME_MAX, NAME_RULE

    names = ["a", "a1", "a-b", "a-", "-a", "1a", "A", "a" * 30, "a" * 31, "a--b", "ab-c9", "a_b"]
    for name in names:
        spec_ok = bool(NAME_RULE.fullmatch(name)) and len(name) <= NAME_MAX
        assert bool(vault_module._APP_NAME.fullmatch(name)) == spec_ok, name


def test_values_must_be_non_empty_bytes_of_at_most_64_kib(vault: Vault) -> None:
    with pytest.raises(SecretsError, match="empty"):
        vault.set("shop", "x", b"")
    with pytest.raises(SecretsError, match="at most 65536 bytes"):
        vault.set("shop", "x", b"v" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(SecretsError, match="bytes, not text") as info:
        vault.set("shop", "x", "canary-text")  # type: ignore[arg-type]
    assert "canary" not in str(info.value)
    assert vault.set("shop", "x", bytearray(b"ok")) == 1
    assert vault.versions("shop") == {"x": 1}


def test_errors_have_their_place_in_the_tree() -> None:
    assert issubclass(SecretsError, FlotillaError) and SecretsError.exit_code == 9
    assert SecretsError.code == "secrets_error"
    assert issubclass(WrongKeyError, SecretsError) and issubclass(TamperedError, SecretsError)
    assert issubclass(SecretNotFoundError, NotFoundError)


# -- at rest -------------------------------------------------------------------


def test_plaintext_never_reaches_the_database_files(vault: Vault, db_path: Path) -> None:
    vault.set("shop", "db-password", CANARY)
    vault.set("shop", "db-password", b"x" + CANARY + b"x")
    vault.set("shop", "big", CANARY * 4000)
    assert vault.get("shop", "db-password") == b"x" + CANARY + b"x"
    files = db_files(db_path)
    assert Path(f"{db_path}-wal") in files  # checked while open, WAL included
    for path in files:
        assert CANARY not in path.read_bytes(), path
    vault.close()
    for path in db_files(db_path):
        assert CANARY not in path.read_bytes(), path


def test_the_database_file_is_private(db_path: Path, key: MasterKey) -> None:
    Vault(db_path, key, clock=Clock()).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_same_value_twice_gives_fresh_nonces_and_ciphertexts(vault: Vault, db_path: Path) -> None:
    vault.set("shop", "a", b"same")
    vault.set("shop", "a", b"same")
    vault.set("shop", "b", b"same")
    rows = raw_rows(db_path)
    assert len({r[3] for r in rows}) == 3 and all(len(r[3]) == 12 for r in rows)
    assert len({r[4] for r in rows}) == 3


def test_the_key_and_vault_never_show_key_material(key: MasterKey, vault: Vault) -> None:
    for text in (repr(key), str(key), repr(vault), f"{key}"):
        assert key.to_base64() not in text and key.material.hex() not in text
        assert key.fingerprint in text
    assert re.fullmatch(r"[0-9a-f]{16}", key.fingerprint)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)


# -- wrong key and tampering ---------------------------------------------------


def test_a_wrong_key_is_refused_on_open_and_nothing_changes(db_path: Path, key: MasterKey) -> None:
    with Vault(db_path, key, clock=Clock()) as v:
        v.set("shop", "db-password", b"hunter2")
    before = db_path.read_bytes()
    other = generate_key()
    with pytest.raises(WrongKeyError) as info:
        Vault(db_path, other, clock=Clock(), key_source="/home/x/master.key")
    message = info.value.message
    assert f"fingerprint {other.fingerprint}, expected {key.fingerprint}" in message
    assert "FLOTILLA_MASTER_KEY" in message and "restore /home/x/master.key" in message
    assert db_path.read_bytes() == before
    with Vault(db_path, key, clock=Clock()) as v:
        assert v.get("shop", "db-password") == b"hunter2"


def test_a_wrong_key_is_refused_even_on_an_empty_vault(db_path: Path, key: MasterKey) -> None:
    Vault(db_path, key, clock=Clock()).close()
    with pytest.raises(WrongKeyError):
        Vault(db_path, generate_key(), clock=Clock(), key_source="env")


@pytest.mark.parametrize("column", ["nonce", "ciphertext"])
def test_a_flipped_bit_is_tampering(vault: Vault, db_path: Path, column: str) -> None:
    vault.set("shop", "db-password", CANARY)
    (blob,) = [r[3 if column == "nonce" else 4] for r in raw_rows(db_path)]
    flipped = bytes([blob[0] ^ 1]) + blob[1:]
    execute(db_path, f"UPDATE secrets SET {column}=?", (flipped,))
    with pytest.raises(TamperedError) as info:
        vault.get("shop", "db-password")
    assert "'db-password'" in info.value.message and "'shop'" in info.value.message
    assert "version 1" in info.value.message and "modified or damaged" in info.value.message
    assert "canary" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert [r[3 if column == "nonce" else 4] for r in raw_rows(db_path)] == [flipped]  # nothing rewritten


def test_a_truncated_nonce_is_tampering(vault: Vault, db_path: Path) -> None:
    vault.set("shop", "db-password", CANARY)
    execute(db_path, "UPDATE secrets SET nonce=x'00'")
    with pytest.raises(TamperedError):
        vault.get("shop", "db-password")


def test_a_ciphertext_moved_to_another_row_does_not_open(vault: Vault, db_path: Path) -> None:
    vault.set("shop", "db-password", b"p1")
    vault.set("shop", "api-key", b"k1")
    execute(db_path, "UPDATE secrets SET name='swap' WHERE name='db-password'")
    execute(db_path, "UPDATE secrets SET name='db-password' WHERE name='api-key'")
    execute(db_path, "UPDATE secrets SET name='api-key' WHERE name='swap'")
    for name in ("db-password", "api-key"):
        with pytest.raises(TamperedError, match=name):
            vault.get("shop", name)


def test_a_ciphertext_moved_to_another_app_or_version_does_not_open(vault: Vault, db_path: Path) -> None:
    vault.set("shop", "token", b"v1")
    vault.set("shop", "token", b"v2")
    execute(db_path, "DELETE FROM secrets WHERE version=1")
    execute(db_path, "UPDATE secrets SET version=1")
    with pytest.raises(TamperedError, match="version 1"):
        vault.get("shop", "token", 1)
    execute(db_path, "UPDATE secrets SET app='blog', version=2")
    with pytest.raises(TamperedError, match="'blog'"):
        vault.get("blog", "token")


# -- rekey ---------------------------------------------------------------------


def fill(vault: Vault) -> dict[tuple[str, str, int], bytes]:
    values = {}
    for app in ("shop", "blog"):
        for name in ("a", "b"):
            for n in (1, 2):
                value = f"{app}/{name}/{n}".encode() + CANARY
                values[(app, name, vault.set(app, name, value))] = value
    return values


def assert_readable(vault: Vault, values: dict) -> None:
    for (app, name, version), value in values.items():
        assert vault.get(app, name, version) == value


def test_rekey_keeps_every_secret_and_retires_the_old_key(db_path: Path, key: MasterKey) -> None:
    new = generate_key()
    with Vault(db_path, key, clock=Clock()) as v:
        values = fill(v)
        old_rows = raw_rows(db_path)
        assert v.rekey(new) == len(values) == 8
        assert v.fingerprint == new.fingerprint
        assert_readable(v, values)
        assert v.set("shop", "a", b"after") == 3
    new_rows = raw_rows(db_path)
    assert not {r[3] for r in old_rows} & {r[3] for r in new_rows}  # fresh nonces
    for path in db_files(db_path):
        data = path.read_bytes()
        assert not any(r[4] in data for r in old_rows), path  # old ciphertexts scrubbed
    with pytest.raises(WrongKeyError):
        Vault(db_path, key, clock=Clock())
    with Vault(db_path, new, clock=Clock()) as v:
        assert_readable(v, values)


def test_a_rekey_that_fails_midway_leaves_the_old_key_in_charge(db_path: Path, key: MasterKey,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    new = generate_key()
    real_seal = vault_module._seal
    calls = []

    def failing_seal(k, *, aad, value):
        calls.append(aad)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real_seal(k, aad=aad, value=value)

    with Vault(db_path, key, clock=Clock()) as v:
        values = fill(v)
        before = raw_rows(db_path)
        monkeypatch.setattr(vault_module, "_seal", failing_seal)
        with pytest.raises(SecretsError, match="undone.*old key") as info:
            v.rekey(new)
        assert isinstance(info.value.__cause__, RuntimeError)
        monkeypatch.setattr(vault_module, "_seal", real_seal)
        assert v.fingerprint == key.fingerprint
        assert_readable(v, values)
    assert raw_rows(db_path) == before
    with Vault(db_path, key, clock=Clock()) as v:
        assert_readable(v, values)
    with pytest.raises(WrongKeyError):
        Vault(db_path, new, clock=Clock())


def test_a_rekey_meeting_a_tampered_row_changes_nothing(vault: Vault, db_path: Path, key: MasterKey) -> None:
    values = fill(vault)
    execute(db_path, "UPDATE secrets SET ciphertext = ciphertext || x'00' WHERE app='shop' AND name='b' "
                     "AND version=2")
    before = raw_rows(db_path)
    with pytest.raises(TamperedError, match="'b' of app 'shop'"):
        vault.rekey(generate_key())
    assert raw_rows(db_path) == before and vault.fingerprint == key.fingerprint
    del values[("shop", "b", 2)]
    assert_readable(vault, values)


def test_a_vault_rekeyed_by_another_process_reports_the_wrong_key(db_path: Path, key: MasterKey) -> None:
    with Vault(db_path, key, clock=Clock()) as stale, Vault(db_path, key, clock=Clock()) as other:
        stale.set("shop", "a", b"v")
        other.rekey(generate_key())
        with pytest.raises(WrongKeyError):
            stale.get("shop", "a")


# -- threads -------------------------------------------------------------------


def test_many_threads_share_one_vault(vault: Vault) -> None:
    errors = []

    def work(i: int) -> None:
        try:
            for n in range(20):
                name = f"s{i}"
                vault.set("shop", name, f"{i}-{n}".encode())
                assert vault.get("shop", name) == f"{i}-{n}".encode()
                vault.versions("shop")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    rekeyed = vault.rekey(generate_key())
    for t in threads:
        t.join()
    assert not errors and rekeyed > 0
    assert vault.versions("shop") == {f"s{i}": 20 for i in range(6)}


# -- the master key --------------------------------------------------------------


def test_a_new_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old_umask = os.umask(0)
    try:
        key, source = load_master_key(home=home, environ={})
    finally:
        os.umask(old_umask)
    path = home / "master.key"
    assert source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key.to_base64().encode() + b"\n"
    assert base64.b64decode(path.read_bytes()) == key.material
    again, source_again = load_master_key(home=home, environ={})
    assert again == key and source_again == source


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_a_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    load_master_key(home=tmp_path, environ={})
    path = tmp_path / "master.key"
    os.chmod(path, mode)
    if mode == 0o700:  # owner-only bits are fine
        load_master_key(home=tmp_path, environ={})
        return
    with pytest.raises(SecretsError, match=f"chmod 600 {re.escape(str(path))}"):
        load_master_key(home=tmp_path, environ={})


def test_a_damaged_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(SecretsError, match="does not hold a valid key"):
        load_master_key(home=tmp_path, environ={})
    assert path.read_bytes() == b"not a key\n"


def test_write_key_file_replaces_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first, second = generate_key(), generate_key()
    write_key_file(path, first)
    write_key_file(path, second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(home=tmp_path, environ={})[0] == second
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temp files left


def urlsafe_material() -> bytes:
    material = bytes([0xFB, 0xFF]) * 16  # encodes with '+' and '/' in standard base64
    assert b"+" in base64.b64encode(material) or b"/" in base64.b64encode(material)
    return material


@pytest.mark.parametrize("encode", [
    lambda m: base64.b64encode(m).decode(),
    lambda m: base64.urlsafe_b64encode(m).decode(),
    lambda m: base64.urlsafe_b64encode(m).decode().rstrip("="),
    lambda m: m.hex(),
    lambda m: m.hex().upper(),
    lambda m: f"  {base64.b64encode(m).decode()}\n",
], ids=["base64", "urlsafe", "urlsafe-unpadded", "hex", "HEX", "whitespace"])
def test_the_env_key_wins_in_every_accepted_format(tmp_path: Path, encode) -> None:
    material = urlsafe_material()
    write_key_file(tmp_path / "master.key", generate_key())
    key, source = load_master_key(home=tmp_path, environ={"FLOTILLA_MASTER_KEY": encode(material)})
    assert source == "env" and key.material == material


@pytest.mark.parametrize("text", [
    "", "   ", "short", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(),
    "ab" * 31, "ab" * 33, "zz" * 32, "not base64 at all!",
])
def test_a_bad_env_key_is_refused_with_how_to_make_one(tmp_path: Path, text: str) -> None:
    with pytest.raises(SecretsError) as info:
        load_master_key(home=tmp_path, environ={"FLOTILLA_MASTER_KEY": text})
    message = info.value.message
    assert "FLOTILLA_MASTER_KEY" in message and "exactly 32 bytes" in message and "64 hex" in message
    assert 'python3 -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"' in message
    if text.strip():
        assert text.strip() not in message
    assert not (tmp_path / "master.key").exists()  # no fall-back to a new key file


def test_keys_compare_by_value_and_reject_bad_material() -> None:
    material = os.urandom(32)
    assert MasterKey(material) == MasterKey(material) and MasterKey(material) != generate_key()
    assert MasterKey(material).fingerprint == MasterKey(material).fingerprint
    with pytest.raises(SecretsError):
        MasterKey(b"short")
