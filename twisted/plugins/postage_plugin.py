"""The ``postage`` twistd plugin: ``twistd -n postage --processor package.module:Class``.

A ``ServiceMaker`` names the module that holds ``Options`` and ``makeService``, so listing
plugins (``twistd --help``) imports nothing of Postage and installs no reactor.
"""

from twisted.application.service import ServiceMaker

postage = ServiceMaker(
    "Postage",
    "postage.twisted.service",
    "Run Postage message processors (components answering AMQP messages and RPC calls).",
    "postage",
)
