"""SES's sandbox, and the e-mails moto's SES accepted, from a local stack server or in process.

With ``[local] ses_sandbox`` true, SES is in its sandbox: an e-mail (SendEmail, v1 and v2
alike, SendTemplatedEmail, SendRawEmail) is sent only if every identity it names, sender and
recipients, is verified: the address itself, or its domain (case aside), or a mailbox
simulator address (``success``, ``bounce``, ``ooto``, ``complaint``, ``suppressionlist``,
``+label`` allowed, at ``simulator.amazonses.com``). Otherwise it is refused as SES refuses
it: ``MessageRejected`` (HTTP 400), "Email address is not verified. The following identities
failed the check in region US-EAST-1: a@b, c@d" (sender first, then To, Cc, Bcc), and nothing
is sent. A raw e-mail's recipients are those moto sends it to: ``Destinations`` and its To, Cc
and Bcc headers. Out of the sandbox (the default) moto checks the sender only, as before.
moto's SESv2 sends through its SES backend, which is patched; ``install()`` patches it.

SES has no API to list what was sent. moto keeps it, and its server shows it in
``/moto-api/data.json`` — but that page reads every attribute of every moto object, which
fails (HTTP 500) while an S3 multipart upload has parts, and advances S3 restores as a side
effect. ``install()`` adds a page of its own, ``/moto-api/gas/sent-emails``, that reads SES
only.

moto 5.2.5 keeps one body per e-mail sent with SendEmail: the HTML part when there is one,
else the text part. Each e-mail is ``{"source", "to", "subject", "body"}``, oldest first.
"""

from __future__ import annotations

import email
import functools
import inspect
import json
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from email.utils import getaddresses, parseaddr
from typing import Any, cast

from moto.core.common_types import TYPE_RESPONSE
from moto.moto_api._internal import urls as moto_api_urls
from moto.ses.exceptions import MessageRejectedError
from moto.ses.models import Message, SESBackend, ses_backends

from localaws.settings import current_settings

__all__ = ["install", "sent_emails", "sent_emails_in_process"]

PATH = "/moto-api/gas/sent-emails"
SIMULATOR_DOMAIN = "simulator.amazonses.com"
SIMULATOR_MAILBOXES = frozenset({"success", "bounce", "ooto", "complaint", "suppressionlist"})


def sent_emails(endpoint_url: str) -> list[dict[str, Any]]:
    """What a server (``python -m util.local serve``) sent."""
    with urllib.request.urlopen(f"{endpoint_url.rstrip('/')}{PATH}", timeout=10) as response:
        return json.load(response)


def sent_emails_in_process() -> list[dict[str, Any]]:
    """What moto in this process (``mock_aws``, or the server's own thread) sent."""
    return [
        {
            "source": m.source,
            "to": list(m.destinations.get("ToAddresses", [])),
            "subject": m.subject,
            "body": m.body,
        }
        for _, _, backend in ses_backends.iter_backends()
        # sent_messages also holds raw and templated e-mails, which have no subject of their own.
        for m in cast(Any, backend).sent_messages
        if isinstance(m, Message)
    ]


def _sent_emails_page(request: Any, full_url: str, headers: Any) -> TYPE_RESPONSE:
    return 200, {"Content-Type": "application/json"}, json.dumps(sent_emails_in_process())


def _addresses(destinations: Mapping[str, Iterable[str]]) -> list[str]:
    """SendEmail's Destination: To, then Cc, then Bcc."""
    return [
        a
        for part in ("ToAddresses", "CcAddresses", "BccAddresses")
        for a in destinations.get(part, [])
    ]


def _email_identities(arguments: Mapping[str, Any]) -> list[str | None]:
    """Sender and recipients of a SendEmail or SendTemplatedEmail."""
    return [arguments["source"], *_addresses(arguments["destinations"])]


def _raw_email_identities(arguments: Mapping[str, Any]) -> list[str | None]:
    """Sender (None if it has none: moto refuses it) and recipients of a SendRawEmail,
    found where moto finds them."""
    message = email.message_from_string(arguments["raw_data"])
    headers = [message[name] for name in ("TO", "CC", "BCC") if name in message]
    return [
        arguments["source"] or message["from"],
        *arguments["destinations"],
        *(address for _, address in getaddresses(headers) if address),
    ]


def _verified(backend: SESBackend, identity: str) -> bool:
    _, address = parseaddr(identity)
    mailbox, _, domain = address.rpartition("@")
    domains = {i.lower() for i in backend.email_identities if "@" not in i}
    if domain.lower() == SIMULATOR_DOMAIN and mailbox.partition("+")[0] in SIMULATOR_MAILBOXES:
        return True
    return address in backend.email_identities or domain.lower() in domains


def _sandboxed(
    method: Callable[..., Any], identities: Callable[[Mapping[str, Any]], list[str | None]]
) -> Callable[..., Any]:
    """A send that, in the sandbox, is refused unless every identity it names is verified."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def send(self: SESBackend, *args: Any, **kwargs: Any) -> Any:
        if current_settings().ses_sandbox:
            named = identities(signature.bind(self, *args, **kwargs).arguments)
            failed = list(
                dict.fromkeys(parseaddr(i)[1] for i in named if i and not _verified(self, i))
            )
            if failed:
                raise MessageRejectedError(
                    "Email address is not verified. The following identities failed the "
                    f"check in region {self.region_name.upper()}: {', '.join(failed)}"
                )
        return method(self, *args, **kwargs)

    send.__gas_sandboxed__ = True  # type: ignore[attr-defined]
    return send


_SENDS = {
    "send_email": _email_identities,
    "send_templated_email": _email_identities,
    "send_raw_email": _raw_email_identities,
}


def install() -> None:
    """Add the sandbox to moto's SES and the sent-e-mails page to moto's server; calling it
    again changes nothing."""
    for name, identities in _SENDS.items():
        method = getattr(SESBackend, name)
        if not getattr(method, "__gas_sandboxed__", False):
            setattr(SESBackend, name, _sandboxed(method, identities))
    moto_api_urls.url_paths["{0}" + PATH] = _sent_emails_page
