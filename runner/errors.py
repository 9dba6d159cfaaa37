"""User errors: one line naming the culprit, exit status 2, no traceback."""
from __future__ import annotations

import contextlib
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user gave us (config, data, checkpoint, sweep file).

    The message must name the culprit (file, key, line) and fit on one line.
    """


@contextlib.contextmanager
def exit_on_user_error(prog: str):
    """Turn a UserError into `prog: error: <message>` on stderr and exit 2."""
    try:
        yield
    except UserError as e:
        msg = " ".join(str(e).split())  # one line, whatever the message held
        print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
