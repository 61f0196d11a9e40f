"""What the template's generator shares: its parameters (one per setting that names a resource,
named after it), the placeholders of the configuration they stand in, and how a placeholder
becomes ``Ref`` or ``Fn::Sub``."""

from __future__ import annotations

import re
from typing import Any

from deploy.iam import load_config
from util.util_config import KEYS, Config, Key, env_name

NO_VALUE = {"Ref": "AWS::NoValue"}
S3_BACKEND = "S3Backend"
# The settings that name a resource (or shape a policy): each a parameter of the template.
PARAMETER_KEYS: tuple[tuple[str, str], ...] = (
    ("gas", "archive_backend"),
    ("gas", "annotations_table"),
    ("gas", "users_table"),
    ("gas", "inputs_bucket"),
    ("gas", "results_bucket"),
    ("gas", "vault"),
    ("gas", "archive_bucket"),
    ("gas", "archive_prefix"),
    ("gas", "job_requests_topic"),
    ("gas", "job_requests_queue"),
    ("gas", "job_results_topic"),
    ("gas", "thaw_topic"),
    ("archive", "queue"),
    ("restore", "queue"),
    ("thaw", "queue"),
    ("notify", "queue"),
    ("notify", "sender"),
    ("ann_load", "prefix"),
    ("metrics", "namespace"),
)
# A policy names the sender's address and its domain's identity (deploy/iam Arns.identities).
SENDER_PARTS = {"NotifySenderUser": 0, "NotifySenderDomain": 1}
ADDRESS = r"^[^@<>\s]+@[^@<>\s]+$"


def key(section: str, name: str) -> Key:
    return next(k for k in KEYS if (k.section, k.name) == (section, name))


def parameter_keys() -> list[Key]:
    return [key(*p) for p in PARAMETER_KEYS]


def parameter(k: Key) -> str:
    """``GAS_ARCHIVE_QUEUE`` -> ``ArchiveQueue``."""
    return "".join(part.title() for part in env_name(k).split("_")[1:])


def placeholder_config(utility: str | None, backend: str) -> Config:
    """The configuration whose names are the template's ``${Parameter}`` placeholders."""
    environ = {env_name(k): f"${{{parameter(k)}}}" for k in parameter_keys()}
    environ[env_name(key("gas", "archive_backend"))] = backend
    environ[env_name(key("notify", "sender"))] = "@".join(f"${{{p}}}" for p in SENDER_PARTS)
    return load_config(utility or "archive", environ=environ)


PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")


def sub(value: Any) -> Any:
    """Strings with placeholders become ``Ref`` or ``Fn::Sub``, in any nesting."""
    if isinstance(value, dict):
        return {k: sub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sub(v) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = PLACEHOLDER.fullmatch(value)
    if whole and whole[1] not in SENDER_PARTS:
        return {"Ref": whole[1]}
    sender_parts = {
        name: {"Fn::Select": [index, {"Fn::Split": ["@", {"Ref": "NotifySender"}]}]}
        for name, index in SENDER_PARTS.items()
        if f"${{{name}}}" in value
    }
    return {"Fn::Sub": [value, sender_parts] if sender_parts else value}


def base(placeholder: str, kind: str) -> str:
    """``${GasThawTopic}`` -> ``Thaw``: the stem of a resource's logical id."""
    name = PLACEHOLDER.fullmatch(placeholder)
    assert name, placeholder
    return name[1].removeprefix("Gas").removesuffix(kind)


def by_backend(make: Any) -> Any:
    """``make(backend)``, or Fn::If of the two when the back ends differ."""
    vault, s3 = make("vault"), make("s3")
    return vault if vault == s3 else {"Fn::If": [S3_BACKEND, s3, vault]}


def camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def settings(config: Config) -> dict[str, str]:
    """The logical id whose Ref is each setting's value, by environment name: the parameter,
    or a topic's own (its ARN: no look-up of the account at start)."""
    values = {}
    for k in parameter_keys():
        values[env_name(k)] = parameter(k)
        if k.name.endswith("_topic"):
            values[env_name(k)] = f"Topic{base(getattr(config.gas, k.name), 'Topic')}"
    return values
