"""The ``dmask-live`` command.

Each sub-command lives in its own module, which provides ``configure(parser)`` to add
its arguments and ``run(args) -> int`` to execute. Modules are imported only when their
command is chosen, so ``dmask-live --help`` stays fast and a missing optional part
(e.g. no GL) only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Real-time stages run side by side on few cores; BLAS thread pools spinning up for the
# small matrices of one frame cost far more than they save (a tracker step took 150 ms
# instead of 1 ms on a busy 2-core machine). Set before numpy is imported; users may override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("dmask_live.models", "build and verify the ONNX landmark networks"),
    "landmarks": ("dmask_live.landmarks_cli", "run the landmark stage on an image"),
    "mask": ("dmask_live.mask_media", "mask a recorded video or photo"),
    "serve": ("dmask_live.server", "run the masked teleconsult server"),
    "vcam": ("dmask_live.vcam", "send the mask to a virtual webcam"),
}


def _module(module_name: str):
    return importlib.import_module(module_name)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The full parser; only the chosen command's module is imported to add its options."""
    parser = argparse.ArgumentParser(prog="dmask-live", description="dmask-live: identity-free digital mask")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        if name == chosen:
            _module(module_name).configure(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 2
    return int(_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
