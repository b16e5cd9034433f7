"""A stand-in "server" command for faults a real server will not produce here (see standins.py).

    python standin_server.py {never-ready|oom|bind|secret-then-die} --host H --port P
"""

import argparse
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    status = 200

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = b'{"status": "loading"}' if self.status != 200 else b'{"status": "ok"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a, extra = ap.parse_known_args()  # an arm's server_args, which a stand-in ignores
    if a.mode == "oom":
        print("Loading weights...", flush=True)
        print("Traceback (most recent call last):\n  File \"server.py\", line 1, in <module>", flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.53 GiB. GPU 0 has a total "
              "capacity of 79.19 GiB of which 1.02 GiB is free.", flush=True)
        return 1
    if a.mode == "secret-then-die":
        print("command line:", " ".join(sys.argv), flush=True)
        print("environment:", dict(os.environ), flush=True)
        print(f"could not log in with HF_TOKEN={os.environ.get('HF_TOKEN')}", flush=True)
        return 1
    if a.mode == "never-ready":
        # A grandchild, as vLLM's engine process: the stop must reach the whole tree.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Handler.status = 503
    print(f"stand-in {a.mode} binding {a.host}:{a.port}", flush=True)
    server = ThreadingHTTPServer((a.host, a.port), Handler)  # a taken port raises Errno 98 here
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
