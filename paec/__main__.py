"""`python -m paec ...`: see paec/cli.py."""

from paec.cli import main

raise SystemExit(main())
