"""Lab client: hold several long-lived TCP connections at once, report how each fared.

    python3 sessions.py --state FILE [--interval 0.2] [--timeout 30] [--source ADDR]
        [--http-port 80] [--smtp-port 25]
        [--http VIP HOST]... [--probe VIP HOST]... [--stream VIP HOST PATH]...
        [--smtp ADDR]... [--outbound LISTEN_ADDR PORT]...

Made to prove stateful failover: connections opened through one balancer must
go on through the other after a takeover. Each connection has its own thread:
  --http      one HTTP/1.1 keep-alive connection, GET / every interval on it
  --probe     a new connection every 1 s, one GET each (persistence: which web
              host answers); its failures are counted, not fatal
  --stream    one GET PATH whose slow body is read as it comes, chunk by chunk
  --smtp      ADDR:smtp-port (peer.py listen): "NOOP n" every interval
  --outbound  listens, accepts one connection (peer.py connect from a web
              host), then "PING n" every interval
A round trip (or chunk) not done within --timeout fails the connection; one
failure never stops the others.

Prints "READY" (flushed) once every connection is established or has failed to
be. Until SIGTERM/SIGINT, writes FILE (atomically) every 0.5 s:
  {"started": epoch, "elapsed": s, "ready": bool, "connections": [
    {"kind", "target", "local_port", "established", "round_trips",
     "longest_stall", "longest_stall_ended", "names", "first_name", "first_answered", "error", "failed_at"
     (+ "ok", "failed" for probe)}, ...]}
On SIGTERM/SIGINT: writes FILE a last time, prints "RESULT <that JSON>", exits 0.

error is None, "RST", "EOF", "timeout", "server closed", "HTTP <status>",
"unexpected <line>" or "TypeName: message". longest_stall is the longest time
between two successful round trips (from the connection's establishment on),
counting the one still open: at a failure, and for a connection frozen when we
stop, which must not look healthy; longest_stall_ended: s after the start when it
ended (for the one still open: the snapshot's time). first_answered: {web host: s after the start of
its first answer} (which host answered when: where persistence broke). A probe, being many connections, has no
local_port; it is "established" from its first answer.
"""

import argparse
import http.client
import json
import os
import select
import signal
import socket
import sys
import threading
import time

TICK = 0.5  # how often a waiting thread looks at the stop (and its --timeout)


class Failure(Exception):
    """A connection's end, its message being the report's error."""


class Stopped(Exception):
    """The run is over: not a failure."""


def error_text(error):
    if isinstance(error, Failure):
        return str(error)
    # RemoteDisconnected is a ConnectionResetError, but means the server closed cleanly.
    if isinstance(error, http.client.RemoteDisconnected):
        return "EOF"
    if isinstance(error, ConnectionResetError):
        return "RST"
    if isinstance(error, TimeoutError):
        return "timeout"
    return f"{type(error).__name__}: {error}"


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--state", required=True)
parser.add_argument("--interval", type=float, default=0.2)
parser.add_argument("--timeout", type=float, default=30)
parser.add_argument("--source", help="source address of every outgoing connection")
parser.add_argument("--http-port", type=int, default=80)
parser.add_argument("--smtp-port", type=int, default=25)
parser.add_argument("--http", nargs=2, action="append", default=[], metavar=("VIP", "HOST"))
parser.add_argument("--probe", nargs=2, action="append", default=[], metavar=("VIP", "HOST"))
parser.add_argument("--stream", nargs=3, action="append", default=[], metavar=("VIP", "HOST", "PATH"))
parser.add_argument("--smtp", action="append", default=[], metavar="ADDR")
parser.add_argument("--outbound", nargs=2, action="append", default=[], metavar=("LISTEN_ADDR", "PORT"))
args = parser.parse_args()
source = (args.source, 0) if args.source else None

stop = threading.Event()
lock = threading.Lock()  # the threads update their records while the main thread reads them
start_wall, start = time.time(), time.monotonic()


class Session:
    """One connection's record, updated by its thread."""

    def __init__(self, kind, target):
        self.record = {"kind": kind, "target": target, "local_port": None, "established": False,
                       "round_trips": 0, "longest_stall": 0.0, "longest_stall_ended": None, "names": [], "first_name": None, "first_answered": {},
                       "error": None, "failed_at": None}
        if kind == "probe":
            self.record.update(ok=0, failed=0)
        self.last = None  # time of the last success (or of establishment)
        self.settled = threading.Event()  # established, or failed to be

    def stall(self, now, record=None):
        record = self.record if record is None else record
        if self.last is not None and now - self.last > record["longest_stall"]:
            record.update(longest_stall=round(now - self.last, 3), longest_stall_ended=round(now - start, 3))

    def established(self, sock):
        with lock:
            self.record.update(local_port=sock.getsockname()[1], established=True)
            self.last = time.monotonic()
        self.settled.set()

    def answered(self, name=None):
        with lock:
            now = time.monotonic()
            self.stall(now)
            self.last = now
            self.record["round_trips"] += 1
            if name:
                self.record["names"] = sorted({*self.record["names"], name})
                self.record["first_name"] = self.record["first_name"] or name
                self.record["first_answered"].setdefault(name, round(now - start, 3))

    def failed(self, error):
        with lock:
            now = time.monotonic()
            self.stall(now)
            self.record.update(error=error_text(error), failed_at=round(now - start, 3))
        self.settled.set()

    def snapshot(self, now):
        record = dict(self.record)
        if record["error"] is None:
            self.stall(now, record)
        return record


def readable(sock):
    """Wait for data (or EOF) on sock: raises Stopped at the stop, Failure after --timeout."""
    waiting = time.monotonic()
    while True:
        # The stop first: a stream's data may never leave a select() idle.
        if stop.is_set():
            raise Stopped
        if select.select([sock], [], [], TICK)[0]:
            return
        if time.monotonic() - waiting > args.timeout:
            raise Failure("timeout")


class Lines:
    """Lines read off a socket, each waited for with readable()."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def next(self):
        while b"\n" not in self.buffer:
            readable(self.sock)
            data = self.sock.recv(65536)
            if not data:
                raise Failure("EOF")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").strip()


def name_in(body):
    return body.decode(errors="replace").rpartition(" served by ")[2].strip()


def keep_alive(session, vip, host):
    conn = http.client.HTTPConnection(vip, args.http_port, timeout=args.timeout, source_address=source)
    conn.connect()
    session.established(conn.sock)
    while True:
        conn.request("GET", "/", headers={"Host": host})
        readable(conn.sock)  # getresponse() itself cannot be left to look at the stop
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise Failure(f"HTTP {response.status}")
        # will_close: "Connection: close" (or HTTP/1.0); http.client would then
        # silently open a new connection for the next request, a different one.
        if response.will_close:
            raise Failure("server closed")
        session.answered(name_in(body))
        if stop.wait(args.interval):
            raise Stopped


def probe(session, vip, host):
    while True:
        began = time.monotonic()
        conn = http.client.HTTPConnection(vip, args.http_port, timeout=2, source_address=source)
        try:
            conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise http.client.HTTPException(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException):
            # While nobody holds the VIP a new connection may fail: counted, not fatal.
            with lock:
                session.record["failed"] += 1
        else:
            with lock:
                session.record.update(ok=session.record["ok"] + 1, established=True)
            session.answered(name_in(body))
        finally:
            conn.close()
        session.settled.set()
        if stop.wait(max(0.0, 1.0 - (time.monotonic() - began))):
            raise Stopped


def stream(session, vip, host, path):
    with socket.create_connection((vip, args.http_port), timeout=args.timeout, source_address=source) as sock:
        session.established(sock)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = b""
        while True:
            readable(sock)
            chunk = sock.recv(65536)
            if not chunk:
                raise Failure("EOF")
            name = None
            if head is not None:  # still in the response's head
                head += chunk
                if b"\r\n\r\n" in head:
                    lines = head.partition(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
                    status = lines[0].split()
                    if len(status) < 2 or status[1] != "200":
                        raise Failure(f"unexpected {lines[0][:60]!r}")
                    headers = dict(line.partition(":")[::2] for line in lines[1:])
                    name = next((v.strip() for k, v in headers.items() if k.strip().lower() == "x-served-by"), "")
                    head = None
            session.answered(name)


def conversation(session, sock, lines, name, say):
    """Every interval: send say(n), expect "<code> <name> <what was said>".

    The peer's name cannot change on one TCP connection: if it does, the
    connection is not the one it was (a failure, not a new name)."""
    n = 0
    while True:
        n += 1
        said = say(n)
        sock.sendall(f"{said}\r\n".encode())
        reply = lines.next()
        code, who, rest = (reply.split(" ", 2) + ["", ""])[:3]
        if code not in ("250", "ECHO") or who != name or rest != said:
            raise Failure(f"unexpected {reply[:60]!r}")
        session.answered(who)
        if stop.wait(args.interval):
            raise Stopped


def smtp(session, address):
    with socket.create_connection((address, args.smtp_port), timeout=args.timeout, source_address=source) as sock:
        session.established(sock)
        lines = Lines(sock)
        greeting = lines.next().split()
        if len(greeting) < 2 or greeting[0] != "220":
            raise Failure(f"unexpected {' '.join(greeting)[:60]!r}")
        session.answered(greeting[1])
        conversation(session, sock, lines, greeting[1], lambda n: f"NOOP {n}")


def outbound(session, address, port):
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, int(port)))
        server.listen(1)
        readable(server)  # a listening socket is readable once a connection waits
        sock, _ = server.accept()
    with sock:
        sock.settimeout(args.timeout)
        session.established(sock)
        lines = Lines(sock)
        hello = lines.next().split()
        if len(hello) != 2 or hello[0] != "HELLO":
            raise Failure(f"unexpected {' '.join(hello)[:60]!r}")
        session.answered(hello[1])
        conversation(session, sock, lines, hello[1], lambda n: f"PING {n}")


def run(session, work, *work_args):
    try:
        work(session, *work_args)
    except Stopped:
        pass
    except Exception as error:  # any end of a connection is its report
        if not stop.is_set():  # a socket torn down by the stop is no failure
            session.failed(error)
    finally:
        session.settled.set()


plan = ([(Session("http", f"{vip} {host}"), keep_alive, vip, host) for vip, host in args.http]
        + [(Session("probe", f"{vip} {host}"), probe, vip, host) for vip, host in args.probe]
        + [(Session("stream", f"{vip} {host} {path}"), stream, vip, host, path) for vip, host, path in args.stream]
        + [(Session("smtp", f"{address}:{args.smtp_port}"), smtp, address) for address in args.smtp]
        + [(Session("outbound", f"{address}:{port}"), outbound, address, port) for address, port in args.outbound])
sessions = [s for s, *_ in plan]
ready = False


def state():
    now = time.monotonic()
    with lock:
        connections = [s.snapshot(now) for s in sessions]
    return {"started": start_wall, "elapsed": round(now - start, 3), "ready": ready, "connections": connections}


def write_state():
    text = json.dumps(state())
    with open(f"{args.state}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{args.state}.tmp", args.state)  # a reader never sees half a file
    return text


signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
threads = [threading.Thread(target=run, args=step, daemon=True) for step in plan]
for t in threads:
    t.start()

# Establishing is bounded by --timeout (outbound's accept too); a little more for the threads.
ready_by, next_write = time.monotonic() + args.timeout + 2, 0.0
while not stop.wait(0.1):
    if not ready and (all(s.settled.is_set() for s in sessions) or time.monotonic() > ready_by):
        ready = True
        write_state()  # before READY: whoever reads it then finds "ready": true
        print("READY", flush=True)
    if time.monotonic() >= next_write:
        write_state()
        next_write = time.monotonic() + 0.5

# Threads notice the stop within TICK; a probe's 2 s connection may take longer,
# and daemon threads do not hold up the exit anyway.
join_by = time.monotonic() + 3
for t in threads:
    t.join(max(0.0, join_by - time.monotonic()))
print(f"RESULT {write_state()}", flush=True)
sys.exit(0)
