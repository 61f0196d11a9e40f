"""``python -m util.local serve [--port N] [--config FILE]``: the local AWS stack
(and ``python -m util.local demo``, which runs the pipeline on it, and
``python -m util.local annotator``, the simulated annotator fleet: localaws/annotator.py,
and ``python -m util.local faults``, a fault-injecting proxy in front of it: localaws/faults.py).

Starts moto's server on 127.0.0.1 with the Glacier and S3 restore emulations installed,
creates every resource the configuration names, prints one ``export NAME=value`` line per
variable a worker needs, then ``ready``, and serves until SIGINT or SIGTERM. A port in use
exits 1 with one line naming it.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

import boto3
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from localaws import (
    annotator,
    announce_and_wait,
    demo,
    dynamodb,
    faults,
    glacier,
    iam,
    s3,
    ses,
    settings,
)
from localaws.stack import CREDENTIALS, REGION, create_resources, utility_config_files
from util.aws import Aws
from util.parsers import argument, int_range
from util.util_config import ConfigError, add_config_option, load


def moto_server(port: int) -> BaseWSGIServer:
    """moto's server on 127.0.0.1:`port` (0: a free one), serving from a thread of its own.

    The port is bound here, so that one in use is an OSError for the caller: moto's
    ThreadedMotoServer binds in its thread, where werkzeug's exit on a port in use ends only
    that thread, and its start() waits for ever.
    """
    with socket.create_server(("127.0.0.1", port)) as listener:
        server = make_server(
            "127.0.0.1",
            port,
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=MotoRequestHandler,
            fd=listener.fileno(),  # werkzeug serves a duplicate of it
        )
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    return server


def serve(port: int, config_files: list[str]) -> int:
    try:
        config = load(None, [*utility_config_files(), *config_files])
    except ConfigError as exc:
        print(f"local stack: config error: {exc}", file=sys.stderr)
        return 2
    dynamodb.install()
    ses.install()
    glacier.install(settings.Settings.from_config(config.local))
    s3.install()  # S3 restores, timed by the settings just put in force
    iam.install()  # IAM checks as AWS's, once enforcement is on (localaws/iam.py)
    # werkzeug logs every request; at load that is megabytes an hour nobody reads.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        server = moto_server(port)
    except OSError as exc:
        # socket.create_server adds the address to strerror: the port is said once, here
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"local stack: cannot listen on 127.0.0.1:{port}: {reason}", file=sys.stderr)
        return 1
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.port}"}
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    os.environ["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"]  # for the clients made below
    create_resources(Aws(config, session), config)

    announce_and_wait(env)
    server.shutdown()
    server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m util.local", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the local AWS stack")
    serve_parser.add_argument(
        "--port", type=argument(int_range(0, 65535)), default=4566, help="0 picks a free port"
    )
    add_config_option(serve_parser)
    commands.add_parser("demo", help="run the archive utility end to end on the local stack")
    annotator.add_arguments(
        commands.add_parser(
            "annotator", help="run the simulated annotator fleet on the job-requests queue"
        )
    )
    faults.add_arguments(
        commands.add_parser(
            "faults", help="run a fault-injecting proxy in front of the local stack"
        )
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.run()
    if args.command == "annotator":
        return annotator.main(args.concurrency, args.seconds, args.config)
    if args.command == "faults":
        return faults.main(args)
    return serve(args.port, args.config)


if __name__ == "__main__":
    sys.exit(main())
