"""The ``workbench`` command line: ``workbench <capability> <command> ...``.

Subcommands are registered by capability in :data:`SUBCOMMANDS` (module path of a ``main(argv)``
function) and imported only when used, so ``workbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "forecast": ("workbench.forecast.cli", "ZAPBench-style forecasting: generate data, fit baselines, evaluate"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="workbench", description="workbench command line")
    parser.add_argument("command", choices=sorted(SUBCOMMANDS), help="capability")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the capability's command")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print("\ncommands:\n" + "\n".join(f"  {k:10s} {v[1]}" for k, v in sorted(SUBCOMMANDS.items())))
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[ns.command][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
