"""``python -m responder.bench ...``: runs devtools.bench (see its ``__main__`` for the options)."""

from __future__ import annotations

import sys

from devtools.bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
