# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Compute Engine v1 REST client shared by every plugin of llmops.gce_vllm.

Used by the modules (on the controller, through AnsibleModule: see client_from_module) and by the inventory
plugin (controller side: construct GceClient directly). Python 3.9+.

- Credentials: google-auth, with the auth_kind names of google.cloud (application, serviceaccount,
  accesstoken, machineaccount). They are checked when the client is built, before any API call.
- Transport: requests (one Session), retries with exponential backoff and jitter on 429/500/502/503/504,
  on 403 rateLimitExceeded/userRateLimitExceeded (how Compute answers an exceeded rate quota) and on
  connection errors (Retry-After respected), never on other 4xx (403 quotaExceeded and permission errors are
  final, with the quota or permission named). A final error says how many attempts over how long.
- Every URL goes to api_endpoint (default https://compute.googleapis.com/compute/v1/, env GCE_API_ENDPOINT):
  full selfLinks are accepted and mapped onto the endpoint, so credentials never travel anywhere else.
- Pagination (list, aggregated_list) and operations (wait) as the Compute API defines them; operation
  errors are raised verbatim (GceOperationError.errors is the operation's error.errors list). operations.wait
  holds a request for up to 2 minutes: its read timeout outlasts that, a not-DONE answer is waited on again,
  and only the operation timeout ends a wait.

google-auth and requests are imported lazily: importing this file never fails, building a client without
them raises GceError naming the missing package.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import time

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - ansible is always there in practice
    env_fallback = None

# The rules and resource helpers live in gce_rules.py; they are re-exported here for the callers of gce.py.
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (  # noqa: F401 pylint: disable=unused-import
    AUTH_KINDS,
    DEFAULT_SCOPES,
    RATE_LIMIT_REASONS,
    RETRY_STATUSES,
    DLVM_IMAGE_PROJECT,
    GPU_MACHINE_FAMILIES,
    READONLY_SCOPES,
    RECOMMENDED_GPU_IMAGE_FAMILY,
    RECOMMENDED_GPU_IMAGE_PROJECT,
    Names,
    api_error_hint,
    api_option_problems,
    basename,
    check_api_endpoint,
    check_cidrs,
    check_gpu_setup,
    check_labels,
    check_name,
    check_ports,
    check_project,
    check_zone,
    has_gpu,
    image_path,
    machine_family,
    network_path,
    open_to_world,
    retryable,
    service_account_source_problems,
    zone_region,
)

DEFAULT_API_ENDPOINT = "https://compute.googleapis.com/compute/v1/"
MAX_BACKOFF = 32.0
MAX_RETRY_AFTER = 60.0
# operations.wait "waits for no more than the 2 minutes and then returns the current state of the operation,
# which might be DONE or still in progress": its HTTP read timeout must outlast that hold.
WAIT_HOLD = 120.0
WAIT_READ_MARGIN = 30.0


def _fb(*names):
    return (env_fallback, list(names)) if env_fallback else None


def _with_fallback(spec, *names):
    fb = _fb(*names)
    if fb:
        spec["fallback"] = fb
    return spec


# The connection options of every GCE module (documented by the llmops.gce_vllm.gce doc fragment).
GCE_AUTH_ARGSPEC = dict(
    project=_with_fallback(dict(type="str", required=False), "GCP_PROJECT"),
    auth_kind=_with_fallback(dict(type="str", choices=list(AUTH_KINDS), default="application"), "GCP_AUTH_KIND"),
    service_account_file=_with_fallback(dict(type="path"), "GCP_SERVICE_ACCOUNT_FILE"),
    service_account_contents=_with_fallback(dict(type="jsonarg", no_log=True), "GCP_SERVICE_ACCOUNT_CONTENTS"),
    service_account_email=_with_fallback(dict(type="str"), "GCP_SERVICE_ACCOUNT_EMAIL"),
    access_token=_with_fallback(dict(type="str", no_log=True), "GCP_ACCESS_TOKEN"),
    scopes=_with_fallback(dict(type="list", elements="str", default=list(DEFAULT_SCOPES)), "GCP_SCOPES"),
    api_endpoint=_with_fallback(dict(type="str"), "GCE_API_ENDPOINT"),
    timeout=dict(type="float", default=30.0),
    retries=dict(type="int", default=5),
)

# Keys of GCE_AUTH_ARGSPEC that GceClient takes as keyword arguments (project is positional/keyword too).
_CLIENT_KEYS = ("auth_kind", "service_account_file", "service_account_contents", "service_account_email",
                "access_token", "scopes", "api_endpoint", "timeout", "retries")


# --------------------------------------------------------------------------------------------- errors
class GceError(Exception):
    """Any failure of the client; str(e) is a complete, human-readable message."""


class GceAuthError(GceError):
    """Credentials missing or unusable (checked before any API call)."""


class GceApiError(GceError):
    """The API answered with an error status (after retries, for the retryable ones)."""

    def __init__(self, status, message, reason=None, body=None, method=None, url=None, attempts=1, elapsed=0.0):
        self.status = status
        self.status_code = status
        self.message = message
        self.reason = reason
        self.body = body
        self.method = method
        self.url = url
        self.attempts = attempts
        self.elapsed = elapsed
        self.retryable = retryable(status, reason)
        self.hint = api_error_hint(status, reason)
        text = "HTTP %s" % status
        if reason:
            text += " %s" % reason
        text += ": %s" % message
        if method and url:
            text += " (%s %s)" % (method, url)
        if attempts > 1 or self.retryable:
            text += "; gave up after %d attempt%s over %.1f s" % (attempts, "s" if attempts != 1 else "", elapsed)
        if self.hint:
            text += " (%s)" % self.hint
        super(GceApiError, self).__init__(text)


class GceOperationError(GceError):
    """An operation finished (DONE) with an error; `errors` is its error.errors list, verbatim."""

    def __init__(self, operation, errors):
        self.operation = operation
        self.errors = errors
        parts = []
        for err in errors or []:
            parts.append("%s: %s" % (err.get("code", "?"), err.get("message", "")))
        text = "operation %s (%s %s) failed: %s" % (
            operation.get("name"), operation.get("operationType"), basename(operation.get("targetLink")),
            "; ".join(parts) or json.dumps(errors))
        super(GceOperationError, self).__init__(text)


class GceTimeoutError(GceError):
    """An operation did not reach DONE in time."""


class GceTransportError(GceError):
    """No answer (connection error or read timeout) after the retries."""


# --------------------------------------------------------------------------------------------- client
def _import_requests():
    try:
        import requests  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise GceError("the Python package 'requests' is required by llmops.gce_vllm's Compute client; "
                       "install it on the controller: pip install requests google-auth")
    return requests


def _import_google_auth():
    try:
        import google.auth  # noqa: F401 pylint: disable=import-outside-toplevel
        import google.auth.exceptions  # noqa: F401 pylint: disable=import-outside-toplevel
        import google.auth.transport.requests  # noqa: F401 pylint: disable=import-outside-toplevel
    except ImportError:
        raise GceError("the Python package 'google-auth' is required by llmops.gce_vllm's Compute client for "
                       "auth_kind application/serviceaccount/machineaccount; install it on the controller: "
                       "pip install google-auth requests (or use auth_kind=accesstoken)")
    import google  # pylint: disable=import-outside-toplevel
    return google


def load_service_account_info(service_account_file=None, service_account_contents=None, names=None):
    """The parsed service-account key, checked: the file exists, is JSON, is a service-account key.

    Raises GceAuthError; `names` (a gce_rules.Names) names the options as the caller's user knows them.
    """
    info, errors = service_account_source_problems(service_account_file, service_account_contents, names)
    if errors:
        raise GceAuthError("; ".join(errors))
    return info


class GceClient(object):
    """A small Compute Engine v1 REST client.

    GceClient(project, auth_kind="application", service_account_file=None, service_account_contents=None,
              service_account_email=None, access_token=None, scopes=None, api_endpoint=None, timeout=30,
              retries=5, backoff=0.5, session=None, sleep=time.sleep)
    """

    def __init__(self, project=None, auth_kind="application", service_account_file=None,
                 service_account_contents=None, service_account_email=None, access_token=None, scopes=None,
                 api_endpoint=None, timeout=30, retries=5, backoff=0.5, session=None, sleep=None,
                 user_agent="llmops.gce_vllm"):
        self.project = project
        self.auth_kind = auth_kind or "application"
        self.scopes = list(scopes or DEFAULT_SCOPES)
        self.api_endpoint = (api_endpoint or os.environ.get("GCE_API_ENDPOINT") or DEFAULT_API_ENDPOINT)
        err = check_api_endpoint(self.api_endpoint)
        if err:
            raise GceError(err)
        if not self.api_endpoint.endswith("/"):
            self.api_endpoint += "/"
        self.timeout = float(timeout if timeout is not None else 30)
        self.retries = max(0, int(retries if retries is not None else 5))
        self.backoff = float(backoff)
        self._sleep = sleep if sleep is not None else time.sleep
        self.user_agent = user_agent
        self._requests = _import_requests()
        self._session = session
        self._credentials = None
        self._static_token = None
        self.calls = 0  # requests sent (retries included), for diagnostics and tests
        self._build_credentials(service_account_file, service_account_contents, service_account_email,
                                access_token)

    # ----------------------------------------------------------------- credentials
    def _build_credentials(self, sa_file, sa_contents, sa_email, access_token):
        kind = self.auth_kind
        if kind != "serviceaccount":  # the key file is read once, below
            errors = api_option_problems({"auth_kind": kind, "access_token": access_token}, require_project=False,
                                         environ={})[0]
            if errors:
                raise GceAuthError("; ".join(errors))
        if kind == "accesstoken":
            self._static_token = access_token
            return
        if kind == "serviceaccount":
            info = load_service_account_info(sa_file, sa_contents)
            _import_google_auth()
            from google.oauth2 import service_account  # pylint: disable=import-outside-toplevel
            try:
                self._credentials = service_account.Credentials.from_service_account_info(info, scopes=self.scopes)
            except (ValueError, KeyError) as e:
                raise GceAuthError("the service-account key is not usable: %s" % e)
            return
        google = _import_google_auth()
        if kind == "machineaccount":
            from google.auth import compute_engine  # pylint: disable=import-outside-toplevel
            self._credentials = compute_engine.Credentials(service_account_email=sa_email or "default")
            return
        # application default credentials
        try:
            creds, default_project = google.auth.default(scopes=self.scopes)
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise GceAuthError("auth_kind=application found no application default credentials (%s); run "
                               "'gcloud auth application-default login', or set GOOGLE_APPLICATION_CREDENTIALS, "
                               "or choose another auth_kind" % e)
        self._credentials = creds
        if not self.project and default_project:
            self.project = default_project

    def _token(self):
        if self._static_token:
            return self._static_token
        creds = self._credentials
        if not creds.valid:
            google = _import_google_auth()
            try:
                creds.refresh(google.auth.transport.requests.Request(session=self._get_session()))
            except Exception as e:  # google.auth.exceptions.RefreshError, TransportError, ...
                raise GceAuthError("could not obtain an access token (auth_kind=%s): %s" % (self.auth_kind, e))
        return creds.token

    def _get_session(self):
        if self._session is None:
            self._session = self._requests.Session()
        return self._session

    # ----------------------------------------------------------------- URLs
    def url(self, path):
        """The absolute URL of `path` (relative to api_endpoint, or a full selfLink mapped onto it)."""
        path = str(path)
        if re.match(r"^https?://", path):
            if path.startswith(self.api_endpoint):
                return path
            idx = path.find("/projects/")
            if idx < 0:
                raise GceError("cannot map %r onto api_endpoint %s: not a Compute resource link"
                               % (path, self.api_endpoint))
            path = path[idx + 1:]
        return self.api_endpoint + path.lstrip("/")

    def project_path(self, *parts):
        if not self.project:
            raise GceError("project is required: set project (or GCP_PROJECT)")
        return "/".join(("projects", self.project) + tuple(str(p) for p in parts))

    # ----------------------------------------------------------------- transport
    def _retry_delay(self, attempt, response=None):
        if response is not None:
            value = response.headers.get("Retry-After")
            if value:
                try:
                    return min(max(float(value), 0.0), MAX_RETRY_AFTER)
                except ValueError:
                    pass
        delay = min(self.backoff * (2 ** attempt), MAX_BACKOFF)
        return delay * (0.5 + random.random() / 2)

    def request(self, method, path, params=None, body=None, read_timeout=None, retries=None):
        """Send one API request (with retries); returns the decoded JSON body ({} when empty).

        read_timeout: the HTTP read timeout of this request (default: timeout; connecting always uses timeout).
        retries: the retries of this request (default: the client's).
        """
        retries = self.retries if retries is None else retries
        started = time.monotonic()
        requests = self._requests
        method = method.upper()
        url = self.url(path)
        data = json.dumps(body) if body is not None else None
        attempt = 0
        while True:
            headers = {
                "Authorization": "Bearer %s" % self._token(),
                "Accept": "application/json",
                "User-Agent": self.user_agent,
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            self.calls += 1
            try:
                resp = self._get_session().request(
                    method, url, params=params, data=data, headers=headers,
                    timeout=(self.timeout, read_timeout) if read_timeout else self.timeout)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                if attempt < retries:
                    self._sleep(self._retry_delay(attempt))
                    attempt += 1
                    continue
                raise GceTransportError("%s %s: no answer after %d attempts over %.1f s: %s"
                                        % (method, url, attempt + 1, time.monotonic() - started, e))
            if resp.status_code >= 400:
                error = self._api_error(method, url, resp, attempt + 1, time.monotonic() - started)
                if error.retryable and attempt < retries:
                    self._sleep(self._retry_delay(attempt, resp))
                    attempt += 1
                    continue
                raise error
            if not resp.content:
                return {}
            try:
                return resp.json()
            except ValueError:
                raise GceError("%s %s: the answer (HTTP %s) is not JSON: %r"
                               % (method, url, resp.status_code, resp.text[:200]))

    @staticmethod
    def _api_error(method, url, resp, attempts=1, elapsed=0.0):
        status = resp.status_code
        message = resp.reason or "error"
        reason = None
        body = None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:2000]
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            message = err.get("message") or message
            errors = err.get("errors") or []
            if errors and isinstance(errors[0], dict):
                reason = errors[0].get("reason")
            reason = reason or err.get("status")
        elif isinstance(body, str) and body.strip():
            message = body.strip()[:300]
        # never echo query strings (page tokens are harmless, but keep messages short)
        return GceApiError(status, message, reason, body, method, url.split("?", 1)[0], attempts, elapsed)

    # ----------------------------------------------------------------- reading
    def get(self, path, params=None):
        """The resource at `path`, or None when the API answers 404."""
        try:
            return self.request("GET", path, params=params)
        except GceApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, path, params=None):
        """Every item of a list method, following nextPageToken."""
        params = dict(params or {})
        while True:
            page = self.request("GET", path, params=params)
            yield from page.get("items") or ()
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def aggregated_list(self, resource, params=None):
        """(scope, item) for every item of projects/{project}/aggregated/{resource}, one call per page."""
        params = dict(params or {})
        params.setdefault("maxResults", 500)
        path = self.project_path("aggregated", resource)
        while True:
            page = self.request("GET", path, params=params)
            items = page.get("items") or {}
            for scope, scoped in items.items():
                for item in (scoped or {}).get(resource) or ():
                    yield scope, item
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    # ----------------------------------------------------------------- operations
    @staticmethod
    def operation_path(operation):
        """The relative path of an operation resource, from its selfLink or its zone/region and name."""
        link = operation.get("selfLink")
        if link and "/projects/" in link:
            return link[link.find("/projects/") + 1:]
        name = operation["name"]
        project = None
        target = operation.get("targetLink") or ""
        m = re.search(r"projects/([^/]+)/", target)
        if m:
            project = m.group(1)
        if not project:
            raise GceError("operation %s has neither selfLink nor targetLink" % name)
        if operation.get("zone"):
            return "projects/%s/zones/%s/operations/%s" % (project, basename(operation["zone"]), name)
        if operation.get("region"):
            return "projects/%s/regions/%s/operations/%s" % (project, basename(operation["region"]), name)
        return "projects/%s/global/operations/%s" % (project, name)

    def wait(self, operation, timeout=600, poll_interval=1.0):
        """Wait for an operation to be DONE; returns it, or raises GceOperationError / GceTimeoutError.

        Uses the API's operations.wait, which holds the request for up to 2 minutes (WAIT_HOLD) and then
        answers the operation's current state, DONE or not; it may also answer at once. Its read timeout
        outlasts the hold; a not-DONE answer is normal and is waited on again. No answer, or a retryable
        status, during a wait is retried (with backoff) for as long as `timeout` allows: only `timeout`
        ends the wait. Where wait is not available (404/405/501) it falls back to polling with GET.
        """
        started = time.monotonic()
        deadline = started + float(timeout)
        path = self.operation_path(operation)
        use_wait = True
        op = operation
        failures = 0
        while op.get("status") != "DONE":
            now = time.monotonic()
            if now >= deadline:
                raise GceTimeoutError("operation %s (%s %s) is still %s after %ss (operation timeout)" % (
                    op.get("name"), op.get("operationType"), basename(op.get("targetLink")), op.get("status"),
                    timeout))
            asked = now
            try:
                if use_wait:
                    try:
                        # the hold plus a margin, but never past the deadline; wait() retries, not request()
                        op = self.request("POST", path + "/wait", retries=0, read_timeout=min(
                            max(self.timeout, WAIT_HOLD + WAIT_READ_MARGIN), deadline - now + 1.0))
                    except GceApiError as e:
                        if e.status not in (404, 405, 501):
                            raise
                        use_wait = False
                        continue
                else:
                    op = self.request("GET", path)
                failures = 0
            except (GceTransportError, GceApiError) as e:
                if isinstance(e, GceApiError) and not e.retryable:
                    raise
                failures += 1  # no answer or still throttled after the request's own retries: keep waiting
                self._sleep(max(0.0, min(self._retry_delay(min(failures, 6)), deadline - time.monotonic())))
                continue
            if op.get("status") != "DONE" and (not use_wait or time.monotonic() - asked < poll_interval):
                # an answer that came back at once (GET polling, or a wait the API cut short): do not spin
                self._sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))
        errors = (op.get("error") or {}).get("errors")
        if errors:
            raise GceOperationError(op, errors)
        return op

    def mutate(self, method, path, body=None, params=None, wait=True, timeout=600):
        """A write request (insert/patch/delete/start/...) with a requestId (so a retried request is not
        applied twice), then wait for its operation. Returns the final operation."""
        import uuid  # pylint: disable=import-outside-toplevel
        params = dict(params or {})
        params.setdefault("requestId", str(uuid.uuid4()))
        op = self.request(method, path, params=params, body=body)
        if wait and op.get("kind") == "compute#operation":
            op = self.wait(op, timeout=timeout)
        return op


def client_kwargs(params):
    """GceClient keyword arguments from a module's (or plugin's) option values."""
    kwargs = dict((k, params.get(k)) for k in _CLIENT_KEYS if params.get(k) is not None)
    kwargs["project"] = params.get("project")
    return kwargs


def client_from_module(module, require_project=True, **extra):
    """A GceClient from an AnsibleModule's GCE_AUTH_ARGSPEC options; fails the module on a bad setup."""
    params = module.params
    if require_project:
        err = check_project(params.get("project"))
        if err:
            module.fail_json(msg=err)
    kwargs = client_kwargs(params)
    kwargs.update(extra)
    try:
        return GceClient(**kwargs)
    except GceError as e:
        module.fail_json(msg=str(e))


# ----------------------------------------------------------------------------- SSH host keys (guest attributes)
# GCE's guest agent publishes the VM's SSH host keys as guest attributes (namespace hostkeys/, key = the key type,
# value = the base64 key) when the metadata has enable-guest-attributes=TRUE; gcloud compute ssh reads them the
# same way (instances.getGuestAttributes?queryPath=hostkeys/) and writes them to its known_hosts file.
GUEST_ATTRIBUTES_KEY = "enable-guest-attributes"
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def guest_host_keys(client, zone, name):
    """{key type: base64 key} the VM published, or None while there are none yet. Before the guest agent has
    written them the API answers 404 "The resource 'hostkeys/' of type 'Guest Attribute' was not found."
    Unknown key types and values that are not one base64 word are dropped (as gcloud does)."""
    try:
        got = client.request("GET", client.project_path("zones", zone, "instances", name, "getGuestAttributes"),
                             params={"queryPath": "hostkeys/"})
    except GceApiError as e:
        if e.status == 404:
            return None
        raise
    keys = {}
    for item in (got.get("queryValue") or {}).get("items") or ():
        value = (item.get("value") or "").split()
        if item.get("namespace") == "hostkeys" and item.get("key") in HOST_KEY_TYPES and value \
                and _BASE64_RE.match(value[0]):
            try:
                base64.b64decode(value[0], validate=True)
            except (ValueError, TypeError):
                continue
            keys[item["key"]] = value[0]
    return keys or None


def _known_host_matches(field, hosts):
    """Whether the host field of a known_hosts line names one of `hosts` (plain, [host]:22 or hashed |1|)."""
    for entry in field.split(","):
        if entry.startswith("|1|"):
            try:
                salt, digest = (base64.b64decode(x) for x in entry[3:].split("|", 1))
            except (ValueError, TypeError):
                continue
            if any(hmac.compare_digest(hmac.new(salt, h.encode(), hashlib.sha1).digest(), digest) for h in hosts):
                return True
        elif entry in hosts or entry in ("[%s]:22" % h for h in hosts):
            return True
    return False


def known_hosts_update(text, hosts, keys):
    """known_hosts text with every line for any of `hosts` replaced by one line per key of `keys`
    ("HOST1,HOST2 TYPE KEY"); other lines kept as they are."""
    hosts = [h for h in hosts if h]
    ours = ["%s %s %s" % (",".join(hosts), t, keys[t]) for t in HOST_KEY_TYPES if t in keys]
    kept = []
    at = None  # the new lines take the place of the first old line of these hosts (the file's order stays, so
    #            an unchanged key of one VM of several is no change), else they are appended
    for line in (text or "").splitlines():
        words = line.split()
        if words and not line.lstrip().startswith("#"):
            field = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
            if _known_host_matches(field, hosts):
                if at is None:
                    at = len(kept)
                continue
        kept.append(line)
    if at is None:
        at = len(kept)
    kept[at:at] = ours
    return "\n".join(kept) + "\n" if kept else ""


def backend_health(client, region, backend_service, groups):
    """{VM name: HEALTHY | UNHEALTHY | ...} as a regional backend service reports it (regionBackendServices.getHealth)
    for each instance group link of `groups`; shared by gce_load_balancer and gce_load_balancer_health."""
    path = client.project_path("regions", region, "backendServices", backend_service, "getHealth")
    out = {}
    for group in groups:
        answer = client.request("POST", path, body={"group": group})
        for status in answer.get("healthStatus") or []:
            out[basename(status.get("instance"))] = status.get("healthState")
    return out
