"""Privacy: PII scrubbing of stored free text, keyed pseudonyms of user ids, and differential
privacy (Laplace noise) for published counts."""

from shelfwise.privacy.dp import laplace_mechanism, private_popularity
from shelfwise.privacy.scrub import scrub_text, scrub_value

__all__ = ["laplace_mechanism", "private_popularity", "scrub_text", "scrub_value"]
