"""``python -m aimterm`` runs the command line."""

from aimterm.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    main()
