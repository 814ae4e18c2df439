"""``python -m aimterm.host --fd N``: a session host on the socket its controller passed."""

from __future__ import annotations

import argparse
import sys

from aimterm.host.server import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m aimterm.host",
                                     description="Run sessions for the controller that "
                                                 "started this process (not for direct use).")
    parser.add_argument("--fd", type=int, required=True, help="the link's socket")
    sys.exit(main(parser.parse_args().fd))
