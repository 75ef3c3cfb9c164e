"""Postage: components that talk through AMQP messages on RabbitMQ, on Twisted and pika.

This package is the pure core (messages, envelope, encoders, fingerprints, exchanges,
handler dispatch, microthreads): importing it starts no reactor and opens no connection.
Twisted applications use :mod:`postage.twisted`; scripts use the blocking
:mod:`postage.messaging`, the API of Postage 3.0.3.
"""

from postage.encoders import Encoder, JsonEncoder
from postage.errors import (
    AuthenticationError,
    BrokerConnectionError,
    EncodeError,
    MessageFormatError,
    NackError,
    PostageError,
    PublishError,
    TLSVerificationError,
    UnroutableError,
    VirtualHostError,
)
from postage.exchanges import Exchange
from postage.fingerprint import Fingerprint
from postage.handlers import (
    FilterError,
    Handler,
    MessageFilter,
    MessageHandler,
    MessageHandlerFullBody,
    RpcHandler,
)
from postage.messages import (
    Message,
    MessageCommand,
    MessageResult,
    MessageResultError,
    MessageResultException,
    MessageStatus,
    RpcCommand,
    decode_envelope,
)
from postage.microthreads import ExitScheduler, MicroScheduler, MicroThread
from postage.retry import RetryPolicy

__version__ = "4.0.0"

__all__ = [
    "AuthenticationError",
    "BrokerConnectionError",
    "EncodeError",
    "Encoder",
    "Exchange",
    "ExitScheduler",
    "FilterError",
    "Fingerprint",
    "Handler",
    "JsonEncoder",
    "Message",
    "MessageCommand",
    "MessageFilter",
    "MessageFormatError",
    "MessageHandler",
    "MessageHandlerFullBody",
    "MessageResult",
    "MessageResultError",
    "MessageResultException",
    "MessageStatus",
    "MicroScheduler",
    "MicroThread",
    "NackError",
    "PostageError",
    "PublishError",
    "RetryPolicy",
    "RpcCommand",
    "RpcHandler",
    "TLSVerificationError",
    "UnroutableError",
    "VirtualHostError",
    "__version__",
    "decode_envelope",
]
