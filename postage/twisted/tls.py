"""TLS for ``amqps://``: the client options a connection is wrapped in, and the reading of a
failed handshake as a clear, permanent :class:`~postage.errors.TLSVerificationError`.

By default the broker's certificate chain is verified against ``cacertfile`` when one is
given, else against the system's trust store, and the certificate must be issued for the
host name connected to (or ``server_name``, which is also sent as SNI). ``verify=False``
(``verify=verify_none`` in the URL) turns both checks off and is meant for tests only. A
client certificate (``certfile`` + ``keyfile``) is presented when the broker asks for one.

The files are read once per :class:`TLSContext` (one per session), so a reconnection does
not re-read them; a file that cannot be read or parsed is a permanent error as well: the
next attempt would read the same file.
"""

from __future__ import annotations

from typing import Any

from postage.config import ConnectionSettings
from postage.errors import TLSVerificationError

__all__ = ["TLSContext", "tls_failure"]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TLSVerificationError(f"cannot read the TLS {what} {path!r}: {exc.strerror}") from None


def _pem_blocks(data: bytes) -> list[bytes]:
    """The certificates of a PEM bundle (a CA file often holds several)."""
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in data.split(end) if b"-----BEGIN CERTIFICATE-----" in block]


class TLSContext:
    """What a session needs to open TLS connections: the trust root and client certificate
    loaded once, and a connection creator per host (the name to verify differs per host)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        from twisted.internet import ssl  # noqa: PLC0415 - needs pyOpenSSL: amqps only

        self.settings = settings
        self._trust: Any = None
        self._client: Any = None
        try:
            if settings.cacertfile:
                blocks = _pem_blocks(_read(settings.cacertfile, "CA file (cacertfile)"))
                if not blocks:
                    raise TLSVerificationError(
                        f"the CA file {settings.cacertfile!r} holds no PEM certificate")
                self._trust = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(block) for block in blocks])
            if settings.certfile or settings.keyfile:
                if not (settings.certfile and settings.keyfile):
                    raise TLSVerificationError(
                        "a client certificate needs both certfile and keyfile")
                cert = _read(settings.certfile, "client certificate (certfile)")
                key = _read(settings.keyfile, "client key (keyfile)")
                self._client = ssl.PrivateCertificate.loadPEM(key + b"\n" + cert)
        except TLSVerificationError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyOpenSSL's parse errors have no base
            raise TLSVerificationError(f"cannot load the TLS files: {exc}") from exc

    def creator(self, host: str) -> Any:
        """The ``IOpenSSLClientConnectionCreator`` for a connection to ``host``."""
        from twisted.internet import ssl  # noqa: PLC0415

        name = self.settings.server_name or host
        if self.settings.verify:
            return ssl.optionsForClientTLS(name, trustRoot=self._trust,
                                           clientCertificate=self._client)
        return _Unverified(self._client, name)


class _Unverified:
    """``verify_none``: encryption without any check of the broker's certificate (SNI is
    still sent for a DNS name, so a broker serving several names picks the right one)."""

    def __init__(self, client: Any, name: str) -> None:
        from twisted.internet import ssl  # noqa: PLC0415
        from twisted.internet.abstract import isIPAddress, isIPv6Address  # noqa: PLC0415

        extra = ({"privateKey": client.privateKey.original,
                  "certificate": client.original} if client is not None else {})
        self._options = ssl.CertificateOptions(verify=False, **extra)
        self._name = None if isIPAddress(name) or isIPv6Address(name) else name

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        from OpenSSL import SSL  # noqa: PLC0415

        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tls_protocol)
        if self._name is not None:
            connection.set_tlsext_host_name(self._name.encode("idna"))
        return connection


def _provide_interface() -> None:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator  # noqa: PLC0415
    from zope.interface import classImplements  # noqa: PLC0415

    classImplements(_Unverified, IOpenSSLClientConnectionCreator)


try:
    _provide_interface()
except ImportError:  # pragma: no cover - without pyOpenSSL amqps fails at connect time
    pass


def tls_failure(error: BaseException, where: str) -> TLSVerificationError | None:
    """The :class:`TLSVerificationError` a failed handshake means, or None when ``error``
    is no TLS failure. The message names the reason (unknown CA, wrong host name...)."""
    try:
        from OpenSSL import SSL  # noqa: PLC0415
        from service_identity import VerificationError  # noqa: PLC0415
    except ImportError:
        return None
    if isinstance(error, VerificationError):
        return TLSVerificationError(
            f"the TLS certificate of {where} is not issued for the host name connected to "
            f"({error}): connect by a name the certificate holds, or set "
            "server_name_indication")
    if isinstance(error, SSL.Error):
        reasons = [part for entry in (error.args[0] if error.args else [])
                   if isinstance(entry, tuple) for part in entry[-1:]]
        reason = ", ".join(str(part) for part in reasons) or str(error)
        if "certificate verify failed" in reason:
            return TLSVerificationError(
                f"the TLS certificate of {where} does not verify ({reason}): the broker's "
                "certificate chain is not trusted; give its CA with cacertfile "
                "(POSTAGE_RMQ_CACERTFILE)")
        if any(alert in reason for alert in _REFUSED_CLIENT):
            return TLSVerificationError(
                f"{where} refused this client's TLS certificate ({reason}): give one its CA "
                "trusts with certfile and keyfile (POSTAGE_RMQ_CERTFILE, POSTAGE_RMQ_KEYFILE)")
    return None  # another TLS error (a link cut mid-handshake): transient


# TLS alerts by which a broker refuses the client's certificate (or its absence)
_REFUSED_CLIENT = ("unknown ca", "bad certificate", "certificate required",
                   "handshake failure", "certificate unknown")
