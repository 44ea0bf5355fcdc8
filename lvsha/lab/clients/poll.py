"""Lab client: poll every VIP every 0.2 s with new connections, until SIGTERM
(or SECONDS at most).

    python3 poll.py SECONDS VIP...

One poller per VIP, side by side (a VIP's wait does not include the others'
timeouts). Each poll asks for / on a new TCP connection with a 1 s timeout, as a
monitoring poller would: a SYN lost while nobody holds the VIP is not left to
TCP's backoff. Prints "LONGEST <seconds>": the longest time any VIP went
without an answer (measured from its previous answer), "FAILED <count>": polls
unanswered, and "ANSWERED <count>".
"""

import signal
import socket
import sys
import threading
import time

seconds, vips = float(sys.argv[1]), sys.argv[2:]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
results = {vip: {"longest": 0.0, "failed": 0, "answered": 0} for vip in vips}


def answered(vip):
    try:
        with socket.create_connection((vip, 80), timeout=1) as s:
            s.settimeout(1)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def poll(vip):
    mine, last = results[vip], time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        if answered(vip):
            now = time.monotonic()
            mine["longest"] = max(mine["longest"], now - last)
            mine["answered"] += 1
            last = now
        else:
            mine["failed"] += 1
        stop.wait(max(0.0, 0.2 - (time.monotonic() - started)))
    mine["longest"] = max(mine["longest"], time.monotonic() - last)


threads = [threading.Thread(target=poll, args=(vip,), daemon=True) for vip in vips]
for t in threads:
    t.start()
stop.wait(seconds)
stop.set()
for t in threads:
    t.join(timeout=5)
for vip, r in results.items():
    print(f"VIP {vip} longest {r['longest']:.2f} failed {r['failed']} answered {r['answered']}", flush=True)
print(f"LONGEST {max(r['longest'] for r in results.values()):.2f}", flush=True)
print(f"FAILED {sum(r['failed'] for r in results.values())}", flush=True)
print(f"ANSWERED {sum(r['answered'] for r in results.values())}", flush=True)
