#!/usr/bin/env python3
"""A registry token server for kiln's tests (the Docker registry token protocol), stdlib only.

    token_server.py --key KEY.pem --cert CERT.pem --user U --password P [--issuer I] [--port N]

Listens on 127.0.0.1 (port 0: any free one) and prints the port it got on a line of its own
on standard output, then serves:

  GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...]
      (a scope may repeat, and one value may hold several scopes separated by spaces)
      - `Authorization: Basic` with the configured user and password: every requested action;
      - no Authorization: only `pull` (anonymous pulls work, pushes are refused by the
        registry because the token does not grant them);
      - any other credentials: 401.
      The answer is {"token", "access_token", "expires_in": 300, "issued_at"}.
  POST /token  (the OAuth2 form: grant_type=password with username and password, service,
      scope; the same rules; "refresh_token" is not offered)
  GET /count  {"requests": N, "granted": N, "refused": N}: how often /token was asked.

The token is a JWT signed RS256 (by `openssl dgst -sha256 -sign KEY`), its header carrying
the signing certificate in x5c: the registry verifies that the certificate chains to its
`rootcertbundle` (the same self-signed certificate), then the signature with its key.

It exits when standard input reaches end of file (the harness holds the other end of a pipe,
so the server goes when the harness does, however it ends), on SIGTERM, or after --lifetime
seconds (default 1800) whatever happens.
"""

import argparse
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class State:
    def __init__(self, args):
        self.args = args
        with open(args.cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        self.x5c = base64.b64encode(der).decode("ascii")
        self.lock = threading.Lock()
        self.requests = 0
        self.granted = 0
        self.refused = 0

    def count(self, field):
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)

    def sign(self, signing_input):
        done = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.args.key],
            input=signing_input,
            capture_output=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError("openssl dgst failed: " + done.stderr.decode(errors="replace"))
        return done.stdout

    def token(self, subject, service, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": self.args.issuer,
            "sub": subject,
            "aud": service,
            "exp": now + 300,
            # A few seconds back: the registry compares with its own clock.
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(signature)


def parse_scopes(values):
    """`type:name:actions` scopes (the name may itself hold colons) -> access entries."""
    access = []
    for value in values:
        for scope in value.split():
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
            access.append(
                {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}
            )
    return access


class Handler(BaseHTTPRequestHandler):
    server_version = "kiln-test-token/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:
            sys.stderr.write("token server: " + (fmt % args) + "\n")

    def reply(self, status, body, extra=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/count":
            s = self.server.state
            with s.lock:
                body = {"requests": s.requests, "granted": s.granted, "refused": s.refused}
            return self.reply(200, body)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        user = password = None
        header = self.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return self.refuse("unsupported authorization scheme")
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return self.refuse("malformed basic credentials")
        self.grant(user, password, query.get("service", [""])[0], query.get("scope", []))

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(errors="replace"))
        if form.get("grant_type", [""])[0] != "password":
            self.server.state.count("requests")
            self.server.state.count("refused")
            return self.reply(400, {"error": "unsupported_grant_type"})
        self.grant(
            form.get("username", [""])[0],
            form.get("password", [""])[0],
            form.get("service", [""])[0],
            form.get("scope", []),
        )

    def refuse(self, why):
        s = self.server.state
        s.count("requests")
        s.count("refused")
        self.reply(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
            {"WWW-Authenticate": 'Basic realm="kiln-test-token"'},
        )

    def grant(self, user, password, service, scopes):
        s = self.server.state
        if user is not None and (user != s.args.user or password != s.args.password):
            return self.refuse("wrong user name or password")
        access = parse_scopes(scopes)
        if user is None:
            for entry in access:
                entry["actions"] = [a for a in entry["actions"] if a == "pull"]
            access = [e for e in access if e["actions"]]
        try:
            token = s.token(user or "", service, access)
        except (RuntimeError, subprocess.SubprocessError) as e:
            s.count("requests")
            return self.reply(500, {"error": str(e)})
        s.count("requests")
        s.count("granted")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.reply(
            200,
            {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued},
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--issuer", default="kiln-test-issuer")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)

    def leave(*_):
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)

    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Timer(args.lifetime, leave).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
