"""``python -m responder``."""

import sys

from responder.cli import main

sys.exit(main())
