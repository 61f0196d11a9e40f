"""``python -m deploy.iam``: the IAM policy of a utility, for an account and region.

    python -m deploy.iam render archive --account 123456789012 --region us-east-1 [--config FILE]...
        [--kms-key ARN]
    python -m deploy.iam write      # regenerate deploy/iam/*.json from the default configuration

`render` reads the configuration as the utility does (its .ini, each --config, GAS_*
variables), so a site that renamed a table or a queue gets a policy naming its own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from deploy.iam import (
    HERE,
    KEY_ARN,
    TEMPLATES,
    UTILITIES,
    Arns,
    kms_statement,
    load_config,
    policy,
    template,
)
from util.util_config import ConfigError, add_config_option

ACCOUNT_ID = re.compile(r"\d{12}")
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.iam", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print a utility's policy as JSON")
    render.add_argument("utility", choices=UTILITIES)
    render.add_argument("--account", required=True, help="12-digit AWS account id")
    render.add_argument("--region", required=True, help="e.g. us-east-1")
    render.add_argument(
        "--kms-key",
        metavar="ARN",
        help="the customer-managed key of the buckets' default encryption: allow its use",
    )
    add_config_option(render)
    commands.add_parser("write", help="regenerate the JSON files of deploy/iam")
    args = parser.parse_args(argv)

    if args.command == "write":
        for name in TEMPLATES:
            (HERE / f"{name}.json").write_text(template(name))
        return 0
    if not ACCOUNT_ID.fullmatch(args.account) or not REGION_NAME.fullmatch(args.region):
        parser.error("--account is 12 digits, --region like us-east-1")
    if args.kms_key is not None and not re.fullmatch(KEY_ARN, args.kms_key):
        parser.error("--kms-key is a key's ARN, arn:aws:kms:REGION:ACCOUNT:key/ID")
    try:
        config = load_config(args.utility, args.config)
    except ConfigError as exc:
        print(f"deploy.iam: config error: {exc}", file=sys.stderr)
        return 2
    arns = Arns(args.account, args.region)
    document = policy(args.utility, config, arns)
    key = args.kms_key and kms_statement(args.utility, config, arns, args.kms_key)
    if key:
        document["Statement"].append(key)
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
