"""Lab peer: the web host's end of a long-lived, line-based TCP conversation.

    python3 peer.py listen ADDRESS PORT SECONDS
    python3 peer.py connect HOST PORT SECONDS

Runs on a web host; the test feeds it over ssh stdin (python3 - listen ...), so
it is stdlib only and never looks for its own file.

listen: an SMTP-like server on ADDRESS:PORT, any number of connections. Sends
"220 <hostname> ready", answers every line with "250 <hostname> <line>", and
"QUIT" with "221 bye" and a close. Exits after SECONDS.

connect: connects to HOST:PORT (retrying for 10 s, the listener may start
after us), sends "HELLO <hostname>", then answers every line with
"ECHO <hostname> <line>". Exits when the connection closes, or after SECONDS.

Prints "LISTENING" / "CONNECTED" (flushed) once set up; a failed set-up (port in
use, nobody listening after 10 s) is a traceback and exit 1.

The hostname in every answer is how the client knows which host it talks to.
"""

import socket
import sys
import threading
import time

NAME = socket.gethostname()


def serve(conn):
    try:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(f"220 {NAME} ready\r\n".encode())
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                if line == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                conn.sendall(f"250 {NAME} {line}\r\n".encode())
    except OSError:
        pass  # the client went away: its own report says how


def accept_forever(server):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def talk(conn):
    try:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(f"HELLO {NAME}\n".encode())
            for raw in lines:
                conn.sendall(f"ECHO {NAME} {raw.decode(errors='replace').strip()}\n".encode())
    except OSError:
        pass


def listening(address, port):
    server = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    # A rerun soon after a previous one must not fail on the old port's TIME_WAIT.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen()
    return server


def connected(host, port):
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.settimeout(None)  # the client may be quiet for long (a takeover): only it judges
    return conn


started = time.monotonic()
mode, address, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
# Setting up happens here, so that a port in use or nobody listening is a failed run.
if mode == "listen":
    work, arg = accept_forever, listening(address, port)
else:
    work, arg = talk, connected(address, port)
print("LISTENING" if mode == "listen" else "CONNECTED", flush=True)  # a caller may wait for it
# The conversation runs in a daemon thread so that SECONDS bounds the run whatever
# state the connection is in.
worker = threading.Thread(target=work, args=(arg,), daemon=True)
worker.start()
worker.join(max(0.0, seconds - (time.monotonic() - started)))
