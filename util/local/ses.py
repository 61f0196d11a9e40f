"""The e-mails moto's SES accepted, from a local stack server or from moto in process.

moto 5.2.5 keeps one body per e-mail sent with SendEmail: the HTML part when there is one,
else the text part. Each e-mail is ``{"source", "to", "subject", "body"}``, oldest first.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import Message, ses_backends

from util.local.stack import REGION


def sent_emails(endpoint_url: str) -> list[dict[str, Any]]:
    """What a server (``python -m util.local serve``) sent, from its ``/moto-api/data.json``."""
    url = f"{endpoint_url.rstrip('/')}/moto-api/data.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        messages = json.load(response).get("ses", {}).get("Message", [])
    return [_email(m["source"], m["destinations"], m["subject"], m["body"]) for m in messages]


def sent_emails_in_process(region: str = REGION) -> list[dict[str, Any]]:
    """What moto in this process (``mock_aws``) sent."""
    backend = ses_backends[DEFAULT_ACCOUNT_ID][region]
    # sent_messages also holds raw and templated e-mails, which have no subject of their own.
    return [_email(m.source, m.destinations, m.subject, m.body)
            for m in backend.sent_messages if isinstance(m, Message)]


def _email(source: str, destinations: Mapping[str, list[str]], subject: str,
           body: str) -> dict[str, Any]:
    return {"source": source, "to": list(destinations.get("ToAddresses", [])),
            "subject": subject, "body": body}
