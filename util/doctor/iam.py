"""The doctor's IAM side: access policies read as grants (`grants`, `allows`), and whether
each role given with --role may do what its utility's policy (deploy/iam) lists, and use the
customer-managed KMS keys of the buckets it reads or writes. IAM's simulation answers where
the caller may use it; elsewhere the role's own policies are read (`RoleDecisions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

from deploy.iam import KMS_KEY_PARAMETER, UTILITIES, Arns, kms_actions, policy
from util.aws import Aws
from util.doctor.common import UNAVAILABLE, Check, probe, reason
from util.util_config import Config

Grant = tuple[str, str, str]  # (principal, action, source ARN or "")


def grants(document: str | dict[str, Any] | None) -> list[Grant]:
    """An access policy's Allow statements as (principal, action, source ARN) triples."""
    if not document:
        return []
    parsed: dict[str, Any] = json.loads(document) if isinstance(document, str) else document
    found = set()
    for statement in parsed.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal", "*")
        principals = (
            [principal]
            if isinstance(principal, str)
            else [p for v in principal.values() for p in ([v] if isinstance(v, str) else v)]
        )
        actions = statement.get("Action", [])
        source = ""
        for operator, values in statement.get("Condition", {}).items():
            if operator in ("ArnEquals", "ArnLike", "StringEquals", "StringLike"):
                source = next(
                    (v for k, v in values.items() if k.lower() == "aws:sourcearn"), source
                )
        for p in principals:
            for a in [actions] if isinstance(actions, str) else actions:
                found.add((p, a.lower(), source))
    return sorted(found)


def allows(granted: list[Grant], principal: str, action: str, source: str) -> bool:
    """Whether one grant lets `principal` do `action` for `source` (wildcards as IAM's)."""
    return any(
        fnmatchcase(principal, p) and fnmatchcase(action, a) and (not s or fnmatchcase(source, s))
        for p, a, s in granted
    )


class RoleDecisions:
    """Which actions a role may not do: by iam:SimulatePrincipalPolicy or, where the caller
    may not simulate (or the local stack's moto cannot), by reading the role's inline and
    attached policies once. Read, a statement's conditions are taken as met (a Deny with
    conditions as not), and permissions boundaries and SCPs are not seen."""

    READ = " (read from its policies: IAM's simulation is not available)"

    def __init__(self, aws: Aws, role: str):
        self.iam = probe(aws, "iam")
        self.role = role
        self.statements: list[dict[str, Any]] | None = None  # None: simulate
        self.how = ""  # how the answers were found: "" (simulated) or READ

    def denied(
        self, actions: list[str], resources: list[str], context: Sequence[dict[str, Any]] = ()
    ) -> list[tuple[str, str]]:
        """The (action, resource) pairs denied; raises an UNAVAILABLE error if neither way
        is open to the caller (or the role does not exist)."""
        if self.statements is None:
            try:
                results = self.iam.simulate_principal_policy(
                    PolicySourceArn=self.role,
                    ActionNames=actions,
                    ResourceArns=resources,
                    ContextEntries=list(context),
                )["EvaluationResults"]
                return [
                    (r["EvalActionName"], r["EvalResourceName"])
                    for r in results
                    if r["EvalDecision"] != "allowed"
                ]
            except UNAVAILABLE:
                self.statements = self._read()
                self.how = self.READ
        statements = self.statements
        return [(a, r) for a in actions for r in resources if not _allowed(statements, a, r)]

    def _read(self) -> list[dict[str, Any]]:
        name = self.role.rsplit("/", 1)[1]
        documents = [
            self.iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
            for page in self.iam.get_paginator("list_role_policies").paginate(RoleName=name)
            for policy_name in page["PolicyNames"]
        ]
        for page in self.iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
            for attached in page["AttachedPolicies"]:
                arn = attached["PolicyArn"]
                version = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
                documents.append(
                    self.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"][
                        "Document"
                    ]
                )
        return [
            s
            for d in documents
            for s in ([d["Statement"]] if isinstance(d["Statement"], dict) else d["Statement"])
        ]


def _allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """IAM's evaluation of identity-policy statements for one request: an explicit Deny wins,
    then any Allow; actions match case-insensitively, both with IAM's wildcards."""

    def matches(statement: dict[str, Any]) -> bool:
        return _element(statement, "Action", action.lower(), str.lower) and _element(
            statement, "Resource", resource, str
        )

    if any(s["Effect"] == "Deny" and "Condition" not in s and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


def _element(
    statement: dict[str, Any], element: str, value: str, fold: Callable[[str], str]
) -> bool:
    """Whether `value` is in a statement's Action (Resource), or not in its NotAction."""
    negated = element not in statement
    patterns = statement.get(f"Not{element}" if negated else element, [])
    hit = any(
        fnmatchcase(value, fold(p)) for p in ([patterns] if isinstance(patterns, str) else patterns)
    )
    return hit != negated


def simulate(aws: Aws, config: Config, roles: dict[str, str]) -> Iterator[Check]:
    """Whether each role given may do each action of its utility's policy (RoleDecisions)."""
    if not roles:
        yield Check(None, "IAM: skipped (give --role UTILITY=ARN to simulate a role's policy)")
        return
    arns = Arns(aws.account_id(), aws.client("sns").meta.region_name)
    for utility, role in roles.items():
        decisions = RoleDecisions(aws, role)
        denied = []
        try:
            # Statements with conditions would need their context; the others say enough.
            for statement in policy(utility, config, arns)["Statement"]:
                if "Condition" not in statement:
                    resources = statement["Resource"]
                    denied += decisions.denied(
                        statement["Action"],
                        [resources] if isinstance(resources, str) else resources,
                    )
        except UNAVAILABLE as exc:
            yield Check(None, f"IAM {utility}: skipped (not available: {reason(exc)})")
            continue
        if denied:
            yield Check(
                False,
                f"IAM {utility} ({role}): denied "
                + "; ".join(f"{a} on {r}" for a, r in denied)
                + decisions.how,
                f"attach `python -m deploy.iam render {utility} ...` to the role",
            )
        else:
            yield Check(True, f"IAM {utility} ({role}): every action allowed{decisions.how}")


def key_checks(
    aws: Aws, config: Config, state: dict[str, Any], roles: dict[str, str]
) -> Iterator[Check]:
    """For each bucket whose default encryption is a customer-managed KMS key: may the roles
    given of the utilities reading or writing its objects use the key (deploy/iam
    kms_actions), as S3 does on their behalf?"""
    needs = {utility: kms_actions(utility, config) for utility in UTILITIES}
    region = aws.client("sns").meta.region_name
    via_s3 = [
        {"ContextKeyName": name, "ContextKeyValues": [value], "ContextKeyType": "string"}
        for name, value in (
            ("kms:ViaService", f"s3.{region}.amazonaws.com"),
            ("kms:CallerAccount", aws.account_id()),
        )
    ]
    decisions = {utility: RoleDecisions(aws, role) for utility, role in roles.items()}
    for name, bucket in state["buckets"].items():
        key = bucket["KmsKey"]
        users = {u: n[name] for u, n in needs.items() if name in n}
        if not key or not users:
            continue
        checked = [u for u in users if u in roles]
        unchecked = [u for u in users if u not in roles]
        what = f"bucket {name}: KMS key {key}"
        if not checked:
            yield Check(
                None, f"{what}: not checked (give --role UTILITY=ARN of {', '.join(unchecked)})"
            )
            continue
        try:
            denied = {u: decisions[u].denied(users[u], [key], via_s3) for u in checked}
        except UNAVAILABLE as exc:
            yield Check(None, f"{what}: skipped (not available: {reason(exc)})")
            continue
        rest = f" (not checked: {', '.join(unchecked)}: give --role)" if unchecked else ""
        how = next((decisions[u].how for u in checked if decisions[u].how), "")
        refused = [
            f"{u} ({roles[u]}) may not {', '.join(a for a, _ in pairs)}"
            for u, pairs in denied.items()
            if pairs
        ]
        if refused:
            yield Check(
                False,
                f"{what}: {'; '.join(refused)}{rest}{how}",
                f"allow them on the key in those roles' policies: the template's "
                f"{KMS_KEY_PARAMETER}={key}, or python -m deploy.iam render UTILITY --kms-key "
                f"{key} ...; the key's policy must let IAM policies grant its use (its "
                "default policy does)",
            )
        else:
            yield Check(True, f"{what}: {', '.join(checked)} may use it{rest}{how}")
