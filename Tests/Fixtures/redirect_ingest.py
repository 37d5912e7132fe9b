#!/usr/bin/env python3
"""A plain-HTTP ingestion endpoint that redirects, for Brume's delivery tests.

  POST /ingest   while the file --redirect-file exists: answers its content as a status
                 (301, 302, 303, 307 or 308) with Location: /moved, the body unread-as-delivery;
                 otherwise 200 and the batch is appended to --log ({"batch": id, "values": [...]}).
  GET  /moved    200 "ok" (what a client that follows a 301/302/303 with a GET would get:
                 a success without the body). Counted in --stats as "get_moved".
  POST /moved    counted as "post_moved" and accepted (a 307/308 follower re-POSTs here).
"""
import argparse, gzip, json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
stats = {"redirects": 0, "accepted": 0, "get_moved": 0, "post_moved": 0}


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with lock, open(A.stats, "w") as f:
            json.dump(stats, f)

    def do_GET(self):
        if self.path == "/moved":
            with lock:
                stats["get_moved"] += 1
        return self.reply(200, b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/moved":
            with lock:
                stats["post_moved"] += 1
            return self.reply(200, b"ok")
        if os.path.exists(A.redirect_file):
            code = int(open(A.redirect_file).read().strip() or "301")
            with lock:
                stats["redirects"] += 1
            return self.reply(code, b"moved", {"Location": "/moved"})
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        doc = json.loads(body)
        with lock:
            stats["accepted"] += 1
            with open(A.log, "a") as f:
                f.write(json.dumps({"batch": doc["batch"], "values": [r["v"] for r in doc["readings"]]}) + "\n")
        return self.reply(200, b'{"ok":true}')


ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--redirect-file", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--stats", required=True)
A = ap.parse_args()
srv = ThreadingHTTPServer(("127.0.0.1", A.port), H)
print("redirecting ingest on", A.port, flush=True)
srv.serve_forever()
