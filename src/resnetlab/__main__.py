"""`python -m resnetlab` runs the command line."""

import sys

from resnetlab.cli import main

sys.exit(main())
