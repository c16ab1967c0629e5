"""Local HTTP server for tests/test_media.c.

Listens on 127.0.0.1 and on 127.0.0.2 (loopback both), each on an ephemeral
port; the first line of stdout is "PORT1 PORT2". The second address is the
target the SSRF tests must never reach. It exits when its stdin reaches EOF
(the test closes the pipe, or dies) and in any case after MAX_LIFETIME_S.
Every sleep is capped.

Routes (query parameters in brackets):
  /bytes[n, seed]          n pattern bytes with Content-Length
  /nolen[n, seed, hold]    n pattern bytes, no Content-Length (closes at the
                           end), then holds the connection `hold` seconds
  /bigcl[cl]               announces Content-Length cl, sends 1000 bytes, waits
  /status[code]            that status with a short body
  /slow[delay]             waits `delay` seconds before answering
  /delay[ms, n, seed]      waits ms milliseconds, then like /bytes
  /redir[n]                302 (with a body) to /redir?n=n-1; n=0 is /bytes
  /to[loc]                 302 to loc, no body
  /noloc                   302 without a Location
  /ua                      the request's User-Agent as the body
  /count                   how many requests this address has served so
                           far, not counting /count itself
"""
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# bounds that only a runaway test reaches: the stalls the tests ask for are
# 30 s, and a slow or sanitized run of the suite can take minutes
MAX_LIFETIME_S = 900
MAX_SLEEP_S = 40.0


def pattern(n, seed):
    """Byte i is (i * 131 + seed * 17 + 7) % 251, as test_media.c computes."""
    return bytes((i * 131 + seed * 17 + 7) % 251 for i in range(n))


def nap(seconds):
    time.sleep(min(max(seconds, 0.0), MAX_SLEEP_S))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def send_body(self, code, body, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        num = lambda k, d: int(q.get(k, d))
        route = parts.path
        if route == "/count":
            with self.server.lock:
                n = self.server.served
            self.send_body(200, str(n).encode())
            return
        with self.server.lock:
            self.server.served += 1
        if route == "/bytes":
            self.send_body(200, pattern(num("n", 1000), num("seed", 0)),
                           [("Content-Type", "application/octet-stream")])
        elif route == "/nolen":
            self.send_response(200)
            self.end_headers()
            data = pattern(num("n", 1000), num("seed", 0))
            for i in range(0, len(data), 8192):
                self.wfile.write(data[i:i + 8192])
            self.wfile.flush()
            nap(float(q.get("hold", "0")))
        elif route == "/bigcl":
            self.send_response(200)
            self.send_header("Content-Length", q.get("cl", "100000000"))
            self.end_headers()
            self.wfile.write(pattern(1000, 0))
            self.wfile.flush()
            nap(float(q.get("hold", "3")))
        elif route == "/status":
            self.send_body(num("code", 404), b"status body\n")
        elif route == "/slow":
            nap(float(q.get("delay", "3")))
            self.send_body(200, pattern(100, 0))
        elif route == "/delay":
            nap(num("ms", 100) / 1000.0)
            self.send_body(200, pattern(num("n", 1000), num("seed", 0)))
        elif route == "/redir":
            n = num("n", 1)
            if n <= 0:
                self.send_body(200, pattern(1000, 5))
            else:
                self.send_body(302, b"moved along\n" * 4,
                               [("Location", "/redir?n=%d" % (n - 1))])
        elif route == "/to":
            self.send_body(302, b"", [("Location", q.get("loc", "/bytes"))])
        elif route == "/noloc":
            self.send_body(302, b"")
        elif route == "/ua":
            self.send_body(200, self.headers.get("User-Agent", "").encode())
        else:
            self.send_body(404, b"no such route\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args):
        super().__init__(*args)
        self.lock = threading.Lock()
        self.served = 0

    def handle_error(self, request, client_address):
        # Clients that hang up early (timeouts, size caps) are the point of
        # several tests; their broken pipes are not worth a traceback.
        pass


def exit_on_stdin_eof():
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main():
    server = Server(("127.0.0.1", 0), Handler)
    other = Server(("127.0.0.2", 0), Handler)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    deadline = threading.Timer(MAX_LIFETIME_S, lambda: os._exit(0))
    deadline.daemon = True
    deadline.start()
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    print(server.server_address[1], other.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
