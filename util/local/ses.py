"""The e-mails moto's SES accepted, from a local stack server or from moto in process.

SES has no API to list what was sent. moto keeps it, and its server shows it in
``/moto-api/data.json`` — but that page reads every attribute of every moto object, which
fails (HTTP 500) while an S3 multipart upload has parts, and advances S3 restores as a side
effect. ``install()`` adds a page of its own, ``/moto-api/gas/sent-emails``, that reads SES
only.

moto 5.2.5 keeps one body per e-mail sent with SendEmail: the HTML part when there is one,
else the text part. Each e-mail is ``{"source", "to", "subject", "body"}``, oldest first.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, cast

from moto.core.common_types import TYPE_RESPONSE
from moto.moto_api._internal import urls as moto_api_urls
from moto.ses.models import Message, ses_backends

__all__ = ["install", "sent_emails", "sent_emails_in_process"]

PATH = "/moto-api/gas/sent-emails"


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


def install() -> None:
    """Add the sent-e-mails page to moto's server; calling it again changes nothing."""
    moto_api_urls.url_paths["{0}" + PATH] = _sent_emails_page
