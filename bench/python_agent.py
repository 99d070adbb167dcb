#!/usr/bin/env python3
"""A STAND-IN for the Python "Home Assistant Sudo Agent" that sudo-agent replaces.

Reconstructed from /work/shared/SPEC.md for benchmarking only: it is NOT the original
code. It keeps what the SPEC says the old agent did and what determines its speed:

- http.server's ThreadingHTTPServer (a thread per connection), default HTTP/1.0
  handler, so every response closes the connection;
- POST `{"pin": "...", "command": "..."}` on / (and /run), GET /job/<id>;
- pyotp.TOTP(secret).verify(pin) on every request, no throttling, no replay check;
- the command run with subprocess shell=True in a thread, as root, with no timeout;
- the result written to <results>/agent-<id>.txt, never cleaned up;
- log lines `QUEUED [id]: cmd`, `EXECUTING [id]: cmd`, `RESULT [id] (rc=N): ...`,
  `INVALID PIN attempt for command: cmd` via the logging module, to a file and stderr.

GET /health is added (the original's health route is unknown) so the bench can time a
cheap request next to the flood.

usage: python_agent.py --port 9999 --secret-file FILE --log FILE --results DIR
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp

JOBS = {}
JOBS_LOCK = threading.Lock()
ARGS = None
TOTP = None
log = logging.getLogger("sudo_agent")


def run_job(job_id, command):
    log.info("EXECUTING [%s]: %s", job_id, command)
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    log.info("RESULT [%s] (rc=%d): %s", job_id, proc.returncode, output[:200])
    path = os.path.join(ARGS.results, "agent-%s.txt" % job_id)
    with open(path, "w") as f:
        f.write(output)
    with JOBS_LOCK:
        JOBS[job_id].update(status="done", returncode=proc.returncode, output=output)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # the old agent kept the access log quiet
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        if self.path.startswith("/job/"):
            with JOBS_LOCK:
                job = JOBS.get(self.path[len("/job/"):])
                job = dict(job) if job else None
            if job is None:
                return self.reply(404, {"error": "Job not found"})
            return self.reply(200, job)
        self.reply(404, {"error": "Not found"})

    def do_POST(self):
        if self.path not in ("/", "/run"):
            return self.reply(404, {"error": "Not found"})
        length = int(self.headers.get("Content-Length", 0))
        try:
            data = json.loads(self.rfile.read(length))
            pin, command = str(data.get("pin", "")), data["command"]
        except (ValueError, KeyError, AttributeError):
            return self.reply(400, {"error": "Invalid request"})
        if not TOTP.verify(pin):
            log.warning("INVALID PIN attempt for command: %s", command)
            return self.reply(401, {"error": "Invalid PIN"})
        job_id = uuid.uuid4().hex[:8]
        with JOBS_LOCK:
            JOBS[job_id] = {"id": job_id, "command": command, "status": "queued"}
        log.info("QUEUED [%s]: %s", job_id, command)
        threading.Thread(target=run_job, args=(job_id, command), daemon=True).start()
        self.reply(200, {"job_id": job_id, "status": "queued"})


def main():
    global ARGS, TOTP
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=9999)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--log", default="/var/log/sudo-agent.log")
    p.add_argument("--results", default="/tmp")
    ARGS = p.parse_args()
    with open(ARGS.secret_file) as f:
        TOTP = pyotp.TOTP(f.read().strip())
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(message)s")
    for h in (logging.FileHandler(ARGS.log), logging.StreamHandler(sys.stderr)):
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    log.info("LISTENING on 127.0.0.1:%d", ARGS.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
