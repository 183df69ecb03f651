"""Accounts the emulator knows: (appid, SecretId, SecretKey) triples, from flags or a JSON file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import orjson


class Account(NamedTuple):
    appid: str
    secret_id: str
    secret_key: str

    def __repr__(self) -> str:  # never print the key
        return f"Account(appid={self.appid!r}, secret_id={self.secret_id!r}, secret_key=…)"


# The development account devstack, the demo and the tests use.
DEV_ACCOUNT = Account("1250000000", "AKIDdevstack0000000000000000000000000", "devstack-secret-key-0000000000000")


def parse_account(spec: str) -> Account:
    """``APPID:SECRET_ID:SECRET_KEY`` (the key may itself contain ':') → Account; ValueError names the problem."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError("an account is APPID:SECRET_ID:SECRET_KEY with three non-empty parts")
    return Account(*parts)


def as_account(value: Account | tuple[str, str, str] | str | dict[str, Any]) -> Account:
    if isinstance(value, Account):
        return value
    if isinstance(value, str):
        return parse_account(value)
    if isinstance(value, dict):
        try:
            return Account(str(value["appid"]), str(value["secret_id"]), str(value["secret_key"]))
        except KeyError as exc:
            raise ValueError(f"account entry lacks {exc.args[0]!r}") from exc
    appid, secret_id, secret_key = value
    return Account(str(appid), str(secret_id), str(secret_key))


def load_accounts_file(path: str | Path) -> list[Account]:
    """A JSON file: ``[{"appid":…, "secret_id":…, "secret_key":…}, …]`` or ``{"accounts": [same]}``."""
    data = orjson.loads(Path(path).read_bytes())
    if isinstance(data, dict):
        data = data.get("accounts")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of accounts or {{'accounts': [...]}}")
    return [as_account(entry) for entry in data]


class AccountBook:
    """Lookups the signature check needs: appids, and SecretId → account."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self.accounts = tuple(accounts)
        self.appids = frozenset(a.appid for a in self.accounts)
        self.by_secret_id = {a.secret_id: a for a in self.accounts}
