"""HTTP API: / returns the greeting from the key-value store, /health says ok."""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def greeting() -> str:
    host, port = os.environ["KV_ADDR"].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET greeting\n")
        return s.makefile().readline().strip() + os.environ.get("GREETING_SUFFIX", "")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok" if self.path == "/health" else json.dumps({"greeting": greeting()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print(fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])  # corral sets PORT for a service with one port
    print(f"api on http://127.0.0.1:{port}/", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
