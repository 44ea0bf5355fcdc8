"""SSH to a web host through whichever balancer answers.

    python -m lvsha.jump CONFIG HOST PORT JUMP [JUMP ...]

The ProxyCommand of the web hosts in the ssh_config that `lvsha.inventory`
generates: OpenSSH's `ssh -W HOST:PORT` through each JUMP (user@balancer) in
turn, with that same CONFIG (the jump's user and key, then the operator's own
~/.ssh/config), never prompting. The next jump is tried only when ssh failed
(exit 255) before anything came back from HOST: a session that ran and then
broke is not silently re-opened elsewhere mid-stream.
"""

from __future__ import annotations

import os
import subprocess
import sys

CONNECT_TIMEOUT = 5  # s, per jump


def forward(config: str, host: str, port: str, jump: str) -> tuple[int, bool]:
    """(ssh's exit status, whether any byte came back from HOST); stdin is ssh's own."""
    command = ["ssh", "-F", config, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
               "-W", f"{host}:{port}", jump]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as ssh:
        answered = False
        while chunk := os.read(ssh.stdout.fileno(), 65536):
            os.write(sys.stdout.fileno(), chunk)
            answered = True
        return ssh.wait(), answered


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: python -m lvsha.jump CONFIG HOST PORT JUMP [JUMP ...]", file=sys.stderr)
        return 2
    config, host, port, *jumps = argv
    status = 255
    for number, jump in enumerate(jumps, 1):
        status, answered = forward(config, host, port, jump)
        if status != 255 or answered:
            return status
        if number < len(jumps):
            print(f"lvsha: no way to {host}:{port} through {jump}; trying {jumps[number]}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
