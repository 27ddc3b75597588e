"""python -m localaws serve | register-image URI CONTEXT | interrupt-spot JOB"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from localaws.client import interrupt_spot_training, register_image
from localaws.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localaws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="listen for AWS API calls (default 127.0.0.1:4566)")
    serve.add_argument("--host", default=os.environ.get("LOCALAWS_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("LOCALAWS_PORT", "4566")))
    serve.add_argument("--runner", choices=("auto", "docker", "process"), default=None)
    serve.add_argument("--log-level", default=os.environ.get("LOCALAWS_LOG_LEVEL", "INFO"))
    serve.add_argument(
        "--state-dir",
        default=None,
        help="keep state across restarts in this folder (default: LOCALAWS_STATE_DIR; unset: in memory only)",
    )
    register = commands.add_parser(
        "register-image", help="register a build context under an image URI for the process runner"
    )
    register.add_argument("image_uri")
    register.add_argument("context")
    register.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    interrupt = commands.add_parser(
        "interrupt-spot", help="reclaim a running managed spot training job's instances, as AWS may"
    )
    interrupt.add_argument("job_name")
    interrupt.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    args = parser.parse_args(argv)

    if args.command == "serve":
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # The engine (moto, werkzeug, botocore's models) loads for serve only: the admin commands start quickly.
        from localaws.server import serve as run  # noqa: PLC0415
        from localaws.state import StateDirInUse  # noqa: PLC0415

        settings = Settings(host=args.host, port=args.port)
        if args.runner:
            settings.runner = args.runner
        if args.state_dir:
            settings.state_dir = Path(args.state_dir)
        try:
            run(settings)
        except StateDirInUse as error:
            print(f"localaws: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "register-image":
        print(json.dumps(register_image(args.endpoint_url, args.image_uri, args.context)))
        return 0
    if args.command == "interrupt-spot":
        print(json.dumps(interrupt_spot_training(args.endpoint_url, args.job_name)))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
