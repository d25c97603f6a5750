"""``python -m kaizen_async.cli``: the same as the ``kaizen`` command."""

from __future__ import annotations

import sys

from ._app import main

sys.exit(main())
