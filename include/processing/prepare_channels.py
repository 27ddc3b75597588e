"""The entry of an experiment's ``prepare`` run as a SageMaker processing job (plugins/ml_pipeline/prepare_job.py).

    python3 prepare_channels.py --code DIR --function module:function --output DIR --start ISO --end ISO
                                --seed N --message FILE --resources FILE

The experiment's source_dir is the job's ``code`` input (``--code``); its ``module:function`` is called as the
Airflow worker calls it, ``function(output_dir, start=datetime, end=datetime, seed=int)``, and, when it takes
them, with ``host`` and ``hosts`` (this instance and all of them, from resourceconfig.json): with several
instances each calls it, and one that takes them writes its own share. What it writes is checked as the
worker checks it (every file in a channel folder, ``output_dir/<channel>/<files>``, no link leading out, no
empty channel); the job's output uploads ``--output`` to the data partition's prefix. Why it failed, or what
it wrote, is the job's ExitMessage (``--message``). Standard library only: it runs in the experiment's image.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import traceback
from datetime import datetime

MESSAGE_LIMIT = 1024


def say(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text[:MESSAGE_LIMIT])


def load(code: str, spec: str):
    module_name, _, function_name = spec.partition(":")
    sys.path.insert(0, code)
    function = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(function):
        raise ValueError(f"{spec}: {module_name} has no function {function_name}")
    return function


def takes(function, name: str) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def written(output: str) -> dict[str, int]:
    """{channel: files} under ``output``; ValueError naming what is outside a channel, empty or leads out."""
    root = os.path.realpath(output)
    stray = sorted(e.name for e in os.scandir(output) if e.is_symlink() or not e.is_dir(follow_symlinks=False))
    if stray:
        raise ValueError(f"wrote {', '.join(stray)} outside a channel folder (output_dir/<channel>/<files>)")
    counts = {}
    for channel in sorted(os.listdir(output)):
        files = 0
        for parent, folders, names in os.walk(os.path.join(output, channel)):
            for name in folders + names:
                path = os.path.join(parent, name)
                if os.path.islink(path) and os.path.commonpath([root, os.path.realpath(path)]) != root:
                    raise ValueError(f"{os.path.relpath(path, output)} is a link leading out of output_dir")
            files += len(names)
        if not files:
            raise ValueError(f"channel {channel} holds no file (an empty channel)")
        counts[channel] = files
    if not counts:
        raise ValueError("wrote no channel")
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("--code", "--function", "--output", "--start", "--end", "--seed", "--message", "--resources"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    with open(args.resources) as handle:
        resources = json.load(handle)
    start, end = datetime.fromisoformat(args.start), datetime.fromisoformat(args.end)
    try:
        function = load(args.code, args.function)
        extra = {}
        if takes(function, "host") and takes(function, "hosts"):
            extra = {"host": resources["current_host"], "hosts": resources["hosts"]}
        os.makedirs(args.output, exist_ok=True)
        print(f"{args.function}: writing the channels of {start} to {end} (seed {args.seed})", flush=True)
        function(args.output, start=start, end=end, seed=int(args.seed), **extra)
    except Exception as error:  # noqa: BLE001 - whatever the experiment's code raised is the job's reason
        traceback.print_exc()
        say(args.message, f"{args.function} raised {type(error).__name__}: {error}")
        return 1
    try:
        counts = written(args.output)
    except ValueError as error:
        print(f"{args.function}: {error}", file=sys.stderr, flush=True)
        say(args.message, f"{args.function}: {error}")
        return 1
    line = ", ".join(f"{channel} ({files} files)" for channel, files in counts.items())
    print(f"wrote {line} on {resources['current_host']}", flush=True)
    say(args.message, f"{args.function} wrote {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
