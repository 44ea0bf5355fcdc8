"""Lab client: poll every VIP every 0.2 s with new connections, until SIGTERM
(or SECONDS at most).

    python3 poll.py SECONDS VIP...

Each round asks each VIP for / (a new TCP connection, 1 s timeout, as a
monitoring poller would: a SYN lost while nobody holds the VIP is not left to
TCP's backoff). Prints one "ROUND <t> <ok>/<asked>" line per round and, at the
end, "LONGEST <seconds>": the longest time any VIP went without an answer
(measured from its previous answer), and "FAILED <count>": polls unanswered.
"""

import signal
import socket
import sys
import time

seconds, vips = float(sys.argv[1]), sys.argv[2:]
started = time.monotonic()
last_answer = {vip: started for vip in vips}
longest, failed = 0.0, 0
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))


def answered(vip):
    try:
        with socket.create_connection((vip, 80), timeout=1) as s:
            s.settimeout(1)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


while not stopped and time.monotonic() - started < seconds:
    round_started = time.monotonic()
    ok = 0
    for vip in vips:
        if answered(vip):
            now = time.monotonic()
            longest = max(longest, now - last_answer[vip])
            last_answer[vip] = now
            ok += 1
        else:
            failed += 1
    print(f"ROUND {round_started - started:.1f} {ok}/{len(vips)}", flush=True)
    time.sleep(max(0.0, 0.2 - (time.monotonic() - round_started)))
now = time.monotonic()
longest = max([longest] + [now - t for t in last_answer.values()])
print(f"LONGEST {longest:.2f}", flush=True)
print(f"FAILED {failed}", flush=True)
