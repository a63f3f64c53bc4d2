"""`python -m paec ...`: see paec/cli.py. Importing this module runs nothing."""

from paec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
