#!/usr/bin/env python3
"""A scripted HTTPS ingestion endpoint with an OAuth2 token endpoint, for Brume's tests.

  POST /oauth/token   client credentials -> {"access_token": "tok-N", "expires_in": TTL}
  POST /ingest        v1 telemetry JSON (gzip or not) with Authorization: Bearer tok-N

Behaviour, in order: the first ingest request gets 401 (the token is revoked: the gateway must
fetch a new one and retry), then one 429 with Retry-After: 1, then one 500, then 200 for
everything, except a batch holding a reading of device "poison", which gets 400 (the gateway
must dead-letter it and go on). Every accepted batch is appended to --log as one JSON line
{"batch": id, "readings": [[d, m, v], ...], "token": ..., "gzip": bool}; --stats is rewritten
with counters after each request.

usage: https_ingest.py --port P --cert C --key K [--ca CA --require-client-cert] --log F --stats F [--ttl S]
"""
import argparse, gzip, json, ssl, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

lock = threading.Lock()
state = {"tokens_issued": 0, "ingest_requests": 0, "status": {}, "bad_token": 0, "gzip": 0, "plain": 0, "client_cert": None}
script = ["401", "429", "500"]
valid = set()


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
        with lock:
            state["status"][str(code)] = state["status"].get(str(code), 0) + 1
            with open(A.stats, "w") as f:
                json.dump(state, f)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        cert = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        if cert:
            state["client_cert"] = dict(x[0] for x in cert.get("subject", ())).get("commonName")
        if self.path == "/oauth/token":
            form = parse_qs(body.decode())
            if form.get("grant_type") != ["client_credentials"] or form.get("client_secret") != ["s3cret"]:
                return self.reply(401, b'{"error":"invalid_client"}')
            with lock:
                state["tokens_issued"] += 1
                tok = f"tok-{state['tokens_issued']}"
                valid.add(tok)
            return self.reply(200, json.dumps({"access_token": tok, "token_type": "Bearer", "expires_in": A.ttl}).encode(),
                              {"Content-Type": "application/json"})
        if self.path != "/ingest":
            return self.reply(404)
        with lock:
            state["ingest_requests"] += 1
        auth = self.headers.get("Authorization", "")
        tok = auth[7:] if auth.startswith("Bearer ") else None
        if tok not in valid:
            with lock:
                state["bad_token"] += 1
            return self.reply(401, b"bad token")
        with lock:
            step = script.pop(0) if script else None
        if step == "401":
            with lock:
                valid.discard(tok)  # revoked: the client must get a new one
            return self.reply(401, b"token revoked")
        if step == "429":
            return self.reply(429, b"slow down", {"Retry-After": "1"})
        if step == "500":
            return self.reply(500, b"oops")
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
            state["gzip"] += 1
        else:
            state["plain"] += 1
        doc = json.loads(body)
        rs = [[r["d"], r["m"], r["v"]] for r in doc["readings"]]
        if any(r[0] == "poison" for r in rs):
            return self.reply(400, b'{"error":"device poison is not allowed"}')
        with lock:
            with open(A.log, "a") as f:
                f.write(json.dumps({"batch": doc["batch"], "header": self.headers.get("X-Brume-Batch"), "readings": rs, "token": tok}) + "\n")
        return self.reply(200, b'{"ok":true}')


ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--ca")
ap.add_argument("--require-client-cert", action="store_true")
ap.add_argument("--log", required=True)
ap.add_argument("--stats", required=True)
ap.add_argument("--ttl", type=int, default=3600)
A = ap.parse_args()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(A.cert, A.key)
if A.require_client_cert:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(A.ca)
srv = ThreadingHTTPServer(("127.0.0.1", A.port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("https ingest on", A.port, flush=True)
srv.serve_forever()
