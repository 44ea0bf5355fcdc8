"""Lab client: hold one HTTP keep-alive connection through a VIP.

    python3 hold.py VIP SECONDS SOURCE [TIMEOUT]

Opens one connection from SOURCE, prints "HOLD <web host that answered>", then,
on that same connection, requests / every 0.5 s for SECONDS, printing
"OK <web host> <seconds the answer took>" per answer. Exits 0 after SECONDS, 1 at
the first failure (printed). An answer may take TIMEOUT seconds (default 5; longer
lets TCP's retransmissions carry the connection across a takeover). Lines are
flushed as they happen: the caller reads them live.
"""

import http.client
import sys
import time

vip, seconds, source = sys.argv[1], float(sys.argv[2]), sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0


def ask(connection):
    connection.request("GET", "/", headers={"Connection": "keep-alive"})
    response = connection.getresponse()
    return response.read().decode().strip().rpartition(" served by ")[2]


connection = http.client.HTTPConnection(vip, 80, timeout=timeout, source_address=(source, 0))
try:
    print(f"HOLD {ask(connection)}", flush=True)
except (OSError, http.client.HTTPException) as error:
    print(f"FAIL {type(error).__name__}: {error}", flush=True)
    sys.exit(1)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    time.sleep(0.5)
    asked = time.monotonic()
    try:
        print(f"OK {ask(connection)} {time.monotonic() - asked:.2f}", flush=True)
    except (OSError, http.client.HTTPException) as error:
        print(f"FAIL {type(error).__name__}: {error}", flush=True)
        sys.exit(1)
connection.close()
