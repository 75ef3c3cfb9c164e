"""The errors Postage raises, all under one base so callers can catch the library's own.

Each error's message tells the user what went wrong and, where it can, what to do about it.
The hierarchy is part of the API: applications catch these classes by name.

    PostageError
     +-- MessageFormatError     (also ValueError): a body that is not a Postage envelope
     +-- EncodeError            (also TypeError): content the encoder cannot represent
     +-- PublishError: the broker did not take a message
     |    +-- NackError: the broker nacked a confirmed publish
     |    +-- UnroutableError: a mandatory publish reached no queue
     +-- BrokerConnectionError: no usable connection to the broker
          +-- AuthenticationError: wrong user or password (permanent: never retried)
          +-- VirtualHostError: the virtual host does not exist or is forbidden (permanent)
          +-- TLSVerificationError: the broker's certificate does not verify (permanent)

Whether retrying can help is decided once, here: an error class with ``permanent = True`` is
never retried (by a reconnecting session, or by the twistd service's first connection).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerConnectionError",
    "EncodeError",
    "MessageFormatError",
    "NackError",
    "PostageError",
    "PublishError",
    "TLSVerificationError",
    "UnroutableError",
    "VirtualHostError",
]


class PostageError(Exception):
    """The base of every error Postage raises on purpose."""


class MessageFormatError(PostageError, ValueError):
    """A received body is not a valid Postage envelope; the delivery is rejected, not retried."""


class EncodeError(PostageError, TypeError):
    """Content cannot be encoded; raised before anything is published."""


class PublishError(PostageError):
    """The broker did not accept a published message."""


class NackError(PublishError):
    """The broker answered a confirmed publish with basic.nack."""


class UnroutableError(PublishError):
    """A mandatory publish was returned by the broker: no queue is bound for its key."""


class BrokerConnectionError(PostageError):
    """The broker could not be reached, or the connection was lost and not restored.

    Transient unless a subclass says otherwise: an unreachable broker may come back."""

    permanent = False


class AuthenticationError(BrokerConnectionError):
    """The broker refused the credentials. Permanent: retrying cannot help."""

    permanent = True


class VirtualHostError(BrokerConnectionError):
    """The virtual host does not exist or the user may not use it. Permanent."""

    permanent = True


class TLSVerificationError(BrokerConnectionError):
    """The broker's TLS certificate does not verify (unknown CA, expired, or issued for
    another host name). Permanent: the same certificate is presented on every attempt, and
    retrying would only hide a misconfiguration or an impostor."""

    permanent = True
