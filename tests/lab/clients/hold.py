"""Lab client: hold one HTTP keep-alive connection through a VIP.

    python3 hold.py VIP SECONDS SOURCE

Opens one connection from SOURCE, prints "HOLD <web host that answered>", then,
on that same connection, requests / every 0.5 s for SECONDS, printing
"OK <web host>" per answer. Exits 0 after SECONDS, 1 at the first failure
(printed). Lines are flushed as they happen: the test reads them live.
"""

import http.client
import sys
import time

vip, seconds, source = sys.argv[1], float(sys.argv[2]), sys.argv[3]


def ask(connection):
    connection.request("GET", "/", headers={"Connection": "keep-alive"})
    response = connection.getresponse()
    return response.read().decode().strip().rpartition(" served by ")[2]


connection = http.client.HTTPConnection(vip, 80, timeout=5, source_address=(source, 0))
try:
    print(f"HOLD {ask(connection)}", flush=True)
except (OSError, http.client.HTTPException) as error:
    print(f"FAIL {type(error).__name__}: {error}", flush=True)
    sys.exit(1)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    time.sleep(0.5)
    try:
        print(f"OK {ask(connection)}", flush=True)
    except (OSError, http.client.HTTPException) as error:
        print(f"FAIL {type(error).__name__}: {error}", flush=True)
        sys.exit(1)
connection.close()
