"""User-facing errors.

Anything the user can fix (missing data, malformed files, bad config keys, missing checkpoints) raises
`UserError` with a one-line message naming the file or key and what to do. The CLI turns it into that line on
stderr and exit code 2, without a traceback (set HYDRA_FULL_ERROR=1 to see one).
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # keep it one line
