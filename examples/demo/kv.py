"""A tiny line-protocol key-value store: `SET key value` -> OK, `GET key` -> value."""
import argparse
import socketserver

store: dict[str, str] = {}


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            parts = raw.decode().strip().split(" ", 2)
            if parts[0] == "SET" and len(parts) == 3:
                store[parts[1]] = parts[2]
                self.wfile.write(b"OK\n")
            elif parts[0] == "GET" and len(parts) == 2:
                self.wfile.write((store.get(parts[1], "") + "\n").encode())
            else:
                self.wfile.write(b"ERR\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler) as server:
        print(f"kv listening on {port}", flush=True)
        server.serve_forever()
