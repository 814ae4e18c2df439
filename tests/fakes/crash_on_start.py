#!/usr/bin/env python3
"""Fake CLI: dies at once with ``fatal: config file is corrupt`` on stderr and exit code 3."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    print("fatal: config file is corrupt", file=sys.stderr, flush=True)
    sys.exit(3)
