"""One-shot job: put the greeting into the key-value store, then exit 0."""
import os
import socket

host, port = os.environ["KV_ADDR"].split(":")
with socket.create_connection((host, int(port)), timeout=5) as s:
    s.sendall(b"SET greeting hello from corral\n")
    assert s.recv(16) == b"OK\n"
print("seeded the greeting", flush=True)
