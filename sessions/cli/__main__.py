"""`python -m sessions.cli ...` runs the `examrec` command line."""
import sys

from sessions.cli.app import main

sys.exit(main())
