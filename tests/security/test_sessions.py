"""Password hashes and signed session cookies."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stdout

import pytest

from watchkeeper.cli import main as cli_main
from watchkeeper.security.passwords import hash_password, verify_password
from watchkeeper.security.sessions import SessionSigner


def test_password_hashes_are_salted_and_verify() -> None:
    a, b = hash_password("s3cret-pass", n=1024), hash_password("s3cret-pass", n=1024)
    assert a != b and "s3cret" not in a
    assert verify_password("s3cret-pass", a) and verify_password("s3cret-pass", b)
    assert not verify_password("s3cret-pasS", a)
    for broken in ("", "scrypt$1$2", "pbkdf2$1$1$1$AA$AA", a.replace("$1024$", "$1000$")):
        assert not verify_password("s3cret-pass", broken)


def test_sessions_are_signed_and_expire() -> None:
    signer = SessionSigner(b"secret-one", max_age_seconds=100)
    value = signer.issue("alice", "editor", now_seconds=0)
    session = signer.read(value, now_seconds=50)
    assert session is not None and (session.user, session.role) == ("alice", "editor") and session.csrf
    assert signer.read(value, now_seconds=100) is None
    assert SessionSigner(b"secret-two", max_age_seconds=100).read(value, now_seconds=1) is None
    body, _, sig = value.partition(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    assert signer.read(f"{forged_body}.{sig}", now_seconds=1) is None
    assert signer.read("garbage", now_seconds=1) is None and signer.read(None, now_seconds=1) is None


def test_users_hash_password_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["users", "hash-password"]) == 0
    assert verify_password("a-long-password", out.getvalue().strip())
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert cli_main(["users", "hash-password"]) == 1
