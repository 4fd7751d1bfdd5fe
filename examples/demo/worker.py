"""A worker that polls the API every two seconds and logs what it gets."""
import sys
import time
import urllib.request

url = sys.argv[1]
print("worker ready", flush=True)
while True:
    with urllib.request.urlopen(url, timeout=5) as resp:
        print("worker got", resp.read().decode(), flush=True)
    time.sleep(2)
