"""``quantmesh.secrets``: masking DSNs and redacting secrets from text."""

from __future__ import annotations

import pytest

from quantmesh.secrets import dsn_passwords, mask_credentials, mask_dsn, redact


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql+asyncpg://u:p%40ss@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("mysql+aiomysql://u@h/db", "mysql+aiomysql://u@h/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("postgresql://h/db?user=u&password=pw&x=1", "postgresql://h/db?user=u&password=***&x=1"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'a b\\'c' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=pw", "host=h sslpassword=***"),
        ("user=me@corp host=h password=pw", "user=me@corp host=h password=***"),
        ("u:pw@tcp(h:3306)/db?charset=utf8mb4", "u:***@tcp(h:3306)/db?charset=utf8mb4"),
        ("u:p@ss:w@tcp(h:3306)/db", "u:***@tcp(h:3306)/db"),
        ("u:pw@/db", "u:***@/db"),
        ("u@tcp(h:3306)/db", "u@tcp(h:3306)/db"),
        ("./data/quantmesh.db", "./data/quantmesh.db"),
        ("sqlite+aiosqlite:///./data/q.db", "sqlite+aiosqlite:///./data/q.db"),
        ("", ""),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_dsn_passwords_finds_raw_and_decoded() -> None:
    assert dsn_passwords("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert dsn_passwords("host=h password='a b'") == ["a b"]
    assert dsn_passwords("./data/q.db") == []


def test_redact() -> None:
    text = "connect password=hunter2 token=abc hunter2abc"
    assert redact(text, ["hunter2", "", "hunter2abc"]) == "connect password=*** token=abc ***"
    assert redact("nothing here", []) == "nothing here"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("connect to postgresql://q:pw@db/q", "connect to postgresql://***@db/q"),
        ("mysql+aiomysql://user@h/db refused", "mysql+aiomysql://***@h/db refused"),
        ("connect to redis://h:6379/0 refused", "connect to redis://h:6379/0 refused"),
        ("auth failed (password=pw user=q)", "auth failed (password=*** user=q)"),
        ("PASSWORD: pw; next", "PASSWORD: *** next"),
        ("sslpassword = 'pw' rejected", "sslpassword = *** rejected"),
        ("no credentials here", "no credentials here"),
        ("", ""),
    ],
)
def test_mask_credentials_without_knowing_them(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked
