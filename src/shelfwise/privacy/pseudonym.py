"""Keyed pseudonyms for user ids: the store never holds the id a shop sent.

With ``[privacy] pseudonymize = true`` every external user id is replaced at the boundary (the
engine's methods, which the HTTP routes and ``shelfwise.open`` share, and ``shelfwise import``)
by ``pu_`` + the first 32 hex digits (128 bits) of HMAC-SHA256(secret, id). The mapping is
deterministic, so a feed, a profile or a deletion asked with the raw id finds the stored rows;
without the secret the pseudonym cannot be reversed or recomputed from a guessed id. Anonymous
visitors (``anon:<session>``) keep their prefix and have the session part hashed, so events
posted for a session still meet that session's impressions. Changing the secret orphans every
stored user (their data stays, under ids nobody can ask for again): keep it with the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from shelfwise.exceptions import ConfigError, InvalidRequestError

PREFIX = "pu_"
"""Marks a stored id as a pseudonym."""
HEX_DIGITS = 32
ANON = "anon:"
MIN_SECRET = 16
_BAD_ID = re.compile(r"[\x00-\x1f\x7f]")


def valid_id(user_id: str) -> bool:
    """1-256 characters without control characters, as the schemas want ids."""
    return 1 <= len(user_id) <= 256 and not _BAD_ID.search(user_id)


class Pseudonymizer:
    """Maps raw user ids to their stored pseudonyms (``__call__``) with one secret key."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"privacy.secret must have at least {MIN_SECRET} characters "
                              "(set it in [privacy] or SHELFWISE_PRIVACY__SECRET)")
        self._key = secret.encode("utf-8")

    def _hash(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:HEX_DIGITS]

    def __call__(self, user_id: str) -> str:
        """The stored id of ``user_id``; refuses what the schemas refuse (empty, over 256
        characters, control characters), so a bad id is an error with or without hashing."""
        if not valid_id(user_id):
            raise InvalidRequestError(
                f"user_id {user_id[:60]!r}: use 1-256 characters without control characters")
        if user_id.startswith(ANON):
            return ANON + self._hash(user_id.removeprefix(ANON))
        return self._hash(user_id)

    def session(self, session_id: str) -> str:
        """The stored form of an anonymous session id (impressions go to ``anon:<this>``)."""
        return self._hash(session_id)
