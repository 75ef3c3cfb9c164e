"""Postage on the Twisted reactor: everything here returns Deferreds.

Importing this package does not install a reactor (pika's Twisted adapter is imported only
when a connection is made), so an application can still choose its own reactor first.
"""

from postage.retry import RetryPolicy
from postage.twisted.consumer import GenericConsumer
from postage.twisted.processor import MessageProcessor
from postage.twisted.producer import GenericProducer
from postage.twisted.scheduler import MicroScheduler

__all__ = ["GenericConsumer", "GenericProducer", "MessageProcessor", "MicroScheduler",
           "RetryPolicy"]
