"""What the tests need from the machine: a missing server, browser or data file skips the test on
a laptop and *fails* it when ``CI`` is set, so a missing requirement can never turn into a silently
green run. The one place that decides between the two.

>>> require_chromium()   # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

CHROMIUM = "/usr/bin/chromium"


def unavailable(message: str) -> NoReturn:
    """Skip the test (laptop) or fail it (CI) because ``message`` names something missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure)")
    pytest.skip(message)


def require_chromium() -> None:
    """Debian's Chromium and the playwright package, which the browser tests drive it with."""
    missing = []
    if not shutil.which(CHROMIUM):
        missing.append(CHROMIUM)
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        unavailable(f"{' and '.join(missing)} not installed")
