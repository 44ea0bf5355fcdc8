"""Lab client: does every VIP answer HTTP with its own site's name? One request per
VIP, all side by side, so that the time a check takes does not grow with the sites.

    python3 answers.py TIMEOUT VIP[:PORT]=NAME...

Each request is `GET /` on a new connection (Host: the site's name), at most TIMEOUT
seconds. Prints "MISSING VIP" for each VIP that did not answer with NAME, then
"ANSWERED <count>"; exits 0 when every VIP answered.
"""

import socket
import sys
import threading

timeout, targets = float(sys.argv[1]), [arg.partition("=") for arg in sys.argv[2:]]
answered = {}


def ask(address, name):
    host, _, port = address.partition(":")
    try:
        with socket.create_connection((host, int(port or 80)), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
            reply = b""
            while len(reply) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        answered[address] = name.encode() in reply
    except OSError:
        answered[address] = False


threads = [threading.Thread(target=ask, args=(address, name), daemon=True) for address, _, name in targets]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout + 5)
missing = [address for address, _, _ in targets if not answered.get(address)]
for address in missing:
    print(f"MISSING {address}", flush=True)
print(f"ANSWERED {len(targets) - len(missing)}", flush=True)
sys.exit(1 if missing else 0)
