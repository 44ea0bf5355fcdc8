"""Where the heartbeat secret comes from: never the repository.

`LVSHA_HEARTBEAT_SECRET_FILE` names a file (kept outside the repository, e.g.
in a password store export or the lab's state directory) whose first line is
the secret; `LVSHA_HEARTBEAT_SECRET` may carry it directly. A missing secret
is not an error here: validation reports it, naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path

SECRET_ENV = "LVSHA_HEARTBEAT_SECRET"
SECRET_FILE_ENV = "LVSHA_HEARTBEAT_SECRET_FILE"


class SecretError(RuntimeError):
    pass


def heartbeat_secret(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    path = env.get(SECRET_FILE_ENV)
    if path:
        file = Path(path).expanduser()
        try:
            text = file.read_text()
        except OSError as error:
            raise SecretError(f"{SECRET_FILE_ENV}={path}: cannot read the heartbeat secret: {error.strerror}") from None
        if file.stat().st_mode & 0o077:
            raise SecretError(f"{SECRET_FILE_ENV}={path}: the secret file is readable by others; chmod 600 it")
        lines = text.splitlines()
        return lines[0].strip() if lines else None
    return env.get(SECRET_ENV) or None
