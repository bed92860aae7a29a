"""Where the store is: a SQLite file (a path) or a PostgreSQL database (a ``postgresql://`` URL).

A URL may carry a password. :class:`PostgresUrl` prints without it (``str``, ``repr``, f-strings), so a
message or an error that names the store never shows it; only :attr:`PostgresUrl.secret` holds the URL
whole, for the driver and for child processes' environments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import urlsplit, urlunsplit

_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*")


@dataclass(frozen=True, eq=True)
class PostgresUrl:
    secret: str  # the URL as given, password included: for the driver only, never printed

    def __post_init__(self) -> None:
        parts = urlsplit(self.secret)
        if not parts.path.strip("/"):
            raise ValueError(f"{self} names no database; give one such as postgresql://user@host:5432/ups")
        try:
            parts.port  # noqa: B018  (a non-numeric port raises here)
        except ValueError:
            raise ValueError(f"{self} has a port that is not a number") from None

    def __str__(self) -> str:
        return self.redact_text(self.secret)

    def __repr__(self) -> str:
        return f"PostgresUrl({str(self)!r})"

    @staticmethod
    def redact_text(text: str) -> str:
        """``text`` with the password of every PostgreSQL URL in it replaced by ``***``."""
        return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", text))

    @property
    def database(self) -> str:
        return urlsplit(self.secret).path.strip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.secret).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.secret).port or 5432

    def with_database(self, name: str) -> "PostgresUrl":
        parts = urlsplit(self.secret)
        return PostgresUrl(urlunsplit(parts._replace(path=f"/{name}")))

    @property
    def state_name(self) -> str:
        """A folder name for what is kept beside this store on the machine (recovery, logs)."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.host}-{self.port}-{self.database}")


#: a store location: a SQLite file or a PostgreSQL database
DbLocation = Union[Path, PostgresUrl]


def parse_db(value: object) -> DbLocation:
    """A path for anything but a ``postgresql://`` (or ``postgres://``) URL."""
    if isinstance(value, (Path, PostgresUrl)):
        return value
    text = str(value)
    if text.startswith(_SCHEMES):
        return PostgresUrl(text)
    if "://" in text:
        raise ValueError(f"{PostgresUrl.redact_text(text)!r}: only postgresql:// URLs or file paths name a store")
    return Path(text)


def switched_to(current: DbLocation, recorded: str) -> DbLocation:
    """The store a switch record (written with the location as printed, its password hidden) names,
    seen from ``current``: a file, or a database on the server of ``current``, reached as ``current`` is."""
    target = parse_db(recorded)
    if isinstance(target, PostgresUrl) and isinstance(current, PostgresUrl):
        return current.with_database(target.database)
    return target


def is_postgres(db: DbLocation) -> bool:
    return isinstance(db, PostgresUrl)


def location_arg(db: DbLocation) -> str:
    """The location whole, password included, for a child process's argv or environment (never printed)."""
    return db.secret if isinstance(db, PostgresUrl) else str(db)
