"""A stand-in for the Hugging Face Hub's file endpoint, for tests (no hub is reachable here).

Serves ``GET /{repo_id}/resolve/{revision}/{filename}`` (huggingface_hub's HUGGINGFACE_CO_URL_TEMPLATE) on
loopback, as strictly as the real hub answers it (huggingface_hub ``utils/_http.py`` ``hf_raise_for_status``
documents the answers and their ``X-Error-Code`` headers):

- a repo that does not exist, or is private, asked without a token: 401, ``X-Error-Code: RepoNotFound``
  (the hub does not say which: "401 is misleading as it is returned for private and gated repos if user is
  not authenticated, missing repos"); with a valid token that may not read it: 404 ``RepoNotFound``;
- a token the hub does not know: 401, ``X-Error-Message: Invalid credentials in Authorization header``;
- a gated repo without access: 401 (no token) or 403 (a token without access), ``X-Error-Code: GatedRepo``;
- an unknown revision: 404 ``RevisionNotFound``; a file the repo lacks: 404 ``EntryNotFound``;
- a renamed repo: 307 with a relative ``Location`` to the new name (the hub's redirect for moved repos);
- a file kept in large-file storage: 302 to another host (the CDN: here ``localhost`` on a second port, so the
  host differs from ``127.0.0.1``), which records whether an ``Authorization`` header reached it.

Every request is recorded (path, whether a token was sent, and which) in ``HubStandin.requests``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class Repo:
    def __init__(self, files, private=False, gated=False, readers=(), revisions=("main",), lfs=(), moved_to=None):
        self.files = dict(files)           # filename -> bytes or str
        self.private = private
        self.gated = gated
        self.readers = set(readers)        # tokens that may read a private/gated repo
        self.revisions = set(revisions)
        self.lfs = set(lfs)                # files served through the CDN redirect
        self.moved_to = moved_to


class _Hub(BaseHTTPRequestHandler):
    def log_message(self, *args):
        return

    def _answer(self, status, body=b"", headers=None):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, code=None, message=None):
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._answer(status, {"error": message or code or "error"}, headers)

    def do_GET(self):  # noqa: N802 (http.server's name)
        hub = self.server.hub
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        hub.requests.append({"path": self.path, "token": token, "host": self.headers.get("Host")})
        parts = unquote(self.path).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, message="Not Found")
        repo_id, revision, filename = parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:])
        if token is not None and token not in hub.tokens:
            return self._error(401, message="Invalid credentials in Authorization header")
        repo = hub.repos.get(repo_id)
        if repo is not None and repo.moved_to:
            return self._answer(307, b"", {"Location": "/%s/resolve/%s/%s" % (repo.moved_to, revision, filename)})
        if repo is None or (repo.private and token not in repo.readers):
            return self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if repo.gated and token not in repo.readers:
            return self._error(401 if token is None else 403, "GatedRepo", "Access to model %s is restricted." % repo_id)
        if revision not in repo.revisions:
            return self._error(404, "RevisionNotFound", "Invalid rev id: %s" % revision)
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found")
        if filename in repo.lfs:
            return self._answer(302, b"", {"Location": "http://localhost:%d/cdn/%s/%s" % (hub.cdn.port, repo_id, filename)})
        body = repo.files[filename]
        self._answer(200, body.encode() if isinstance(body, str) else body, {"Content-Type": "text/plain; charset=utf-8"})


class _Cdn(BaseHTTPRequestHandler):
    def log_message(self, *args):
        return

    def do_GET(self):  # noqa: N802
        cdn = self.server.cdn
        cdn.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        _prefix, repo_a, repo_b, filename = unquote(self.path).lstrip("/").split("/", 3)
        body = cdn.hub.repos[repo_a + "/" + repo_b].files[filename]
        body = body.encode() if isinstance(body, str) else body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    def __init__(self, handler, attr, owner):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        setattr(self.httpd, attr, owner)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Cdn:
    def __init__(self, hub):
        self.hub = hub
        self.requests = []
        self._srv = _Server(_Cdn, "cdn", self)
        self.port = self._srv.port

    def stop(self):
        self._srv.stop()


class HubStandin:
    """``with HubStandin(repos, tokens) as hub: hub.endpoint`` -> http://127.0.0.1:PORT"""

    def __init__(self, repos=None, tokens=()):
        self.repos = dict(repos or {})
        self.tokens = set(tokens)
        self.requests = []
        self.cdn = Cdn(self)
        self._srv = _Server(_Hub, "hub", self)
        self.endpoint = "http://127.0.0.1:%d" % self._srv.port

    def stop(self):
        self._srv.stop()
        self.cdn.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
