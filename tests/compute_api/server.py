"""A local stand-in of the Compute Engine v1 REST API, for tests and `make demo`.

Speaks the REST paths the collection uses (see README.md beside this file) and validates every request
(path and query parameters, request bodies) against Google's own discovery document. State lives in memory,
optionally persisted to a JSON file. Faults (429/503 bursts, dropped connections, failed operations) can be
injected. Instances can be backed by real test hosts: each inserted instance takes the next address of the
host pool as its networkIP and natIP.

CLI:    python tests/compute_api/server.py --port 0 --port-file F [--host-pool IP,...] [--state FILE] ...
Python: api = ComputeApiServer(...); api.start(); api.endpoint -> "http://127.0.0.1:PORT/compute/v1/"; api.stop()
Stdlib only (plus the discovery document of google-api-python-client).
"""
import argparse
import base64
import copy
import hashlib
import ipaddress
import itertools
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    from .discovery import Discovery
except ImportError:  # run as a script: python tests/compute_api/server.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from discovery import Discovery  # noqa: E402  pylint: disable=wrong-import-position

BASE_PATH = "/compute/v1/"
WAIT_HOLD_SECONDS = 120.0  # operations.wait holds the request for at most this long (API seconds)
WAIT_TICK = 0.05  # real seconds between two looks at an operation during a wait
# Messages of the real API for the reasons a status fault may carry (403 is how Compute answers an exceeded
# rate quota: rateLimitExceeded / userRateLimitExceeded; quotaExceeded is a resource quota: retrying cannot help)
FAULT_MESSAGES = {
    "rateLimitExceeded": "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
                         "'compute.googleapis.com' for consumer 'project_number:123456789012'.",
    "userRateLimitExceeded": "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute "
                             "per user' of service 'compute.googleapis.com'.",
    "quotaExceeded": "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.",
    "forbidden": "Required 'compute.instances.list' permission for 'projects/llmops-demo'",
}
FAULT_KINDS = ("status", "drop", "drop_after", "operation_error", "delay", "slow_operation", "concurrent_change")
SELF_LINK_BASE = "https://www.googleapis.com/compute/v1/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
DEFAULT_PROJECT = "llmops-demo"

# ---------------------------------------------------------------------------------------------- catalogue
# Stand-in catalogue (names as Compute uses them; which zone offers what is made up for tests).
ZONES = [
    "asia-northeast3-a", "asia-northeast3-b", "asia-northeast3-c", "asia-northeast1-a", "asia-northeast1-b",
    "asia-east1-a", "asia-east1-b", "asia-southeast1-a", "us-central1-a", "us-central1-b", "us-central1-c",
    "us-central1-f", "us-east1-b", "us-east1-c", "us-east1-d", "us-west1-a", "us-west1-b", "europe-west4-a",
    "europe-west4-b", "europe-west1-b",
]
# zones without nvidia-l4 here (to test the preflight)
NO_L4_ZONES = {"us-east1-d", "europe-west1-b"}
ACCELERATORS = {
    "nvidia-l4": ("NVIDIA L4", 8),
    "nvidia-tesla-t4": ("NVIDIA T4", 4),
    "nvidia-h100-80gb": ("NVIDIA H100 80GB", 8),
}
# name -> (guestCpus, memoryMb, accelerators)
MACHINE_TYPES = {
    "e2-standard-2": (2, 8192, None),
    "e2-standard-4": (4, 16384, None),
    "n1-standard-4": (4, 15360, None),
    "n1-standard-8": (8, 30720, None),
    "n2-standard-4": (4, 16384, None),
    "g2-standard-4": (4, 16384, ("nvidia-l4", 1)),
    "g2-standard-8": (8, 32768, ("nvidia-l4", 1)),
    "g2-standard-12": (12, 49152, ("nvidia-l4", 1)),
    "g2-standard-16": (16, 65536, ("nvidia-l4", 1)),
    "g2-standard-24": (24, 98304, ("nvidia-l4", 2)),
    "g2-standard-32": (32, 131072, ("nvidia-l4", 1)),
    "g2-standard-48": (48, 196608, ("nvidia-l4", 4)),
    "g2-standard-96": (96, 393216, ("nvidia-l4", 8)),
    "a3-highgpu-8g": (208, 1916928, ("nvidia-h100-80gb", 8)),
}
# Resource quotas (made up, like the catalogue; a new real project often has GPUS_ALL_REGIONS = 0): the regional
# GPU quota per accelerator type (metric names as in the discovery document's Quota.metric enum) and the global
# GPUS_ALL_REGIONS. Usage is counted from the instances that hold their GPUs (every status but TERMINATED: a
# stopped VM releases them). api.quotas[(project, region or "global", metric)] = limit overrides a default.
GPU_QUOTA_METRICS = {"nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
                     "nvidia-h100-80gb": "NVIDIA_H100_GPUS"}
DEFAULT_REGION_GPU_QUOTA = 8.0
DEFAULT_GLOBAL_GPU_QUOTA = 16.0
# Where Google's health-check probes of a backend service-based external passthrough Network Load Balancer come
# from (https://cloud.google.com/load-balancing/docs/firewall-rules, "External passthrough Network Load
# Balancer": health check ranges 35.191.0.0/16, 209.85.152.0/22, 209.85.204.0/22): a member is probed only when
# a firewall rule admits all three (130.211.0.0/22 is for the proxy and internal load balancers, not this one).
HC_SOURCE_RANGES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced", "hyperdisk-ml",
              "hyperdisk-throughput")
# G2 (L4) instances: Balanced and SSD Persistent Disk, Hyperdisk ML and Hyperdisk Throughput; only the first two
# can boot (Hyperdisk Balanced, the bootable Hyperdisk, is not offered on G2). See gce_rules.G2_BOOT_DISK_TYPES.
G2_BOOT_DISK_TYPES = ("pd-balanced", "pd-ssd")
# project -> [(name, family, created, deprecated-state or None, diskSizeGb)]
IMAGES = {
    "ubuntu-os-accelerator-images": [
        ("ubuntu-accelerator-2204-amd64-with-nvidia-580-v20251015", "ubuntu-accelerator-2204-amd64-with-nvidia-580",
         "2025-10-15T10:00:00.000-07:00", "DEPRECATED", "10"),
        ("ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260115", "ubuntu-accelerator-2204-amd64-with-nvidia-580",
         "2026-01-15T10:00:00.000-07:00", None, "10"),
        ("ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260210", "ubuntu-accelerator-2204-amd64-with-nvidia-580",
         "2026-02-10T10:00:00.000-07:00", None, "10"),
        ("ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260301", "ubuntu-accelerator-2204-amd64-with-nvidia-580",
         "2026-03-01T10:00:00.000-07:00", "DEPRECATED", "10"),
        ("ubuntu-accelerator-2404-amd64-with-nvidia-580-v20260210", "ubuntu-accelerator-2404-amd64-with-nvidia-580",
         "2026-02-10T11:00:00.000-07:00", None, "10"),
        ("ubuntu-accelerator-2204-amd64-with-nvidia-550-v20250601", "ubuntu-accelerator-2204-amd64-with-nvidia-550",
         "2025-06-01T10:00:00.000-07:00", "OBSOLETE", "10"),
    ],
    "deeplearning-platform-release": [
        ("common-cu128-ubuntu-2204-nvidia-570-v20260120", "common-cu128-ubuntu-2204-nvidia-570",
         "2026-01-20T10:00:00.000-07:00", None, "50"),
        ("pytorch-2-7-cu128-ubuntu-2204-nvidia-570-v20260120", "pytorch-2-7-cu128-ubuntu-2204-nvidia-570",
         "2026-01-20T11:00:00.000-07:00", None, "100"),
    ],
    "debian-cloud": [
        ("debian-12-bookworm-v20260114", "debian-12", "2026-01-14T10:00:00.000-07:00", None, "10"),
    ],
}


def now_rfc3339():
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _id(seed):
    return str(int(hashlib.sha256(seed.encode()).hexdigest()[:15], 16))


def fingerprint(value):
    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]).decode()


def metadata_value(inst, key):
    """The value of one key of an instance's metadata items (None when absent)."""
    for item in (inst.get("metadata") or {}).get("items") or ():
        if item.get("key") == key:
            return item.get("value")
    return None


def basename(link):
    return str(link).rstrip("/").rsplit("/", 1)[-1] if link else link


class ApiError(Exception):
    """An error answer: Google's JSON error body."""

    def __init__(self, code, message, reason=None, errors=None, status=None, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or {400: "invalid", 401: "required", 403: "forbidden", 404: "notFound",
                                 409: "alreadyExists", 412: "conditionNotMet", 429: "rateLimitExceeded",
                                 501: "notImplemented", 503: "backendError"}.get(code, "backendError")
        self.errors = errors or [{"message": message, "domain": "global", "reason": self.reason}]
        self.status = status or {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                                 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION",
                                 429: "RESOURCE_EXHAUSTED", 501: "UNIMPLEMENTED",
                                 503: "UNAVAILABLE"}.get(code, "INTERNAL")
        self.headers = headers or {}

    def body(self):
        return {"error": {"code": self.code, "message": self.message, "errors": self.errors,
                          "status": self.status}}


def bad(message, reason="invalid"):
    return ApiError(400, message, reason)


def not_found(kind_path):
    return ApiError(404, "The resource '%s' was not found" % kind_path)


class _LongPoll(object):
    """A handler's answer meaning: hold the request (without the lock) until `op` is DONE or the hold ends."""

    def __init__(self, op):
        self.op = op


class _DropConnection(Exception):
    pass


# ---------------------------------------------------------------------------------------------- filters
_TERM_RE = re.compile(r'\s*(?:(\()|(\))|(AND|OR)\b|([A-Za-z_][A-Za-z0-9_.]*)\s*(!=|=|:|>|<|\beq\b|\bne\b)\s*'
                      r'("(?:[^"\\]|\\.)*"|[^\s()]+))')


def parse_filter(text):
    """A predicate for the Compute list filter syntax (subset): FIELD (=|!=|:|>|<) VALUE, FIELD eq|ne REGEX,
    terms joined by AND (explicit or implicit) and OR, parentheses. Values may be quoted; = and != accept
    the * wildcard."""
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TERM_RE.match(text, pos)
        if not m or m.end() == pos:
            raise bad("Invalid value for field 'filter': '%s'. Invalid list filter expression." % text)
        pos = m.end()
        if m.group(1):
            tokens.append(("(",))
        elif m.group(2):
            tokens.append((")",))
        elif m.group(3):
            tokens.append((m.group(3),))
        else:
            value = m.group(6)
            if value.startswith('"'):
                value = value[1:-1].replace('\\"', '"')
            tokens.append(("cmp", m.group(4), m.group(5).strip(), value))
    tokens.append(("END",))
    ops = {tok[2] for tok in tokens if tok[0] == "cmp"}
    if ops & {"eq", "ne"} and ops & {"=", "!=", ":", ">", "<"}:
        # the API: regular-expression (eq/ne) expressions cannot be combined with the other operators
        raise bad("Invalid value for field 'filter': '%s'. Invalid list filter expression: eq/ne expressions "
                  "cannot be mixed with =, !=, :, > or < expressions." % text)
    idx = [0]

    def peek():
        return tokens[idx[0]]

    def take():
        tok = tokens[idx[0]]
        idx[0] += 1
        return tok

    def parse_or():
        left = parse_and()
        while peek()[0] == "OR":
            take()
            right = parse_and()
            left = _either(left, right)
        return left

    def parse_and():
        left = parse_atom()
        while peek()[0] in ("AND", "(", "cmp"):
            if peek()[0] == "AND":
                take()
            right = parse_atom()
            left = _both(left, right)
        return left

    def parse_atom():
        tok = take()
        if tok[0] == "(":
            inner = parse_or()
            if take()[0] != ")":
                raise bad("Invalid value for field 'filter': '%s'. Unbalanced parentheses." % text)
            return inner
        if tok[0] == "cmp":
            return _comparison(tok[1], tok[2], tok[3])
        raise bad("Invalid value for field 'filter': '%s'. Invalid list filter expression." % text)

    pred = parse_or()
    if peek()[0] != "END":
        raise bad("Invalid value for field 'filter': '%s'. Invalid list filter expression." % text)
    return pred


def _either(a, b):
    return lambda r: a(r) or b(r)


def _both(a, b):
    return lambda r: a(r) and b(r)


def _values_at(resource, path):
    values = [resource]
    for part in path.split("."):
        nxt = []
        for v in values:
            if isinstance(v, list):
                v = [x.get(part) for x in v if isinstance(x, dict)]
                nxt.extend(x for x in v if x is not None)
            elif isinstance(v, dict) and part in v:
                nxt.append(v[part])
        values = nxt
    flat = []
    for v in values:
        if isinstance(v, list):
            flat.extend(v)
        else:
            flat.append(v)
    return [("true" if v is True else "false" if v is False else str(v)) for v in flat
            if not isinstance(v, dict)]


def _comparison(field, op, value):
    if op in ("eq", "ne"):
        rx = re.compile(value)

        def match(v):
            return bool(rx.fullmatch(v))
    else:
        rx = re.compile("^" + ".*".join(re.escape(p) for p in value.split("*")) + "$")

        def match(v):
            return bool(rx.match(v))

    def pred(resource):
        values = _values_at(resource, field)
        if op in ("=", "eq"):
            return any(match(v) for v in values)
        if op in ("!=", "ne"):
            return not any(match(v) for v in values)
        if op == ":":
            return value == "*" and bool(values) or any(match(v) for v in values)
        try:
            num = float(value)
            nums = [float(v) for v in values]
        except ValueError:
            num, nums = value, values
        if op == ">":
            return any(v > num for v in nums)
        return any(v < num for v in nums)
    return pred


# ---------------------------------------------------------------------------------------------- state
class State(object):
    """Everything the API knows, per project. All access under ComputeApi.lock."""

    def __init__(self):
        self.projects = {}
        self.operations = {}  # op name -> operation dict (+ private keys starting with _)
        self.request_ids = {}  # requestId -> op name
        self.counter = itertools.count(1)

    def project(self, name):
        proj = self.projects.get(name)
        if proj is None:
            proj = {"instances": {}, "firewalls": {}, "disks": {},
                    "networks": {"default": None}}
            self.projects[name] = proj
        return proj

    def to_json(self):
        return {"projects": self.projects,
                "operations": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                               for k, v in self.operations.items()}}


class ComputeApi(object):
    """The API's behaviour, independent of HTTP."""

    def __init__(self, discovery=None, projects=None, host_pool=None, op_polls=2, op_seconds=5.0,
                 state_file=None, self_link_base=SELF_LINK_BASE, token=None, log=None, clock_scale=1.0,
                 wait_hold=WAIT_HOLD_SECONDS, wait_early_every=3):
        self.discovery = discovery or Discovery()
        # The API's clock: API seconds per real second. Every duration of this server (op_seconds, the wait
        # hold, slow operations) is in API seconds, so clock_scale=20 plays a 10-minute operation in 30 real
        # seconds, its 2-minute waits in 6; a client's own timeouts must be scaled by the same factor.
        self._clock_anchor = (time.monotonic(), time.monotonic())
        self._clock_scale = float(clock_scale)
        self.wait_hold = float(wait_hold)
        # every Nth operations.wait returns at once with the current state (the real API does so when it is
        # busy); 0 = never
        self.wait_early_every = int(wait_early_every)
        self._waits = 0
        self.allowed_projects = set(projects) if projects else None
        self.host_pool = list(host_pool or [])
        self.op_polls = max(0, int(op_polls))
        self.op_seconds = float(op_seconds)
        self.state_file = state_file
        self.base = self_link_base
        self.token = token
        self.log = log
        self.lock = threading.RLock()
        self.state = State()
        self.faults = []
        self.requests = []
        self.issued_tokens = {}  # access tokens handed out by POST /token -> {iss, scope}
        self._used_hosts = set()
        # address -> {key type: base64 key}: the SSH host keys the "guest agent" of the VM at that address
        # publishes as guest attributes (POST /_admin/host-keys; tests read them from the test host's
        # /etc/ssh/ssh_host_*_key.pub)
        self.host_keys = {}
        # address -> root directory of the test host at that address: its real /etc/ssh/ssh_host_*_key.pub are
        # read at each lookup, as the guest agent reads them at boot (--host-keys ADDR=ROOT)
        self.host_key_roots = {}
        # getGuestAttributes answers "not found" this many times after each boot before the keys appear
        # (the real guest agent writes them a little after the VM is RUNNING)
        self.host_keys_delay = 1
        # (project, region or "global", metric) -> limit (see GPU_QUOTA_METRICS)
        self.quotas = {}
        self._fake_ext = ipaddress.ip_network("203.0.113.0/24").hosts()
        self._fake_int = ipaddress.ip_network("10.128.0.0/20").hosts()
        if state_file and os.path.exists(state_file):
            self._load(state_file)

    # ------------------------------------------------------------------ clock
    @property
    def clock_scale(self):
        return self._clock_scale

    @clock_scale.setter
    def clock_scale(self, value):
        self._clock_anchor = (time.monotonic(), self.now())  # re-anchored: the API's time never jumps
        self._clock_scale = float(value)

    def now(self):
        """The API's monotonic clock, in API seconds (see clock_scale)."""
        real0, api0 = self._clock_anchor
        return api0 + (time.monotonic() - real0) * self._clock_scale

    # ------------------------------------------------------------------ persistence
    def _load(self, path):
        with open(path) as f:
            data = json.load(f)
        self.state.projects = data.get("projects") or {}
        for name, op in (data.get("operations") or {}).items():
            op = dict(op)
            op["status"] = "DONE"
            self.state.operations[name] = op
        used = set()
        for proj in self.state.projects.values():
            for zone in proj["instances"].values():
                for inst in zone.values():
                    for nic in inst.get("networkInterfaces") or ():
                        used.add(nic.get("networkIP"))
                        for ac in nic.get("accessConfigs") or ():
                            used.add(ac.get("natIP"))
        self._used_hosts = used

    def save(self):
        if not self.state_file:
            return
        tmp = "%s.tmp.%d" % (self.state_file, os.getpid())
        # 0600: instance metadata may hold what only its owner should read
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(self.state.to_json(), f, sort_keys=True)
        os.replace(tmp, self.state_file)

    def reset(self):
        with self.lock:
            self.state = State()
            self.faults = []
            self.requests = []
            self.save()

    # ------------------------------------------------------------------ links
    def link(self, *parts):
        return self.base + "/".join(parts)

    def zone_link(self, project, zone):
        return self.link("projects", project, "zones", zone)

    def check_project(self, project):
        if self.allowed_projects is not None and project not in self.allowed_projects:
            raise ApiError(404, "The resource 'projects/%s' was not found" % project)

    def check_zone(self, project, zone):
        if zone not in ZONES:
            raise bad("Invalid value for field 'zone': '%s'. Unknown zone." % zone)

    # ------------------------------------------------------------------ faults
    def add_faults(self, rules):
        if isinstance(rules, dict):
            rules = [rules]
        with self.lock:
            for rule in rules:
                rule = dict(rule)
                kind = rule.get("kind", "status")
                if kind not in FAULT_KINDS:
                    raise bad("fault kind must be one of %s, got %r" % (", ".join(FAULT_KINDS), kind))
                rule["kind"] = kind
                rule.setdefault("count", 1)
                self.faults.append(rule)

    def _take_fault(self, kinds, method=None, path=None, op_type=None):
        with self.lock:
            for rule in self.faults:
                if rule["kind"] not in kinds or rule["count"] == 0:
                    continue
                if rule.get("method") and method and rule["method"].upper() != method:
                    continue
                if rule.get("path") and path is not None and not re.search(rule["path"], path):
                    continue
                if rule.get("operation_type") and op_type and rule["operation_type"] != op_type:
                    continue
                if rule["count"] > 0:
                    rule["count"] -= 1
                rule["hits"] = rule.get("hits", 0) + 1
                return dict(rule)
        return None

    # ------------------------------------------------------------------ addresses
    def _allocate(self, external):
        used = self._used_hosts
        if self.host_pool:
            for addr in self.host_pool:
                if addr not in used:
                    used.add(addr)
                    return addr, (addr if external else None)
            return None, None  # the insert operation fails, like a zone without capacity
        internal = str(next(self._fake_int))
        nat = str(next(self._fake_ext)) if external else None
        return internal, nat

    def _release(self, inst):
        used = self._used_hosts
        for nic in inst.get("networkInterfaces") or ():
            used.discard(nic.get("networkIP"))
            for ac in nic.get("accessConfigs") or ():
                used.discard(ac.get("natIP"))

    # ------------------------------------------------------------------ operations
    def _new_operation(self, project, op_type, target_link, zone=None, on_done=None, on_error=None,
                       request_id=None, region=None):
        n = next(self.state.counter)
        name = "operation-%d-%s" % (int(time.time() * 1000), uuid.uuid4().hex[:12])
        scope = ("zones/%s" % zone) if zone else ("regions/%s" % region) if region else "global"
        op = {
            "kind": "compute#operation",
            "id": _id(name),
            "name": name,
            "operationType": op_type,
            "targetLink": target_link,
            "targetId": _id(target_link),
            "status": "PENDING",
            "user": "local-api@llmops.test",
            "progress": 0,
            "insertTime": now_rfc3339(),
            "selfLink": self.link("projects", project, scope, "operations", name),
        }
        if zone:
            op["zone"] = self.zone_link(project, zone)
        if region:
            op["region"] = self.link("projects", project, "regions", region)
        op["_n"] = n
        op["_polls"] = 0
        op["_created"] = self.now()
        op["_on_done"] = on_done
        slow = self._take_fault(("slow_operation",), op_type=op_type, path=target_link)
        if slow:  # DONE only after this many API seconds, however often it is polled
            op["_min_seconds"] = float(slow.get("seconds", 600))
        fault = self._take_fault(("operation_error",), op_type=op_type, path=target_link)
        if fault:
            op["_error"] = {"errors": [{
                "code": fault.get("code", "ZONE_RESOURCE_POOL_EXHAUSTED"),
                "message": fault.get("message", "The zone '%s' does not have enough resources available to fulfill "
                                                "the request. Try a different zone, or try again later."
                                     % (op.get("zone") or "global").replace(self.base, "")),
            }]}
            op["_on_done"] = on_error
        self.state.operations[name] = op
        if request_id:
            self.state.request_ids[request_id] = name
        if self.op_polls == 0:
            self._finish(op)
        return op

    def _finish(self, op):
        if op["status"] == "DONE":
            return
        op["status"] = "DONE"
        op["progress"] = 100
        op.setdefault("startTime", now_rfc3339())
        op["endTime"] = now_rfc3339()
        if op.get("_error"):
            op["error"] = op["_error"]
            op["httpErrorStatusCode"] = 503
            op["httpErrorMessage"] = "SERVICE UNAVAILABLE"
        callback = op.pop("_on_done", None)
        if callback:
            callback()
        self.save()

    def _advance(self, op, poll=True):
        if op["status"] == "DONE":
            return
        if poll:
            op["_polls"] += 1
        age = self.now() - op["_created"]
        if "_min_seconds" in op:
            done = age >= op["_min_seconds"]
        else:
            done = op["_polls"] >= self.op_polls or age >= self.op_seconds
        if done:
            self._finish(op)
        elif op["status"] == "PENDING":
            op["status"] = "RUNNING"
            op["startTime"] = now_rfc3339()
            op["progress"] = 50

    def settle(self):
        """Finish operations that are older than op_seconds (called on every request)."""
        now = self.now()
        for op in list(self.state.operations.values()):
            if op["status"] != "DONE" and now - op["_created"] >= op.get("_min_seconds", self.op_seconds):
                self._finish(op)

    @staticmethod
    def public(resource):
        return {k: v for k, v in resource.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ dispatch
    def handle(self, http_method, path, query, body):
        """(status, json) for one API request; raises ApiError."""
        method, params = self.discovery.route(http_method, path)
        if method is None:
            allowed = self.discovery.known_path(path)
            if allowed:
                raise ApiError(405, "Method %s is not allowed on %s (allowed: %s)"
                               % (http_method, path, ", ".join(allowed)),
                               reason="httpMethodNotAllowed", status="INVALID_ARGUMENT")
            raise ApiError(404, "The requested URL /compute/v1/%s was not found on this server." % path,
                           reason="notFound")
        violations = self.discovery.check_params(method, params, query)
        violations += self.discovery.check_body(method, body)
        if violations:
            raise ApiError(400, violations[0].message, errors=[v.as_error() for v in violations])
        handler = getattr(self, "m_" + method.id.split(".", 1)[1].replace(".", "_"), None)
        if handler is None:
            raise ApiError(501, "local Compute API: %s is not implemented (the discovery document knows it)"
                           % method.id)
        q = {k: v[-1] for k, v in query.items()}
        with self.lock:
            self.settle()
            if "project" in params:
                self.check_project(params["project"])
            if "zone" in params and method.id != "compute.zones.get":
                self.check_zone(params["project"], params["zone"])
            if "region" in params and method.id != "compute.regions.get" \
                    and params["region"] not in set(z.rsplit("-", 1)[0] for z in ZONES):
                raise bad("Invalid value for field 'region': '%s'. Unknown region." % params["region"])
            request_id = q.get("requestId")
            if request_id and request_id in self.state.request_ids:
                op = self.state.operations.get(self.state.request_ids[request_id])
                if op is not None:
                    return 200, self.public(op)
            change = self._take_fault(("concurrent_change",), http_method, path)
            if change and "instance" in params:
                self._concurrent_change(params, change)
            result = handler(params, q, body or {})
            if not isinstance(result, _LongPoll):
                if isinstance(result, dict) and result.get("kind") == "compute#operation" and request_id:
                    self.state.request_ids[request_id] = result["name"]
                if isinstance(result, dict) and "_n" in result:
                    result = self.public(result)
                return 200, result
        return 200, self.public(self._hold(result.op))  # outside the lock

    # ------------------------------------------------------------------ lists
    def _page(self, items, q, kind, self_link, key="items"):
        pred = parse_filter(q["filter"]) if q.get("filter") else None
        if pred:
            items = [i for i in items if pred(i)]
        max_results = int(q.get("maxResults") or 500)
        max_results = min(max_results, 500) or 500
        offset = self._decode_token(q.get("pageToken"))
        page = items[offset:offset + max_results]
        out = {"kind": kind, "id": self_link.replace(self.base, ""), "selfLink": self_link}
        out[key] = page
        if offset + max_results < len(items):
            out["nextPageToken"] = self._encode_token(offset + max_results)
        return out

    @staticmethod
    def _encode_token(offset):
        return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")

    @staticmethod
    def _decode_token(token):
        if not token:
            return 0
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return int(data["o"])
        except (ValueError, KeyError, TypeError):
            raise bad("Invalid value for field 'pageToken': '%s'. Invalid page token." % token)

    # ------------------------------------------------------------------ zones, types, images
    def _zone_resource(self, project, zone):
        region = zone.rsplit("-", 1)[0]
        return {"kind": "compute#zone", "id": _id(zone), "name": zone, "status": "UP",
                "description": zone, "region": self.link("projects", project, "regions", region),
                "selfLink": self.zone_link(project, zone), "availableCpuPlatforms": ["Intel Cascade Lake"]}

    def m_zones_get(self, p, q, body):
        if p["zone"] not in ZONES:
            raise not_found("projects/%s/zones/%s" % (p["project"], p["zone"]))
        return self._zone_resource(p["project"], p["zone"])

    def m_zones_list(self, p, q, body):
        items = [self._zone_resource(p["project"], z) for z in ZONES]
        return self._page(items, q, "compute#zoneList", self.link("projects", p["project"], "zones"))

    def _accelerators_in(self, zone):
        names = [n for n in ACCELERATORS if not (n == "nvidia-l4" and zone in NO_L4_ZONES)]
        if not zone.startswith(("us-central1", "europe-west4", "asia-northeast1")):
            names = [n for n in names if n != "nvidia-h100-80gb"]
        return names

    def _accelerator_resource(self, project, zone, name):
        desc, max_per = ACCELERATORS[name]
        return {"kind": "compute#acceleratorType", "id": _id(zone + name), "name": name, "description": desc,
                "zone": self.zone_link(project, zone), "maximumCardsPerInstance": max_per,
                "selfLink": self.link("projects", project, "zones", zone, "acceleratorTypes", name),
                "creationTimestamp": "1969-12-31T16:00:00.000-08:00"}

    def m_acceleratorTypes_get(self, p, q, body):
        if p["acceleratorType"] not in self._accelerators_in(p["zone"]):
            raise not_found("projects/%s/zones/%s/acceleratorTypes/%s" % (p["project"], p["zone"],
                                                                          p["acceleratorType"]))
        return self._accelerator_resource(p["project"], p["zone"], p["acceleratorType"])

    def m_acceleratorTypes_list(self, p, q, body):
        items = [self._accelerator_resource(p["project"], p["zone"], n) for n in self._accelerators_in(p["zone"])]
        return self._page(items, q, "compute#acceleratorTypeList",
                          self.link("projects", p["project"], "zones", p["zone"], "acceleratorTypes"))

    def _machine_types_in(self, zone):
        names = list(MACHINE_TYPES)
        if zone in NO_L4_ZONES:
            names = [n for n in names if not n.startswith("g2-")]
        if "nvidia-h100-80gb" not in self._accelerators_in(zone):
            names = [n for n in names if not n.startswith("a3-")]
        return names

    def _machine_type_resource(self, project, zone, name):
        cpus, mem, acc = MACHINE_TYPES[name]
        res = {"kind": "compute#machineType", "id": _id(zone + name), "name": name,
               "description": "%d vCPUs, %d GB RAM" % (cpus, mem // 1024), "guestCpus": cpus, "memoryMb": mem,
               "maximumPersistentDisks": 128, "maximumPersistentDisksSizeGb": "263168", "isSharedCpu": False,
               "zone": zone, "architecture": "X86_64",
               "selfLink": self.link("projects", project, "zones", zone, "machineTypes", name),
               "creationTimestamp": "1969-12-31T16:00:00.000-08:00"}
        if acc:
            res["accelerators"] = [{"guestAcceleratorType": acc[0], "guestAcceleratorCount": acc[1]}]
        return res

    def m_machineTypes_get(self, p, q, body):
        if p["machineType"] not in self._machine_types_in(p["zone"]):
            raise not_found("projects/%s/zones/%s/machineTypes/%s" % (p["project"], p["zone"], p["machineType"]))
        return self._machine_type_resource(p["project"], p["zone"], p["machineType"])

    def m_machineTypes_list(self, p, q, body):
        items = [self._machine_type_resource(p["project"], p["zone"], n) for n in self._machine_types_in(p["zone"])]
        return self._page(items, q, "compute#machineTypeList",
                          self.link("projects", p["project"], "zones", p["zone"], "machineTypes"))

    def _image_resource(self, project, entry):
        name, family, created, deprecated, size = entry
        res = {"kind": "compute#image", "id": _id(project + name), "name": name, "family": family,
               "creationTimestamp": created, "status": "READY", "sourceType": "RAW", "diskSizeGb": size,
               "archiveSizeBytes": "3421541376", "architecture": "X86_64",
               "description": "Canonical, Ubuntu, %s" % name if project.startswith("ubuntu") else name,
               "selfLink": self.link("projects", project, "global", "images", name),
               "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}, {"type": "VIRTIO_SCSI_MULTIQUEUE"},
                                   {"type": "GVNIC"}],
               "licenses": [self.link("projects", project, "global", "licenses", family)]}
        if deprecated:
            res["deprecated"] = {"state": deprecated}
        return res

    def _images(self, project):
        if project not in IMAGES and self.allowed_projects is not None:
            self.check_project(project)
        return [self._image_resource(project, e) for e in IMAGES.get(project, ())]

    def m_images_get(self, p, q, body):
        for img in self._images(p["project"]):
            if img["name"] == p["image"]:
                return img
        raise not_found("projects/%s/global/images/%s" % (p["project"], p["image"]))

    def m_images_getFromFamily(self, p, q, body):
        live = [i for i in self._images(p["project"]) if i["family"] == p["family"]
                and (i.get("deprecated") or {}).get("state") not in ("DEPRECATED", "OBSOLETE", "DELETED")]
        if not live:
            raise not_found("projects/%s/global/images/family/%s" % (p["project"], p["family"]))
        return max(live, key=lambda i: i["creationTimestamp"])

    def m_images_list(self, p, q, body):
        return self._page(self._images(p["project"]), q, "compute#imageList",
                          self.link("projects", p["project"], "global", "images"))

    def m_diskTypes_get(self, p, q, body):
        if p["diskType"] not in DISK_TYPES:
            raise not_found("projects/%s/zones/%s/diskTypes/%s" % (p["project"], p["zone"], p["diskType"]))
        return {"kind": "compute#diskType", "name": p["diskType"], "zone": self.zone_link(p["project"], p["zone"]),
                "selfLink": self.link("projects", p["project"], "zones", p["zone"], "diskTypes", p["diskType"]),
                "validDiskSize": "10GB-65536GB", "defaultDiskSizeGb": "500"}

    # ------------------------------------------------------------------ networks
    def _network(self, project, name):
        proj = self.state.project(project)
        if name not in proj["networks"]:
            return None
        custom = proj["networks"][name] is not None
        return {"kind": "compute#network", "id": _id(project + name), "name": name,
                "autoCreateSubnetworks": not custom, "routingConfig": {"routingMode": "REGIONAL"},
                "selfLink": self.link("projects", project, "global", "networks", name),
                "creationTimestamp": "2026-01-01T00:00:00.000-08:00"}

    def add_network(self, project, name, subnets=None):
        """A VPC network: subnets None = auto mode (a subnetwork NAME in every region), else custom mode with
        {region: [subnetwork names]}."""
        with self.lock:
            self.state.project(project)["networks"][name] = None if subnets is None else {
                "subnets": {r: list(n) for r, n in subnets.items()}}
            self.save()

    def _subnetworks(self, project, network, region):
        conf = self.state.project(project)["networks"].get(network, "missing")
        if conf == "missing":
            return []
        if conf is None:
            return [network]
        return list(conf["subnets"].get(region, []))

    def _resolve_subnetwork(self, project, zone, network_link, value, where):
        """The subnetwork link of a NIC: URL forms only (regions/R/subnetworks/S, optionally projects/P/ or a
        full URL); in the zone's region; of the NIC's network. Custom-mode networks need one."""
        region = zone.rsplit("-", 1)[0]
        net_project, net_name = re.search(r"projects/([^/]+)/global/networks/([^/]+)$", network_link).groups()
        if not value:
            if self._network(net_project, net_name)["autoCreateSubnetworks"]:
                return self.link("projects", net_project, "regions", region, "subnetworks", net_name), net_name
            raise bad("Invalid value for field 'resource.networkInterfaces[0]': ''. Subnetwork should be specified "
                      "for custom subnetmode network")
        m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?regions/([^/]+)/subnetworks/([^/]+)$", value)
        if not m:
            raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, value))
        sub_project, sub_region, sub_name = m.group(1) or project, m.group(2), m.group(3)
        if sub_region != region:
            raise bad("Invalid value for field '%s': '%s'. Subnetwork must be in region %s of zone %s."
                      % (where, value, region, zone))
        found = [n for n in self._network_names(sub_project) if sub_name in self._subnetworks(sub_project, n, region)]
        if not found:
            raise not_found("projects/%s/regions/%s/subnetworks/%s" % (sub_project, region, sub_name))
        if network_link and found[0] != net_name:
            raise bad("Invalid value for field '%s': '%s'. Subnetwork does not belong to network %s."
                      % (where, value, net_name))
        return self.link("projects", sub_project, "regions", region, "subnetworks", sub_name), found[0]

    def _network_names(self, project):
        return sorted(self.state.project(project)["networks"])

    def m_networks_get(self, p, q, body):
        net = self._network(p["project"], p["network"])
        if net is None:
            raise not_found("projects/%s/global/networks/%s" % (p["project"], p["network"]))
        return net

    def m_networks_list(self, p, q, body):
        proj = self.state.project(p["project"])
        items = [self._network(p["project"], n) for n in sorted(proj["networks"])]
        return self._page(items, q, "compute#networkList", self.link("projects", p["project"], "global", "networks"))

    def _resolve_network(self, project, value, where):
        if not value:
            value = "global/networks/default"
        m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?global/networks/([^/]+)$", value)
        if not m:
            raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, value))
        net_project = m.group(1) or project
        if self._network(net_project, m.group(2)) is None:
            raise not_found("projects/%s/global/networks/%s" % (net_project, m.group(2)))
        return self.link("projects", net_project, "global", "networks", m.group(2))

    # ------------------------------------------------------------------ operations API
    def _op(self, p, scope):
        op = self.state.operations.get(p["operation"])
        suffix = "/projects/%s/%s/operations/%s" % (p["project"], scope, p["operation"])
        if op is None or not op["selfLink"].endswith(suffix):
            raise not_found("projects/%s/%s/operations/%s" % (p["project"], scope, p["operation"]))
        return op

    def m_zoneOperations_get(self, p, q, body):
        op = self._op(p, "zones/%s" % p["zone"])
        self._advance(op)
        return op

    def m_zoneOperations_wait(self, p, q, body):
        return _LongPoll(self._op(p, "zones/%s" % p["zone"]))

    def m_globalOperations_get(self, p, q, body):
        op = self._op(p, "global")
        self._advance(op)
        return op

    def m_globalOperations_wait(self, p, q, body):
        return _LongPoll(self._op(p, "global"))

    def m_regionOperations_get(self, p, q, body):
        op = self._op(p, "regions/%s" % p["region"])
        self._advance(op)
        return op

    def m_regionOperations_wait(self, p, q, body):
        return _LongPoll(self._op(p, "regions/%s" % p["region"]))

    def _hold(self, op):
        """operations.wait as Google documents it: "waits for no more than the 2 minutes and then returns the
        current state of the operation, which might be DONE or still in progress", and may return at once
        (here every wait_early_every-th wait). The lock is not held while waiting."""
        with self.lock:
            self._waits += 1
            early = self.wait_early_every > 0 and self._waits % self.wait_early_every == 0
            self._advance(op)
            until = self.now() + self.wait_hold
        while not early:
            with self.lock:
                if op["status"] == "DONE" or self.now() >= until:
                    break
            time.sleep(WAIT_TICK)
            with self.lock:
                self.settle()
                self._advance(op)
        with self.lock:
            return dict(op)

    def m_zoneOperations_list(self, p, q, body):
        items = [self.public(o) for o in self.state.operations.values()
                 if o.get("zone", "").endswith("/projects/%s/zones/%s" % (p["project"], p["zone"]))]
        return self._page(items, q, "compute#operationList",
                          self.link("projects", p["project"], "zones", p["zone"], "operations"))

    def m_globalOperations_list(self, p, q, body):
        items = [self.public(o) for o in self.state.operations.values()
                 if "/projects/%s/global/" % p["project"] in o["selfLink"]]
        return self._page(items, q, "compute#operationList",
                          self.link("projects", p["project"], "global", "operations"))

    # ------------------------------------------------------------------ firewalls
    def _firewall_from_body(self, project, body, old=None):
        fw = copy.deepcopy(old) if old else {}
        for key, value in body.items():
            if key in ("kind", "id", "creationTimestamp", "selfLink"):
                continue  # output only
            if value is None:
                fw.pop(key, None)
            else:
                fw[key] = copy.deepcopy(value)
        name = fw.get("name")
        if old and name != old["name"]:
            raise bad("Invalid value for field 'resource.name': '%s'. The name of a firewall rule cannot be "
                      "changed." % name)
        network = self._resolve_network(project, fw.get("network"), "resource.network")
        if old and network != old["network"]:
            raise bad("Invalid value for field 'resource.network': '%s'. The network of a firewall rule cannot "
                      "be changed." % fw.get("network"))
        fw["network"] = network
        fw.setdefault("direction", "INGRESS")
        if old and fw["direction"] != old["direction"]:
            raise bad("Invalid value for field 'resource.direction': '%s'. The direction of a firewall rule "
                      "cannot be changed." % fw["direction"])
        fw.setdefault("priority", 1000)
        if not 0 <= int(fw["priority"]) <= 65535:
            raise bad("Invalid value for field 'resource.priority': '%s'. Must be between 0 and 65535."
                      % fw["priority"])
        if bool(fw.get("allowed")) == bool(fw.get("denied")):
            raise bad("Invalid value for field 'resource': exactly one of 'allowed' or 'denied' must be set.")
        for i, rule in enumerate(fw.get("allowed") or fw.get("denied")):
            which = "allowed" if fw.get("allowed") else "denied"
            proto = rule.get("IPProtocol")
            if not proto:
                raise bad("Required field 'resource.%s[%d].IPProtocol' not specified" % (which, i), "required")
            if proto not in ("tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp", "all") and not proto.isdigit():
                raise bad("Invalid value for field 'resource.%s[%d].IPProtocol': '%s'." % (which, i, proto))
            for port in rule.get("ports") or ():
                m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", port)
                if proto not in ("tcp", "udp", "sctp") or not m or not (
                        1 <= int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 65535):
                    raise bad("Invalid value for field 'resource.%s[%d].ports[0]': '%s'. Invalid port "
                              "specification." % (which, i, port))
        for key in ("sourceRanges", "destinationRanges"):
            for value in fw.get(key) or ():
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise bad("Invalid value for field 'resource.%s': '%s'. Must be a CIDR address range."
                              % (key, value))
        if fw["direction"] == "INGRESS" and not (fw.get("sourceRanges") or fw.get("sourceTags")
                                                 or fw.get("sourceServiceAccounts")):
            fw["sourceRanges"] = ["0.0.0.0/0"]  # the API's documented default for an ingress rule
        fw.setdefault("disabled", False)
        fw.setdefault("logConfig", {"enable": False})
        fw.setdefault("description", "")
        fw["kind"] = "compute#firewall"
        fw["selfLink"] = self.link("projects", project, "global", "firewalls", name)
        fw.setdefault("id", _id(project + name + str(time.time())))
        fw.setdefault("creationTimestamp", now_rfc3339())
        return fw

    def m_firewalls_get(self, p, q, body):
        fw = self.state.project(p["project"])["firewalls"].get(p["firewall"])
        if fw is None:
            raise not_found("projects/%s/global/firewalls/%s" % (p["project"], p["firewall"]))
        return fw

    def m_firewalls_list(self, p, q, body):
        items = sorted(self.state.project(p["project"])["firewalls"].values(), key=lambda f: f["name"])
        return self._page(items, q, "compute#firewallList",
                          self.link("projects", p["project"], "global", "firewalls"))

    def m_firewalls_insert(self, p, q, body):
        proj = self.state.project(p["project"])
        if body.get("name") in proj["firewalls"]:
            raise ApiError(409, "The resource 'projects/%s/global/firewalls/%s' already exists"
                           % (p["project"], body["name"]))
        fw = self._firewall_from_body(p["project"], body)
        proj["firewalls"][fw["name"]] = fw
        self.save()
        return self._new_operation(p["project"], "insert", fw["selfLink"], request_id=q.get("requestId"),
                                   on_error=lambda: proj["firewalls"].pop(fw["name"], None))

    def _firewall_change(self, p, q, body, merge, op_type):
        proj = self.state.project(p["project"])
        old = proj["firewalls"].get(p["firewall"])
        if old is None:
            raise not_found("projects/%s/global/firewalls/%s" % (p["project"], p["firewall"]))
        body = dict(body)
        body.setdefault("name", p["firewall"])
        if merge:
            fw = self._firewall_from_body(p["project"], body, old)
        else:
            keep = {k: old[k] for k in ("id", "creationTimestamp", "name")}
            fw = self._firewall_from_body(p["project"], body, None)
            fw.update(keep)
            if fw["network"] != old["network"] or fw["direction"] != old["direction"]:
                raise bad("Invalid value for field 'resource': the network and direction of a firewall rule "
                          "cannot be changed.")
        proj["firewalls"][p["firewall"]] = fw
        self.save()
        return self._new_operation(p["project"], op_type, fw["selfLink"], request_id=q.get("requestId"),
                                   on_error=lambda: proj["firewalls"].__setitem__(p["firewall"], old))

    def m_firewalls_patch(self, p, q, body):
        return self._firewall_change(p, q, body, True, "patch")

    def m_firewalls_update(self, p, q, body):
        return self._firewall_change(p, q, body, False, "update")

    def m_firewalls_delete(self, p, q, body):
        proj = self.state.project(p["project"])
        fw = proj["firewalls"].get(p["firewall"])
        if fw is None:
            raise not_found("projects/%s/global/firewalls/%s" % (p["project"], p["firewall"]))
        return self._new_operation(p["project"], "delete", fw["selfLink"], request_id=q.get("requestId"),
                                   on_done=lambda: proj["firewalls"].pop(p["firewall"], None))

    # ------------------------------------------------------------------ instances
    def _instance(self, p):
        inst = self.state.project(p["project"])["instances"].get(p["zone"], {}).get(p["instance"])
        if inst is None:
            raise not_found("projects/%s/zones/%s/instances/%s" % (p["project"], p["zone"], p["instance"]))
        return inst

    def m_instances_get(self, p, q, body):
        return self._instance(p)

    def m_instances_list(self, p, q, body):
        zone = self.state.project(p["project"])["instances"].get(p["zone"], {})
        items = [zone[k] for k in sorted(zone)]
        return self._page(items, q, "compute#instanceList",
                          self.link("projects", p["project"], "zones", p["zone"], "instances"))

    def m_instances_aggregatedList(self, p, q, body):
        proj = self.state.project(p["project"])
        flat = []
        for zone in sorted(proj["instances"]):
            insts = proj["instances"][zone]
            flat.extend(insts[k] for k in sorted(insts))
        page = self._page(flat, q, "compute#instanceAggregatedList",
                          self.link("projects", p["project"], "aggregated", "instances"))
        items = {}
        for inst in page.pop("items"):
            items.setdefault("zones/" + basename(inst["zone"]), {"instances": []})["instances"].append(inst)
        for zone in ZONES:  # every page names every scope; those without results on it carry the warning
            items.setdefault("zones/" + zone, {"warning": {
                "code": "NO_RESULTS_ON_PAGE",
                "message": "There are no results for scope 'zones/%s' on this page." % zone,
                "data": [{"key": "scope", "value": "zones/%s" % zone}]}})
        page["items"] = items
        return page

    def project_number(self, project):
        return str(100000000000 + int(hashlib.sha256(project.encode()).hexdigest()[:8], 16))

    def _service_accounts(self, project, given):
        """serviceAccounts of an insert: "default" is the project's default compute service account (the real
        API writes its address back); at most one; an address must be an email."""
        if len(given) > 1:
            raise bad("Invalid value for field 'resource.serviceAccounts': at most one service account per instance.")
        out = []
        for sa in copy.deepcopy(given):
            email = sa.get("email") or "default"
            if email == "default":
                email = "%s-compute@developer.gserviceaccount.com" % self.project_number(project)
            elif not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email):
                raise bad("Invalid value for field 'resource.serviceAccounts[0].email': '%s'. The service account "
                          "must be an email address or 'default'." % email)
            out.append({"email": email, "scopes": list(sa.get("scopes") or [])})
        return out

    def _zone_ref(self, project, zone, value, collection, where):
        """The name of a zonal resource given as a name, a partial URL or a full URL (in this zone)."""
        # a bare name is not a URL: the real API answers 400 "The URL is malformed"
        m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?zones/([^/]+)/%s/([^/]+)$" % collection, value or "")
        if not value or not m:
            raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, value))
        if m.group(2) and m.group(2) != zone:
            raise bad("Invalid value for field '%s': '%s'. The resource must be in zone %s." % (where, value, zone))
        return m.group(3)

    def m_instances_insert(self, p, q, body):
        project, zone = p["project"], p["zone"]
        proj = self.state.project(project)
        name = body["name"]
        if name in proj["instances"].get(zone, {}):
            raise ApiError(409, "The resource 'projects/%s/zones/%s/instances/%s' already exists"
                           % (project, zone, name))
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise bad("Invalid value for field 'resource.name': '%s'. Must be a match of regex "
                      "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'" % name)
        mt_name = self._zone_ref(project, zone, body.get("machineType"), "machineTypes", "resource.machineType")
        if mt_name not in self._machine_types_in(zone):
            raise bad("Invalid value for field 'resource.machineType': '%s'. Machine type with name '%s' does not "
                      "exist in zone '%s'." % (body.get("machineType"), mt_name, zone))
        mt_acc = MACHINE_TYPES[mt_name][2]
        accs = []
        for i, acc in enumerate(body.get("guestAccelerators") or ()):
            acc_name = self._zone_ref(project, zone, acc.get("acceleratorType"), "acceleratorTypes",
                                      "resource.guestAccelerators[%d].acceleratorType" % i)
            if acc_name not in self._accelerators_in(zone):
                raise bad("Invalid value for field 'resource.guestAccelerators[%d].acceleratorType': '%s'. "
                          "Accelerator type '%s' does not exist in zone %s."
                          % (i, acc.get("acceleratorType"), acc_name, zone))
            count = acc.get("acceleratorCount") or 0
            accs.append((acc_name, count))
        if mt_acc:
            if accs and accs != [mt_acc]:
                raise bad("Invalid value for field 'resource.guestAccelerators': machine type %s comes with %d x "
                          "%s; the accelerators must be omitted or match." % (mt_name, mt_acc[1], mt_acc[0]))
            accs = [mt_acc]
        elif any(acc_type == "nvidia-l4" for acc_type, _count in accs):
            raise bad("Invalid value for field 'resource.machineType': '%s'. Accelerator type nvidia-l4 can only be "
                      "attached to G2 machine types." % mt_name)
        sched = dict(body.get("scheduling") or {})
        sched.setdefault("onHostMaintenance", "TERMINATE" if accs else "MIGRATE")
        sched.setdefault("automaticRestart", True)
        sched.setdefault("preemptible", False)
        sched.setdefault("provisioningModel", "STANDARD")
        if accs and sched["onHostMaintenance"] == "MIGRATE":
            raise bad("Invalid value for field 'resource.scheduling.onHostMaintenance': 'MIGRATE'. Instances with "
                      "guest accelerators do not support live migration.")
        disks = body.get("disks") or []
        boots = [d for d in disks if d.get("boot")]
        if len(boots) != 1:
            raise bad("Invalid value for field 'resource.disks': exactly one boot disk is required.")
        boot = boots[0]
        init = boot.get("initializeParams") or {}
        if not (init.get("sourceImage") or boot.get("source")):
            raise bad("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': ''. "
                      "A boot disk needs a source image or an existing disk.")
        image = None
        if init.get("sourceImage"):
            m = re.search(r"(?:^|/)projects/([^/]+)/global/images/(family/)?([^/]+)$", init["sourceImage"])
            if not m:
                raise bad("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '%s'. "
                          "The URL is malformed." % init["sourceImage"])
            pp = {"project": m.group(1), "family": m.group(3), "image": m.group(3)}
            try:
                image = (self.m_images_getFromFamily(pp, {}, {}) if m.group(2) else self.m_images_get(pp, {}, {}))
            except ApiError:
                raise bad("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '%s'. The "
                          "referenced image resource cannot be found." % init["sourceImage"])
            if (image.get("deprecated") or {}).get("state") in ("OBSOLETE", "DELETED"):
                raise bad("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '%s'. The "
                          "image is %s." % (init["sourceImage"], image["deprecated"]["state"].lower()))
            if m.group(1) == "deeplearning-platform-release" and mt_name.startswith("g2-"):
                raise bad("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '%s'. "
                          "Deep Learning VM images do not support G2 machine types." % init["sourceImage"])
        size = int(init.get("diskSizeGb") or (image or {}).get("diskSizeGb") or 10)
        if image and size < int(image["diskSizeGb"]):
            raise bad("Invalid value for field 'resource.disks[0].initializeParams.diskSizeGb': '%d'. Requested "
                      "disk size cannot be smaller than the image size (%s GB)" % (size, image["diskSizeGb"]))
        disk_type = self._zone_ref(project, zone, init.get("diskType") or "pd-standard", "diskTypes",
                                   "resource.disks[0].initializeParams.diskType")
        if disk_type not in DISK_TYPES:
            raise bad("Invalid value for field 'resource.disks[0].initializeParams.diskType': '%s'. Disk type "
                      "'%s' does not exist in zone %s." % (init.get("diskType"), disk_type, zone))
        if mt_name.startswith("g2-") and disk_type not in G2_BOOT_DISK_TYPES:
            raise bad("Invalid value for field 'resource.disks[0].initializeParams.diskType': '%s'. %s disk type "
                      "cannot be used as the boot disk of machine type %s (G2 boot disks: %s)."
                      % (init.get("diskType"), disk_type, mt_name, ", ".join(G2_BOOT_DISK_TYPES)))
        nics_in = body.get("networkInterfaces") or [{}]
        nic_in = nics_in[0]
        where_sub = "resource.networkInterfaces[0].subnetwork"
        if nic_in.get("subnetwork") and not nic_in.get("network"):  # the API takes the subnetwork's network
            m_sub = re.search(r"(?:^|/)(?:projects/([^/]+)/)?regions/[^/]+/subnetworks/([^/]+)$", nic_in["subnetwork"])
            if not m_sub:
                raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where_sub, nic_in["subnetwork"]))
            owners = [n for n in self._network_names(m_sub.group(1) or project)
                      if m_sub.group(2) in self._subnetworks(m_sub.group(1) or project, n, zone.rsplit("-", 1)[0])]
            if not owners:
                raise not_found("projects/%s/regions/%s/subnetworks/%s"
                                % (m_sub.group(1) or project, zone.rsplit("-", 1)[0], m_sub.group(2)))
            nic_in = dict(nic_in, network="projects/%s/global/networks/%s" % (m_sub.group(1) or project, owners[0]))
        network = self._resolve_network(project, nic_in.get("network"), "resource.networkInterfaces[0].network")
        subnetwork = self._resolve_subnetwork(project, zone, network, nic_in.get("subnetwork"), where_sub)
        if isinstance(subnetwork, tuple):
            subnetwork = subnetwork[0]
        wants_external = bool(nic_in.get("accessConfigs"))
        internal, nat = self._allocate(wants_external)
        pool_error = None
        quota_message = self.quota_error(project, zone, accs)
        if quota_message:  # checked before this instance holds its GPUs
            pool_error = {"kind": "operation_error", "count": 1, "operation_type": "insert",
                          "code": "QUOTA_EXCEEDED", "message": quota_message}
        if internal is None:
            pool_error = {"kind": "operation_error", "count": 1, "operation_type": "insert",
                          "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                          "message": "local Compute API: every address of the host pool (%s) is taken; add test "
                                     "hosts with POST /_admin/host-pool" % ", ".join(self.host_pool)}
        region = zone.rsplit("-", 1)[0]
        nic = {"kind": "compute#networkInterface", "name": "nic0", "network": network,
               "subnetwork": subnetwork,
               "networkIP": internal, "stackType": "IPV4_ONLY", "fingerprint": fingerprint([name, internal])}
        if wants_external:
            ac = dict(nic_in["accessConfigs"][0])
            nic["accessConfigs"] = [{"kind": "compute#accessConfig", "type": ac.get("type", "ONE_TO_ONE_NAT"),
                                     "name": ac.get("name", "External NAT"), "natIP": nat,
                                     "networkTier": ac.get("networkTier", "PREMIUM")}]
        disk_name = boot.get("deviceName") or init.get("diskName") or name
        disk_link = self.link("projects", project, "zones", zone, "disks", disk_name)
        disk = {"kind": "compute#disk", "id": _id(disk_link), "name": disk_name, "sizeGb": str(size),
                "zone": self.zone_link(project, zone), "status": "READY", "selfLink": disk_link,
                "type": self.link("projects", project, "zones", zone, "diskTypes", disk_type),
                "sourceImage": (image or {}).get("selfLink"), "sourceImageId": (image or {}).get("id"),
                "users": [self.link("projects", project, "zones", zone, "instances", name)],
                "creationTimestamp": now_rfc3339(), "licenses": (image or {}).get("licenses", [])}
        tags = list((body.get("tags") or {}).get("items") or [])
        labels = dict(body.get("labels") or {})
        metadata_items = list((body.get("metadata") or {}).get("items") or [])
        link = self.link("projects", project, "zones", zone, "instances", name)
        inst = {
            "kind": "compute#instance", "id": _id(link + str(time.time())), "name": name,
            "description": body.get("description", ""), "creationTimestamp": now_rfc3339(),
            "zone": self.zone_link(project, zone), "status": "PROVISIONING",
            "machineType": self.link("projects", project, "zones", zone, "machineTypes", mt_name),
            "cpuPlatform": "Intel Cascade Lake", "canIpForward": bool(body.get("canIpForward", False)),
            "networkInterfaces": [nic],
            "disks": [{"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE", "boot": True,
                       "autoDelete": boot.get("autoDelete", True), "deviceName": disk_name, "index": 0,
                       "interface": "SCSI", "source": disk_link, "diskSizeGb": str(size),
                       "licenses": (image or {}).get("licenses", []), "architecture": "X86_64"}],
            "scheduling": sched,
            "tags": {"items": tags, "fingerprint": fingerprint(tags)},
            "labels": labels, "labelFingerprint": fingerprint(labels),
            "metadata": {"kind": "compute#metadata", "items": metadata_items,
                         "fingerprint": fingerprint(metadata_items)},
            "serviceAccounts": self._service_accounts(project, body.get("serviceAccounts") or []),
            "deletionProtection": bool(body.get("deletionProtection", False)),
            "startRestricted": False, "selfLink": link, "fingerprint": fingerprint([link, 0]),
            "lastStartTimestamp": now_rfc3339(),
        }
        if accs:
            inst["guestAccelerators"] = [{"acceleratorType": self.link("projects", project, "zones", zone,
                                                                       "acceleratorTypes", a),
                                          "acceleratorCount": c} for a, c in accs]
        if not tags:
            inst["tags"] = {"fingerprint": fingerprint(tags)}
        proj["instances"].setdefault(zone, {})[name] = inst
        proj["disks"].setdefault(zone, {})[disk_name] = disk

        def done():
            if inst["status"] == "PROVISIONING":
                inst["status"] = "RUNNING"
                inst["_guest_attribute_misses"] = 0

        def failed():
            proj["instances"].get(zone, {}).pop(name, None)
            proj["disks"].get(zone, {}).pop(disk_name, None)
            self._release(inst)
        self.save()
        if pool_error:
            self.faults.insert(0, pool_error)
        op = self._new_operation(project, "insert", link, zone, on_done=done, on_error=failed,
                                 request_id=q.get("requestId"))
        self.faults = [f for f in self.faults if f is not pool_error]
        return op

    def _remove_instance(self, project, zone, name):
        proj = self.state.project(project)
        inst = proj["instances"].get(zone, {}).pop(name, None)
        if inst is None:
            return
        self._release(inst)
        # a deleted VM leaves the unmanaged instance groups it was in
        for group in (proj.get("instanceGroups") or {}).get(zone, {}).values():
            if inst["selfLink"] in group["_members"]:
                group["_members"].remove(inst["selfLink"])
                group["size"] = len(group["_members"])
        for d in inst.get("disks") or ():
            if d.get("autoDelete"):
                proj["disks"].get(zone, {}).pop(basename(d["source"]), None)
        if not proj["instances"].get(zone):
            proj["instances"].pop(zone, None)
        if not proj["disks"].get(zone):
            proj["disks"].pop(zone, None)

    def m_instances_delete(self, p, q, body):
        inst = self._instance(p)
        if inst.get("deletionProtection"):
            raise bad("Invalid resource usage: 'Resource cannot be deleted if it's protected against deletion.'.",
                      "resourceInUseByAnotherResource")
        inst["status"] = "STOPPING"
        return self._new_operation(p["project"], "delete", inst["selfLink"], p["zone"], request_id=q.get("requestId"),
                                   on_done=lambda: self._remove_instance(p["project"], p["zone"], p["instance"]))

    def _set_status(self, inst, status):
        def done():
            if inst["status"] in ("STOPPING", "STAGING"):
                inst["status"] = status
                if status == "RUNNING":
                    inst["lastStartTimestamp"] = now_rfc3339()
                    inst["_guest_attribute_misses"] = 0   # a new boot: the agent publishes the keys again
                else:
                    inst["lastStopTimestamp"] = now_rfc3339()
        return done

    def m_instances_stop(self, p, q, body):
        inst = self._instance(p)
        if inst["status"] not in ("TERMINATED", "STOPPING"):
            inst["status"] = "STOPPING"
        return self._new_operation(p["project"], "stop", inst["selfLink"], p["zone"], request_id=q.get("requestId"),
                                   on_done=self._set_status(inst, "TERMINATED"))

    def m_instances_start(self, p, q, body):
        inst = self._instance(p)
        if inst["status"] in ("STOPPING", "SUSPENDING"):
            raise bad("The resource '%s' is not ready" % inst["selfLink"].replace(self.base, ""), "resourceNotReady")
        if inst["status"] == "SUSPENDED":  # start is for stopped instances; a suspended one needs resume
            raise bad("Invalid resource usage: 'Instance '%s' is suspended. Use the resume method to resume "
                      "it.'." % inst["name"], "resourceInUseByAnotherResource")
        if inst["status"] not in ("RUNNING", "PROVISIONING", "STAGING"):
            inst["status"] = "STAGING"
        return self._new_operation(p["project"], "start", inst["selfLink"], p["zone"], request_id=q.get("requestId"),
                                   on_done=self._set_status(inst, "RUNNING"))

    # ------------------------------------------------------------------ guest attributes (SSH host keys)
    def m_instances_getGuestAttributes(self, p, q, body):
        """The VM's SSH host keys as the guest agent publishes them (namespace hostkeys/, key = key type,
        value = the base64 key). Only with enable-guest-attributes=TRUE in the instance's metadata, only while
        RUNNING, and only after the agent has written them (host_keys_delay lookups after each boot); before
        that the real API answers 404 "The resource 'hostkeys/' of type 'Guest Attribute' was not found."
        (the text gcloud compute ssh matches, googlecloudsdk/command_lib/compute/ssh_utils.py)."""
        inst = self._instance(p)
        path = q.get("queryPath") or ""
        if q.get("variableKey"):
            path = q["variableKey"]
        namespace, _sep, key = path.partition("/")

        def not_found():
            return ApiError(404, "The resource '%s' of type 'Guest Attribute' was not found." % path,
                            reason="notFound")
        if not path or namespace != "hostkeys":
            raise not_found()  # the only namespace this stand-in's guest agent writes
        enabled = str(metadata_value(inst, "enable-guest-attributes") or "").strip().lower() == "true"
        addresses = [nic.get("networkIP") for nic in inst.get("networkInterfaces") or ()]
        addresses += [ac.get("natIP") for nic in inst.get("networkInterfaces") or () for ac in nic.get("accessConfigs") or ()]
        keys = next((self.host_keys[a] for a in addresses if a in self.host_keys), None) or \
            next((self.read_host_keys(self.host_key_roots[a]) for a in addresses if a in self.host_key_roots), None)
        if not enabled or inst["status"] != "RUNNING" or not keys:
            raise not_found()
        misses = inst.get("_guest_attribute_misses", self.host_keys_delay)
        if misses < self.host_keys_delay:
            inst["_guest_attribute_misses"] = misses + 1
            raise not_found()
        items = [{"namespace": "hostkeys", "key": k, "value": v} for k, v in sorted(keys.items())
                 if not key or k == key]
        if not items:
            raise not_found()
        out = {"kind": "compute#guestAttributes", "selfLink": inst["selfLink"] + "/guestAttributes/" + path}
        if q.get("variableKey"):
            out.update(variableKey=path, variableValue=items[0]["value"])
        else:
            out.update(queryPath=path, queryValue={"items": items})
        return out

    @staticmethod
    def read_host_keys(root):
        """{type: base64} of the real host keys under ROOT/etc/ssh (ssh_host_*_key.pub), as the agent publishes them."""
        keys = {}
        ssh_dir = os.path.join(root, "etc", "ssh")
        for name in sorted(os.listdir(ssh_dir)) if os.path.isdir(ssh_dir) else ():
            if name.startswith("ssh_host_") and name.endswith("_key.pub"):
                with open(os.path.join(ssh_dir, name)) as f:
                    words = f.read().split()
                if len(words) >= 2:
                    keys[words[0]] = words[1]
        return keys

    def _concurrent_change(self, p, fault):
        """Another client writes the instance just before this request: new tags/labels/metadata fingerprints,
        and its own metadata item (so a stale fingerprint is answered 412, as the real API does)."""
        inst = self._instance(p)
        key = fault.get("metadata_key", "other-writer")
        items = [i for i in inst["metadata"].get("items") or [] if i.get("key") != key]
        items.append({"key": key, "value": fault.get("metadata_value", "written by someone else")})
        inst["metadata"] = {"kind": "compute#metadata", "items": items, "fingerprint": fingerprint([items, uuid.uuid4().hex])}
        inst["tags"]["fingerprint"] = fingerprint([inst["tags"].get("items"), uuid.uuid4().hex])
        inst["labelFingerprint"] = fingerprint([inst.get("labels"), uuid.uuid4().hex])

    def m_instances_suspend(self, p, q, body):
        inst = self._instance(p)
        if inst.get("guestAccelerators"):
            raise bad("Invalid resource usage: 'Suspend is not supported for instances with GPUs attached.'.",
                      "unsupportedOperation")
        if inst["status"] != "RUNNING":
            raise bad("Invalid resource usage: 'Only a RUNNING instance can be suspended.'.", "resourceNotReady")
        inst["status"] = "SUSPENDING"

        def done():
            if inst["status"] == "SUSPENDING":
                inst["status"] = "SUSPENDED"
        return self._new_operation(p["project"], "suspend", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"), on_done=done)

    def m_instances_resume(self, p, q, body):
        inst = self._instance(p)
        if inst["status"] != "SUSPENDED":
            raise bad("Invalid resource usage: 'Instance '%s' is not suspended (%s).'." % (inst["name"], inst["status"]),
                      "resourceNotReady")
        inst["status"] = "STAGING"
        return self._new_operation(p["project"], "resume", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"), on_done=self._set_status(inst, "RUNNING"))

    def _check_fingerprint(self, given, current, what):
        if given != current:
            raise ApiError(412, "Supplied fingerprint does not match current %s fingerprint." % what,
                           reason="conditionNotMet")

    def m_instances_setTags(self, p, q, body):
        inst = self._instance(p)
        self._check_fingerprint(body.get("fingerprint"), inst["tags"].get("fingerprint"), "tags")
        items = list(body.get("items") or [])
        inst["tags"] = {"items": items, "fingerprint": fingerprint(items + [time.time()])}
        if not items:
            inst["tags"].pop("items")
        return self._new_operation(p["project"], "setTags", inst["selfLink"], p["zone"], request_id=q.get("requestId"))

    def m_instances_setLabels(self, p, q, body):
        inst = self._instance(p)
        self._check_fingerprint(body.get("labelFingerprint"), inst.get("labelFingerprint"), "label")
        inst["labels"] = dict(body.get("labels") or {})
        inst["labelFingerprint"] = fingerprint([inst["labels"], time.time()])
        return self._new_operation(p["project"], "setLabels", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"))

    def m_instances_setMetadata(self, p, q, body):
        inst = self._instance(p)
        self._check_fingerprint(body.get("fingerprint"), inst["metadata"].get("fingerprint"), "metadata")
        items = list(body.get("items") or [])
        keys = [i.get("key") for i in items]
        if len(set(keys)) != len(keys):
            raise bad("Invalid value for field 'resource.items': duplicate metadata keys.")
        inst["metadata"] = {"kind": "compute#metadata", "items": items,
                            "fingerprint": fingerprint([items, time.time()])}
        return self._new_operation(p["project"], "setMetadata", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"))

    def m_instances_setScheduling(self, p, q, body):
        inst = self._instance(p)
        if inst["status"] != "TERMINATED":
            # "You can only call this method on a stopped instance, that is, a VM instance that is in a
            # TERMINATED state" (the method's description in the discovery document)
            raise bad("Invalid resource usage: 'Instance '%s' is %s. Scheduling can only be changed on a stopped "
                      "(TERMINATED) instance.'." % (inst["name"], inst["status"]), "resourceNotReady")
        sched = dict(inst.get("scheduling") or {})
        sched.update(body)
        if inst.get("guestAccelerators") and sched.get("onHostMaintenance") == "MIGRATE":
            raise bad("Invalid value for field 'resource.onHostMaintenance': 'MIGRATE'. Instances with guest "
                      "accelerators do not support live migration.")
        inst["scheduling"] = sched
        return self._new_operation(p["project"], "setScheduling", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"))

    def m_instances_setMachineType(self, p, q, body):
        inst = self._instance(p)
        if inst["status"] != "TERMINATED":
            raise bad("Invalid resource usage: 'Instance is starting or running. Stop the instance before changing "
                      "its machine type.'.", "resourceNotReady")
        mt = self._zone_ref(p["project"], p["zone"], body.get("machineType"), "machineTypes", "machineType")
        if mt not in self._machine_types_in(p["zone"]):
            raise bad("Invalid value for field 'machineType': '%s'." % body.get("machineType"))
        inst["machineType"] = self.link("projects", p["project"], "zones", p["zone"], "machineTypes", mt)
        return self._new_operation(p["project"], "setMachineType", inst["selfLink"], p["zone"],
                                   request_id=q.get("requestId"))

    # ------------------------------------------------------------------ regions and quotas
    def _gpu_usage(self, project):
        """{(region, metric): GPUs in use} and the total: instances hold their GPUs unless TERMINATED."""
        usage, total = {}, 0.0
        for zone, insts in self.state.project(project)["instances"].items():
            for inst in insts.values():
                if inst.get("status") == "TERMINATED":
                    continue
                for acc in inst.get("guestAccelerators") or ():
                    metric = GPU_QUOTA_METRICS.get(basename(acc.get("acceleratorType")))
                    count = float(acc.get("acceleratorCount") or 0)
                    if metric:
                        key = (zone.rsplit("-", 1)[0], metric)
                        usage[key] = usage.get(key, 0.0) + count
                    total += count
        return usage, total

    def _region_quotas(self, project, region):
        usage, _total = self._gpu_usage(project)
        return [{"metric": metric, "limit": self.quotas.get((project, region, metric), DEFAULT_REGION_GPU_QUOTA),
                 "usage": usage.get((region, metric), 0.0)} for metric in sorted(set(GPU_QUOTA_METRICS.values()))]

    def _global_quotas(self, project):
        _usage, total = self._gpu_usage(project)
        return [{"metric": "GPUS_ALL_REGIONS",
                 "limit": self.quotas.get((project, "global", "GPUS_ALL_REGIONS"), DEFAULT_GLOBAL_GPU_QUOTA),
                 "usage": total}]

    def _regions(self):
        return sorted(set(z.rsplit("-", 1)[0] for z in ZONES))

    def m_regions_get(self, p, q, body):
        if p["region"] not in self._regions():
            raise not_found("projects/%s/regions/%s" % (p["project"], p["region"]))
        region = p["region"]
        return {"kind": "compute#region", "id": _id(region), "name": region, "status": "UP",
                "description": region, "selfLink": self.link("projects", p["project"], "regions", region),
                "zones": [self.zone_link(p["project"], z) for z in ZONES if z.rsplit("-", 1)[0] == region],
                "quotas": self._region_quotas(p["project"], region)}

    def quota_error(self, project, zone, accs, starting=None):
        """The operation error of an insert (or start) whose GPUs exceed a quota, or None: Compute fails the
        operation with QUOTA_EXCEEDED ("Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 1.0 in region R.")."""
        region = zone.rsplit("-", 1)[0]
        usage, total = self._gpu_usage(project)
        for acc_type, count in accs:
            metric = GPU_QUOTA_METRICS.get(acc_type)
            if not metric:
                continue
            limit = self.quotas.get((project, region, metric), DEFAULT_REGION_GPU_QUOTA)
            if usage.get((region, metric), 0.0) + count > limit:
                return "Quota '%s' exceeded.  Limit: %.1f in region %s." % (metric, limit, region)
        limit = self.quotas.get((project, "global", "GPUS_ALL_REGIONS"), DEFAULT_GLOBAL_GPU_QUOTA)
        if accs and total + sum(c for _a, c in accs) > limit:
            return "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: %.1f globally." % limit
        return None

    # ------------------------------------------------------------------ load balancer (regional passthrough NLB)
    # The resources of a backend service-based external passthrough Network Load Balancer: regional health
    # checks, unmanaged (zonal) instance groups, regional backend services, regional forwarding rules. Rules the
    # real API enforces and this stand-in enforces too (Compute Engine docs; quoted where stricter than trivial):
    # - a resource used by another cannot be deleted: 400 resourceInUseByAnotherResource ("The health_check
    #   resource '...' is already being used by '...'"), so teardown must go forwarding rule -> backend service
    #   -> health check / instance groups;
    # - instance groups: "All VM instances in an unmanaged instance group must be in the same zone and VPC
    #   network" (Unmanaged instance groups, limits); "a VM instance can belong to only one load-balanced
    #   unmanaged instance group"; a VM that is deleted leaves its groups;
    # - backend services of an external passthrough NLB: loadBalancingScheme EXTERNAL, regional health checks,
    #   backends in the region of the backend service ("backends must be in the same region"), each group once;
    #   patch/update need the current fingerprint ("An up-to-date fingerprint must be provided in order to
    #   update the BackendService, otherwise the request will fail with error 412 conditionNotMet");
    # - health checks: timeoutSec <= checkIntervalSec ("timeoutSec ... must be less than or equal to
    #   checkIntervalSec"), thresholds 1..10;
    # - getHealth answers what the stand-in can know: a member is HEALTHY only if it is RUNNING, a firewall rule
    #   of its network admits the health-check source ranges (HC_SOURCE_RANGES) on the health-check port for its
    #   tags, and an HTTP GET of its networkIP:port/requestPath answers 200 within timeoutSec (a real probe of a
    #   test host; made-up addresses are UNHEALTHY).
    def _lb(self, project, kind):
        return self.state.project(project).setdefault(kind, {})

    @staticmethod
    def _in_use(kind, link, user):
        return ApiError(400, "The %s resource '%s' is already being used by '%s'" % (kind, link, user),
                        reason="resourceInUseByAnotherResource")

    def _users(self, project, link):
        """Links of the resources that refer to `link` (backend services -> health checks and groups,
        forwarding rules -> backend services)."""
        users = []
        for region in self._lb(project, "backendServices").values():
            for bs in region.values():
                if link in (bs.get("healthChecks") or []) or link in [b.get("group") for b in bs.get("backends") or []]:
                    users.append(bs["selfLink"])
        for region in self._lb(project, "forwardingRules").values():
            for fr in region.values():
                if fr.get("backendService") == link:
                    users.append(fr["selfLink"])
        return users

    def _regional_ref(self, project, region, value, collection, where):
        m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?regions/([^/]+)/%s/([^/]+)$" % collection, value or "")
        if not m:
            raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, value))
        if m.group(2) != region:
            raise bad("Invalid value for field '%s': '%s'. The resource must be in region %s." % (where, value, region))
        return m.group(3)

    # health checks
    def _health_check_from_body(self, project, region, body, old=None):
        hc = copy.deepcopy(old) if old else {}
        for key, value in body.items():
            if key in ("kind", "id", "creationTimestamp", "selfLink", "region"):
                continue
            hc[key] = copy.deepcopy(value)
        if hc.get("type") != "HTTP" or not isinstance(hc.get("httpHealthCheck"), dict):
            raise bad("Invalid value for field 'resource.type': '%s'. This stand-in knows HTTP health checks with "
                      "httpHealthCheck." % hc.get("type"))
        http = hc["httpHealthCheck"]
        http.setdefault("port", 80)
        http.setdefault("requestPath", "/")
        http.setdefault("proxyHeader", "NONE")
        if not 1 <= int(http["port"]) <= 65535:
            raise bad("Invalid value for field 'resource.httpHealthCheck.port': '%s'." % http["port"])
        if not str(http["requestPath"]).startswith("/"):
            raise bad("Invalid value for field 'resource.httpHealthCheck.requestPath': '%s'. It must start with /."
                      % http["requestPath"])
        for key, default in (("checkIntervalSec", 5), ("timeoutSec", 5), ("healthyThreshold", 2),
                             ("unhealthyThreshold", 2)):
            hc.setdefault(key, default)
        if not 1 <= hc["checkIntervalSec"] <= 300:
            raise bad("Invalid value for field 'resource.checkIntervalSec': '%s'. Must be between 1 and 300."
                      % hc["checkIntervalSec"])
        if not 1 <= hc["timeoutSec"] <= hc["checkIntervalSec"]:
            raise bad("Invalid value for field 'resource.timeoutSec': '%s'. timeoutSec must be less than or equal to "
                      "checkIntervalSec (%s)." % (hc["timeoutSec"], hc["checkIntervalSec"]))
        for key in ("healthyThreshold", "unhealthyThreshold"):
            if not 1 <= hc[key] <= 10:
                raise bad("Invalid value for field 'resource.%s': '%s'. Must be between 1 and 10." % (key, hc[key]))
        hc["kind"] = "compute#healthCheck"
        hc["region"] = self.link("projects", project, "regions", region)
        hc["selfLink"] = self.link("projects", project, "regions", region, "healthChecks", hc["name"])
        hc.setdefault("id", _id(hc["selfLink"] + str(time.time())))
        hc.setdefault("creationTimestamp", now_rfc3339())
        return hc

    def _get_lb(self, p, kind, scope_key, name_key, path_kind):
        item = self._lb(p["project"], kind).get(p[scope_key], {}).get(p[name_key])
        scope = "regions" if scope_key == "region" else "zones"
        if item is None:
            raise not_found("projects/%s/%s/%s/%s/%s" % (p["project"], scope, p[scope_key], path_kind, p[name_key]))
        return item

    def m_regionHealthChecks_get(self, p, q, body):
        return self._get_lb(p, "healthChecks", "region", "healthCheck", "healthChecks")

    def m_regionHealthChecks_insert(self, p, q, body):
        region = self._lb(p["project"], "healthChecks").setdefault(p["region"], {})
        if body.get("name") in region:
            raise ApiError(409, "The resource 'projects/%s/regions/%s/healthChecks/%s' already exists"
                           % (p["project"], p["region"], body["name"]))
        hc = self._health_check_from_body(p["project"], p["region"], body)
        region[hc["name"]] = hc
        self.save()
        return self._new_operation(p["project"], "insert", hc["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_error=lambda: region.pop(hc["name"], None))

    def m_regionHealthChecks_patch(self, p, q, body):
        old = self.m_regionHealthChecks_get(p, q, body)
        if body.get("name") not in (None, old["name"]):
            raise bad("Invalid value for field 'resource.name': '%s'. The name cannot be changed." % body["name"])
        hc = self._health_check_from_body(p["project"], p["region"], dict(body, name=old["name"]), old)
        self._lb(p["project"], "healthChecks")[p["region"]][old["name"]] = hc
        self.save()
        return self._new_operation(p["project"], "patch", hc["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"))

    def m_regionHealthChecks_delete(self, p, q, body):
        hc = self.m_regionHealthChecks_get(p, q, body)
        users = self._users(p["project"], hc["selfLink"])
        if users:
            raise self._in_use("health_check", hc["selfLink"].replace(self.base, ""), users[0].replace(self.base, ""))
        region = self._lb(p["project"], "healthChecks")[p["region"]]
        return self._new_operation(p["project"], "delete", hc["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_done=lambda: region.pop(p["healthCheck"], None))

    # instance groups (unmanaged)
    def _group(self, p):
        return self._get_lb(p, "instanceGroups", "zone", "instanceGroup", "instanceGroups")

    def m_instanceGroups_get(self, p, q, body):
        return self.public(self._group(p))

    def m_instanceGroups_insert(self, p, q, body):
        zone = self._lb(p["project"], "instanceGroups").setdefault(p["zone"], {})
        name = body.get("name")
        if name in zone:
            raise ApiError(409, "The resource 'projects/%s/zones/%s/instanceGroups/%s' already exists"
                           % (p["project"], p["zone"], name))
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name or ""):
            raise bad("Invalid value for field 'resource.name': '%s'." % name)
        network = self._resolve_network(p["project"], body.get("network"), "resource.network")
        link = self.link("projects", p["project"], "zones", p["zone"], "instanceGroups", name)
        group = {"kind": "compute#instanceGroup", "id": _id(link + str(time.time())), "name": name,
                 "description": body.get("description", ""), "network": network, "size": 0,
                 "zone": self.zone_link(p["project"], p["zone"]), "namedPorts": list(body.get("namedPorts") or []),
                 "selfLink": link, "creationTimestamp": now_rfc3339(), "fingerprint": fingerprint([link]),
                 "_members": []}
        zone[name] = group
        self.save()
        return self._new_operation(p["project"], "insert", link, p["zone"], request_id=q.get("requestId"),
                                   on_error=lambda: zone.pop(name, None))

    def _load_balanced_groups_of(self, project, inst_link):
        """The groups holding `inst_link` that a backend service uses."""
        out = []
        for zone in self._lb(project, "instanceGroups").values():
            for group in zone.values():
                if inst_link in group["_members"] and self._users(project, group["selfLink"]):
                    out.append(group["selfLink"])
        return out

    def m_instanceGroups_addInstances(self, p, q, body):
        group = self._group(p)
        links = []
        for i, ref in enumerate(body.get("instances") or []):
            value = ref.get("instance") or ""
            m = re.search(r"(?:^|/)projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$", value)
            where = "resource.instances[%d].instance" % i
            if not m:
                raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, value))
            if m.group(2) != p["zone"]:
                raise bad("Invalid value for field '%s': '%s'. All VM instances in an unmanaged instance group must "
                          "be in the zone of the group (%s)." % (where, value, p["zone"]))
            inst = self.state.project(m.group(1))["instances"].get(m.group(2), {}).get(m.group(3))
            if inst is None:
                raise not_found("projects/%s/zones/%s/instances/%s" % m.groups())
            if (inst.get("networkInterfaces") or [{}])[0].get("network") != group["network"]:
                raise bad("Invalid value for field '%s': '%s'. All VM instances in an unmanaged instance group must "
                          "be in the VPC network of the group (%s)." % (where, value, basename(group["network"])))
            if inst["selfLink"] in group["_members"]:
                raise bad("The resource '%s' is already a member of '%s'" % (
                    inst["selfLink"].replace(self.base, ""), group["selfLink"].replace(self.base, "")),
                    "memberAlreadyExists")
            if self._users(p["project"], group["selfLink"]):
                others = [g for g in self._load_balanced_groups_of(p["project"], inst["selfLink"])
                          if g != group["selfLink"]]
                if others:
                    raise bad("Invalid value for field '%s': '%s'. A VM instance can belong to only one "
                              "load-balanced unmanaged instance group (it is in %s)."
                              % (where, value, others[0].replace(self.base, "")))
            links.append(inst["selfLink"])

        def done():
            for link in links:
                if link not in group["_members"]:
                    group["_members"].append(link)
            group["size"] = len(group["_members"])
        return self._new_operation(p["project"], "addInstances", group["selfLink"], p["zone"],
                                   request_id=q.get("requestId"), on_done=done)

    def m_instanceGroups_removeInstances(self, p, q, body):
        group = self._group(p)
        links = []
        for i, ref in enumerate(body.get("instances") or []):
            value = ref.get("instance") or ""
            match = [m for m in group["_members"] if m.endswith("/" + value.split("/compute/v1/")[-1].lstrip("/"))
                     or m == value]
            if not match:
                raise bad("Invalid value for field 'resource.instances[%d].instance': '%s'. The instance is not a "
                          "member of the group." % (i, value), "memberNotFound")
            links.append(match[0])

        def done():
            for link in links:
                if link in group["_members"]:
                    group["_members"].remove(link)
            group["size"] = len(group["_members"])
        return self._new_operation(p["project"], "removeInstances", group["selfLink"], p["zone"],
                                   request_id=q.get("requestId"), on_done=done)

    def m_instanceGroups_listInstances(self, p, q, body):
        group = self._group(p)
        proj = self.state.project(p["project"])
        items = []
        for link in group["_members"]:
            inst = proj["instances"].get(p["zone"], {}).get(basename(link)) or {}
            state = body.get("instanceState") or "ALL"
            if state == "RUNNING" and inst.get("status") != "RUNNING":
                continue
            items.append({"instance": link, "status": inst.get("status", "TERMINATED")})
        return self._page(items, q, "compute#instanceGroupsListInstances", group["selfLink"] + "/listInstances")

    def m_instanceGroups_delete(self, p, q, body):
        group = self._group(p)
        users = self._users(p["project"], group["selfLink"])
        if users:
            raise self._in_use("instance_group", group["selfLink"].replace(self.base, ""),
                               users[0].replace(self.base, ""))
        zone = self._lb(p["project"], "instanceGroups")[p["zone"]]
        return self._new_operation(p["project"], "delete", group["selfLink"], p["zone"],
                                   request_id=q.get("requestId"), on_done=lambda: zone.pop(p["instanceGroup"], None))

    # backend services (regional)
    def _backend_service_from_body(self, project, region, body, old=None):
        bs = copy.deepcopy(old) if old else {}
        for key, value in body.items():
            if key in ("kind", "id", "creationTimestamp", "selfLink", "region", "fingerprint"):
                continue
            bs[key] = copy.deepcopy(value)
        bs.setdefault("loadBalancingScheme", "INTERNAL")
        if bs["loadBalancingScheme"] != "EXTERNAL":
            raise bad("Invalid value for field 'resource.loadBalancingScheme': '%s'. This stand-in models the "
                      "backend service of an external passthrough Network Load Balancer: EXTERNAL."
                      % bs["loadBalancingScheme"])
        bs.setdefault("protocol", "TCP")
        if bs["protocol"] not in ("TCP", "UDP", "UNSPECIFIED"):
            raise bad("Invalid value for field 'resource.protocol': '%s'. A regional EXTERNAL backend service of a "
                      "passthrough load balancer takes TCP, UDP or UNSPECIFIED." % bs["protocol"])
        checks = bs.get("healthChecks") or []
        if len(checks) != 1:
            raise bad("Invalid value for field 'resource.healthChecks': exactly one health check is required.")
        hc_name = self._regional_ref(project, region, checks[0], "healthChecks", "resource.healthChecks[0]")
        if hc_name not in self._lb(project, "healthChecks").get(region, {}):
            raise not_found("projects/%s/regions/%s/healthChecks/%s" % (project, region, hc_name))
        bs["healthChecks"] = [self.link("projects", project, "regions", region, "healthChecks", hc_name)]
        seen = set()
        for i, backend in enumerate(bs.get("backends") or []):
            where = "resource.backends[%d].group" % i
            m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?zones/([^/]+)/instanceGroups/([^/]+)$", backend.get("group") or "")
            if not m:
                raise bad("Invalid value for field '%s': '%s'. The URL is malformed." % (where, backend.get("group")))
            if m.group(2).rsplit("-", 1)[0] != region:
                raise bad("Invalid value for field '%s': '%s'. Backends must be in the region of the backend service "
                          "(%s)." % (where, backend["group"], region))
            if m.group(3) not in self._lb(project, "instanceGroups").get(m.group(2), {}):
                raise not_found("projects/%s/zones/%s/instanceGroups/%s" % (project, m.group(2), m.group(3)))
            link = self.link("projects", project, "zones", m.group(2), "instanceGroups", m.group(3))
            if link in seen:
                raise bad("Invalid value for field '%s': '%s'. Duplicate backend group." % (where, backend["group"]))
            seen.add(link)
            backend["group"] = link
            backend.setdefault("balancingMode", "CONNECTION")
            if backend["balancingMode"] != "CONNECTION":
                raise bad("Invalid value for field 'resource.backends[%d].balancingMode': '%s'. A passthrough load "
                          "balancer's backends use CONNECTION." % (i, backend["balancingMode"]))
        drain = bs.setdefault("connectionDraining", {"drainingTimeoutSec": 0})
        drain.setdefault("drainingTimeoutSec", 0)
        if not 0 <= int(drain["drainingTimeoutSec"]) <= 3600:
            raise bad("Invalid value for field 'resource.connectionDraining.drainingTimeoutSec': '%s'. Must be "
                      "between 0 and 3600." % drain["drainingTimeoutSec"])
        bs.setdefault("sessionAffinity", "NONE")
        bs["kind"] = "compute#backendService"
        bs["region"] = self.link("projects", project, "regions", region)
        bs["selfLink"] = self.link("projects", project, "regions", region, "backendServices", bs["name"])
        bs.setdefault("id", _id(bs["selfLink"] + str(time.time())))
        bs.setdefault("creationTimestamp", now_rfc3339())
        bs["fingerprint"] = fingerprint([bs.get(k) for k in sorted(bs) if k not in ("fingerprint", "id")])
        return bs

    def m_regionBackendServices_get(self, p, q, body):
        return self._get_lb(p, "backendServices", "region", "backendService", "backendServices")

    def m_regionBackendServices_insert(self, p, q, body):
        region = self._lb(p["project"], "backendServices").setdefault(p["region"], {})
        if body.get("name") in region:
            raise ApiError(409, "The resource 'projects/%s/regions/%s/backendServices/%s' already exists"
                           % (p["project"], p["region"], body["name"]))
        bs = self._backend_service_from_body(p["project"], p["region"], body)
        region[bs["name"]] = bs
        self.save()
        return self._new_operation(p["project"], "insert", bs["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_error=lambda: region.pop(bs["name"], None))

    def _backend_service_change(self, p, q, body, merge, op_type):
        old = self.m_regionBackendServices_get(p, q, body)
        if body.get("fingerprint") != old["fingerprint"]:
            raise ApiError(412, "Invalid fingerprint: an up-to-date fingerprint must be provided to update the "
                                "BackendService '%s'." % old["selfLink"].replace(self.base, ""),
                           reason="conditionNotMet")
        if body.get("name") not in (None, old["name"]):
            raise bad("Invalid value for field 'resource.name': '%s'. The name cannot be changed." % body["name"])
        body = dict(body, name=old["name"])
        if merge:
            bs = self._backend_service_from_body(p["project"], p["region"], body, old)
        else:
            bs = self._backend_service_from_body(p["project"], p["region"], body)
            bs.update({k: old[k] for k in ("id", "creationTimestamp")})
        self._lb(p["project"], "backendServices")[p["region"]][old["name"]] = bs
        self.save()
        return self._new_operation(p["project"], op_type, bs["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"))

    def m_regionBackendServices_patch(self, p, q, body):
        return self._backend_service_change(p, q, body, True, "patch")

    def m_regionBackendServices_update(self, p, q, body):
        return self._backend_service_change(p, q, body, False, "update")

    def m_regionBackendServices_delete(self, p, q, body):
        bs = self.m_regionBackendServices_get(p, q, body)
        users = self._users(p["project"], bs["selfLink"])
        if users:
            raise self._in_use("backend_service", bs["selfLink"].replace(self.base, ""),
                               users[0].replace(self.base, ""))
        region = self._lb(p["project"], "backendServices")[p["region"]]
        return self._new_operation(p["project"], "delete", bs["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_done=lambda: region.pop(p["backendService"], None))

    def _probe_admitted(self, project, inst, port):
        """Whether a firewall rule of the instance's network admits every health-check range on `port`."""
        network = (inst.get("networkInterfaces") or [{}])[0].get("network")
        tags = set((inst.get("tags") or {}).get("items") or [])
        for fw in self.state.project(project)["firewalls"].values():
            if fw.get("network") != network or fw.get("direction") != "INGRESS" or fw.get("disabled"):
                continue
            if fw.get("targetTags") and not tags & set(fw["targetTags"]):
                continue
            ranges = [ipaddress.ip_network(r, strict=False) for r in fw.get("sourceRanges") or []]
            if not all(any(ipaddress.ip_network(h).subnet_of(r) for r in ranges if r.version == 4)
                       for h in HC_SOURCE_RANGES):
                continue
            for rule in fw.get("allowed") or []:
                if rule.get("IPProtocol") not in ("tcp", "all"):
                    continue
                for spec in rule.get("ports") or ["1-65535"]:
                    low, _sep, high = spec.partition("-")
                    if int(low) <= port <= int(high or low):
                        return True
        return False

    def m_regionBackendServices_getHealth(self, p, q, body):
        bs = self.m_regionBackendServices_get(p, q, body)
        group_link = body.get("group") or ""
        m = re.search(r"(?:^|/)(?:projects/([^/]+)/)?zones/([^/]+)/instanceGroups/([^/]+)$", group_link)
        groups = [b["group"] for b in bs.get("backends") or []]
        link = self.link("projects", p["project"], "zones", m.group(2), "instanceGroups", m.group(3)) if m else None
        if link not in groups:
            raise bad("Invalid value for field 'resource.group': '%s'. The group is not a backend of '%s'."
                      % (group_link, bs["selfLink"].replace(self.base, "")))
        hc = self._lb(p["project"], "healthChecks").get(p["region"], {}).get(basename(bs["healthChecks"][0])) or {}
        http = hc.get("httpHealthCheck") or {}
        port = int(http.get("port") or 80)
        group = self._lb(p["project"], "instanceGroups")[m.group(2)][m.group(3)]
        frs = [fr for fr in self._lb(p["project"], "forwardingRules").get(p["region"], {}).values()
               if fr.get("backendService") == bs["selfLink"]]
        out = []
        for member in group["_members"]:
            inst = self.state.project(p["project"])["instances"].get(m.group(2), {}).get(basename(member)) or {}
            address = (inst.get("networkInterfaces") or [{}])[0].get("networkIP")
            healthy = (inst.get("status") == "RUNNING" and self._probe_admitted(p["project"], inst, port)
                       and self.probe(address, port, http.get("requestPath") or "/",
                                      min(float(hc.get("timeoutSec") or 5), 2.0)))
            status = {"instance": member, "ipAddress": address, "port": port,
                      "healthState": "HEALTHY" if healthy else "UNHEALTHY"}
            if frs:
                status["forwardingRule"] = frs[0]["selfLink"]
                status["forwardingRuleIp"] = frs[0].get("IPAddress")
            out.append(status)
        return {"kind": "compute#backendServiceGroupHealth", "healthStatus": out}

    def probe(self, address, port, path, timeout):
        """One HTTP GET as a health-check prober does (outside the lock would be kinder; probes are short)."""
        if not address:
            return False
        try:
            conn = socket.create_connection((address, port), timeout=timeout)
        except OSError:
            return False
        try:
            conn.settimeout(timeout)
            conn.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: GoogleHC/1.0\r\nConnection: close\r\n\r\n"
                          % (path, address)).encode())
            head = conn.recv(64).decode("latin-1", "replace")
        except OSError:
            return False
        finally:
            conn.close()
        return head.startswith("HTTP/1.") and head[9:12] == "200"

    # forwarding rules (regional)
    def m_forwardingRules_get(self, p, q, body):
        return self._get_lb(p, "forwardingRules", "region", "forwardingRule", "forwardingRules")

    def m_forwardingRules_insert(self, p, q, body):
        region = self._lb(p["project"], "forwardingRules").setdefault(p["region"], {})
        name = body.get("name")
        if name in region:
            raise ApiError(409, "The resource 'projects/%s/regions/%s/forwardingRules/%s' already exists"
                           % (p["project"], p["region"], name))
        fr = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("kind", "id", "creationTimestamp", "selfLink")}
        fr.setdefault("loadBalancingScheme", "EXTERNAL")
        if fr["loadBalancingScheme"] != "EXTERNAL":
            raise bad("Invalid value for field 'resource.loadBalancingScheme': '%s'. This stand-in models an "
                      "external passthrough Network Load Balancer: EXTERNAL." % fr["loadBalancingScheme"])
        if not fr.get("backendService"):
            raise bad("Invalid value for field 'resource.backendService': ''. A forwarding rule of a backend "
                      "service-based load balancer needs its backend service.", "required")
        bs_name = self._regional_ref(p["project"], p["region"], fr["backendService"], "backendServices",
                                     "resource.backendService")
        if bs_name not in self._lb(p["project"], "backendServices").get(p["region"], {}):
            raise not_found("projects/%s/regions/%s/backendServices/%s" % (p["project"], p["region"], bs_name))
        fr["backendService"] = self.link("projects", p["project"], "regions", p["region"], "backendServices", bs_name)
        fr.setdefault("IPProtocol", "TCP")
        if fr.get("ports") and fr.get("portRange"):
            raise bad("Invalid value for field 'resource': ports and portRange are mutually exclusive.")
        if len(fr.get("ports") or []) > 5:
            raise bad("Invalid value for field 'resource.ports': at most 5 ports; use portRange or allPorts.")
        fr.setdefault("networkTier", "PREMIUM")
        fr.setdefault("IPAddress", str(next(self._fake_ext)))
        fr["kind"] = "compute#forwardingRule"
        fr["region"] = self.link("projects", p["project"], "regions", p["region"])
        fr["selfLink"] = self.link("projects", p["project"], "regions", p["region"], "forwardingRules", name)
        fr["id"] = _id(fr["selfLink"] + str(time.time()))
        fr["creationTimestamp"] = now_rfc3339()
        fr["fingerprint"] = fingerprint([fr["selfLink"], fr["id"]])
        region[name] = fr
        self.save()
        return self._new_operation(p["project"], "insert", fr["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_error=lambda: region.pop(name, None))

    def m_forwardingRules_delete(self, p, q, body):
        fr = self.m_forwardingRules_get(p, q, body)
        region = self._lb(p["project"], "forwardingRules")[p["region"]]
        return self._new_operation(p["project"], "delete", fr["selfLink"], region=p["region"],
                                   request_id=q.get("requestId"), on_done=lambda: region.pop(p["forwardingRule"], None))

    def set_project_metadata(self, project, items):
        """Project-wide metadata (commonInstanceMetadata), e.g. {"enable-oslogin": "TRUE"} as an org policy sets it."""
        with self.lock:
            proj = self.state.project(project)
            proj["metadata"] = [{"key": k, "value": v} for k, v in items.items()]
            self.save()

    def m_projects_get(self, p, q, body):
        proj = self.state.project(p["project"])
        items = list(proj.get("metadata") or [])
        return {"kind": "compute#project", "id": self.project_number(p["project"]), "name": p["project"],
                "selfLink": self.link("projects", p["project"]),
                "commonInstanceMetadata": {"kind": "compute#metadata", "items": items,
                                           "fingerprint": fingerprint(items)},
                "defaultServiceAccount": "%s-compute@developer.gserviceaccount.com" % self.project_number(p["project"]),
                "quotas": self._global_quotas(p["project"])}

    def m_disks_get(self, p, q, body):
        disk = self.state.project(p["project"])["disks"].get(p["zone"], {}).get(p["disk"])
        if disk is None:
            raise not_found("projects/%s/zones/%s/disks/%s" % (p["project"], p["zone"], p["disk"]))
        return disk

    # ------------------------------------------------------------------ admin
    def seed(self, count, project=DEFAULT_PROJECT, zones=20, prefix="vm", status="RUNNING", tags=None,
             labels=None, machine_type="g2-standard-4"):
        """Add `count` instances spread over `zones` zones directly (no operations), fast."""
        zone_names = ZONES[:int(zones)] if isinstance(zones, int) else list(zones)
        tags = list(tags if tags is not None else ["ai-server", "monitoring"])
        labels = dict(labels if labels is not None else {"app": "vllm"})
        with self.lock:
            proj = self.state.project(project)
            for i in range(int(count)):
                zone = zone_names[i % len(zone_names)]
                name = "%s-%05d" % (prefix, i)
                link = self.link("projects", project, "zones", zone, "instances", name)
                internal = str(ipaddress.ip_address("10.128.0.0") + 16 + (i % 1000000))
                nat = str(ipaddress.ip_address("198.51.100.0") + (i % 250)) if i % 4 else None
                nic = {"kind": "compute#networkInterface", "name": "nic0", "networkIP": internal,
                       "network": self.link("projects", project, "global", "networks", "default")}
                if nat:
                    nic["accessConfigs"] = [{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
                                             "name": "External NAT", "natIP": nat, "networkTier": "PREMIUM"}]
                acc = MACHINE_TYPES.get(machine_type, (0, 0, None))[2]
                inst = {"kind": "compute#instance", "id": _id(link), "name": name, "status": status,
                        "zone": self.zone_link(project, zone), "creationTimestamp": "2026-11-01T00:00:00.000-07:00",
                        "machineType": self.link("projects", project, "zones", zone, "machineTypes", machine_type),
                        "networkInterfaces": [nic], "selfLink": link,
                        "tags": {"items": list(tags), "fingerprint": fingerprint(tags)},
                        "labels": dict(labels, shard="s%d" % (i % 10)), "labelFingerprint": "seeded",
                        "metadata": {"kind": "compute#metadata", "items": [], "fingerprint": "seeded"},
                        "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": True}}
                if acc:
                    inst["guestAccelerators"] = [{"acceleratorType": self.link(
                        "projects", project, "zones", zone, "acceleratorTypes", acc[0]), "acceleratorCount": acc[1]}]
                proj["instances"].setdefault(zone, {})[name] = inst
            self.save()
        return count

    def dump(self):
        with self.lock:
            return json.loads(json.dumps(self.state.to_json()))

    def summary(self):
        with self.lock:
            out = {}
            for name, proj in self.state.projects.items():
                out[name] = {
                    "instances": {"%s/%s" % (z, n): i["status"] for z, insts in proj["instances"].items()
                                  for n, i in insts.items()},
                    "firewalls": sorted(proj["firewalls"]),
                    # the load balancer's resources, as "scope/name" (scope: region or zone)
                    "load_balancer": {kind: sorted("%s/%s" % (scope, n) for scope, items in (proj.get(kind) or {}).items()
                                                   for n in items)
                                      for kind in ("healthChecks", "instanceGroups", "backendServices",
                                                   "forwardingRules")},
                }
            return out


# ---------------------------------------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stalls
    wbufsize = -1  # buffered; flushed after each request by http.server
    server_version = "llmops-local-compute-api/1"
    api = None  # set per server class

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("compute-api: %s\n" % (fmt % args))

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "Invalid JSON payload received. %s" % e, reason="parseError")

    def _dispatch(self, http_method):
        api = self.server.api
        started = time.perf_counter()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        status, payload, headers = 500, None, {}
        try:
            status, payload = self._outcome(http_method, split, query)
        except _DropConnection:
            status = 0
        except ApiError as e:
            status, payload, headers = e.code, e.body(), e.headers
        except Exception as e:  # a bug here must show as a 500 with the reason, never hang the client
            status, payload = 500, ApiError(500, "local Compute API bug: %r" % e, reason="backendError").body()
        if not split.path.startswith("/_admin/"):
            # logged before answering, so a client that got its answer finds its request in the log
            with api.lock:
                api.requests.append({"method": http_method, "path": split.path, "query": split.query,
                                     "status": status, "ms": round((time.perf_counter() - started) * 1000, 3),
                                     "bearer_issued": getattr(self, "_bearer_issued", False)})
        if status == 0:
            self._drop()
        else:
            self._send(status, payload, headers)

    def _outcome(self, http_method, split, query):
        api = self.server.api
        if split.path == "/token" and http_method == "POST":
            return self._token()
        try:
            body = self._body()
        except ApiError:
            if split.path.startswith("/_admin/"):
                raise
            body = ApiError  # reported after auth, like the real API
        if split.path.startswith("/_admin/"):
            return self._admin(http_method, split.path, query, body)
        if not split.path.startswith(BASE_PATH):
            raise ApiError(404, "The requested URL %s was not found on this server." % split.path)
        path = split.path[len(BASE_PATH):]
        auth = self.headers.get("Authorization") or ""
        self._bearer_issued = auth[7:] in api.issued_tokens
        if not auth.startswith("Bearer ") or not auth[7:].strip() or (api.token and auth[7:] != api.token):
            raise ApiError(401, "Request is missing required authentication credential. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.",
                           reason="required" if not auth else "authError")
        fault = api._take_fault(("status", "drop", "drop_after", "delay"), http_method, path)
        if fault and fault["kind"] == "delay":
            time.sleep(float(fault.get("seconds", 1)))
            fault = None
        if fault and fault["kind"] == "drop":
            raise _DropConnection()
        if fault and fault["kind"] != "drop_after":
            code = int(fault.get("status", 503))
            headers = {"Retry-After": fault["retry_after"]} if fault.get("retry_after") is not None else {}
            reason = fault.get("reason")
            message = fault.get("message") or FAULT_MESSAGES.get(reason) or (
                "Rate Limit Exceeded" if code == 429 else "The service is currently unavailable.")
            raise ApiError(code, message, reason=reason, headers=headers)
        if body is ApiError:
            raise ApiError(400, "Invalid JSON payload received. The request body is not JSON.", reason="parseError")
        outcome = api.handle(http_method, path, query, body)
        if fault and fault["kind"] == "drop_after":
            raise _DropConnection()  # the request took effect, but its answer is lost
        return outcome

    def _token(self):
        """A stand-in of Google's OAuth2 token endpoint (https://oauth2.googleapis.com/token) for service-account
        keys whose token_uri points here: the JWT-bearer grant. The JWT's claims are checked (iss, aud = this
        URL, scope, iat/exp); its signature is not (stdlib only)."""
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode() if length else "")

        def oauth_error(error, description):
            return 400, {"error": error, "error_description": description}
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return oauth_error("unsupported_grant_type", "Invalid grant_type: %s" % form.get("grant_type"))
        try:
            _header, payload, _sig = form["assertion"][0].split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (KeyError, ValueError):
            return oauth_error("invalid_grant", "Invalid JWT: the assertion is not a JWT")
        now = time.time()
        own = "http://%s:%d/token" % self.server.server_address[:2]
        # google-auth writes Google's token URL as the audience whatever token_uri is; both are accepted
        if not claims.get("iss") or claims.get("aud") not in (own, GOOGLE_TOKEN_URL) or not claims.get("scope"):
            return oauth_error("invalid_grant", "Invalid JWT: iss, aud (%s) and scope are required, got %s"
                               % (own, json.dumps(claims, sort_keys=True)))
        if not claims.get("iat", now + 999) - 300 <= now <= claims.get("exp", 0) + 300:
            return oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable "
                                                "timeframe")
        token = "ya29.local-" + uuid.uuid4().hex
        with self.server.api.lock:
            self.server.api.issued_tokens[token] = {"iss": claims["iss"], "scope": claims["scope"]}
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _admin(self, http_method, path, query, body):
        api = self.server.api
        name = path[len("/_admin/"):].strip("/")
        if name == "health":
            return 200, {"ok": True, "discoveryRevision": api.discovery.revision}
        if name == "state" and http_method == "GET":
            return 200, api.dump() if query.get("full") else {"summary": api.summary(), "state": api.dump()}
        if name == "summary":
            return 200, api.summary()
        if name == "reset" and http_method == "POST":
            api.reset()
            return 200, {"ok": True}
        if name == "faults":
            if http_method == "POST":
                api.add_faults(body or {})
            elif http_method == "DELETE":
                with api.lock:
                    api.faults = []
            return 200, {"faults": api.faults}
        if name == "seed" and http_method == "POST":
            body = body or {}
            started = time.perf_counter()
            n = api.seed(**{k: v for k, v in body.items()
                            if k in ("count", "project", "zones", "prefix", "status", "tags", "labels",
                                     "machine_type")})
            return 200, {"seeded": n, "seconds": round(time.perf_counter() - started, 3)}
        if name == "host-pool":
            if http_method == "POST":
                addrs = (body or {}).get("addresses") or []
                with api.lock:
                    if (body or {}).get("replace"):
                        api.host_pool = []
                    api.host_pool.extend(a for a in addrs if a not in api.host_pool)
            return 200, {"addresses": api.host_pool}
        if name == "host-keys":
            if http_method == "POST":
                body = body or {}
                keys = body.get("keys") or {}
                if not body.get("address") or not isinstance(keys, dict) or not all(
                        re.fullmatch(r"(ssh-|ecdsa-)[a-z0-9-]+", k) and re.fullmatch(r"[A-Za-z0-9+/=]+", v or "")
                        for k, v in keys.items()):
                    raise bad("POST /_admin/host-keys needs {address, keys: {TYPE: BASE64}}")
                with api.lock:
                    api.host_keys[body["address"]] = dict(keys)
                    if "delay" in body:
                        api.host_keys_delay = int(body["delay"])
            return 200, {"host_keys": api.host_keys, "delay": api.host_keys_delay}
        if name == "requests":
            if http_method == "DELETE":
                with api.lock:
                    api.requests = []
            with api.lock:
                return 200, {"requests": list(api.requests)}
        raise ApiError(404, "unknown admin endpoint %s %s" % (http_method, path))

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, api, verbose=False):
        super().__init__(addr, Handler)
        self.api = api
        self.verbose = verbose


_DISCOVERY_CACHE = {}


def load_discovery(path=None):
    key = path or ""
    if key not in _DISCOVERY_CACHE:
        _DISCOVERY_CACHE[key] = Discovery(path)
    return _DISCOVERY_CACHE[key]


class ComputeApiServer(object):
    """The local Compute API in a background thread (for pytest fixtures).

    api = ComputeApiServer(host="127.0.0.1", port=0, **ComputeApi options); api.start()
    api.endpoint  -> "http://127.0.0.1:PORT/compute/v1/"   (the api_endpoint of the plugins)
    api.api       -> the ComputeApi (state, faults, requests, seed(), dump(), summary())
    api.stop()
    """

    def __init__(self, host="127.0.0.1", port=0, discovery_path=None, verbose=False, **options):
        self.api = ComputeApi(discovery=load_discovery(discovery_path), **options)
        self.httpd = _Server((host, port), self.api, verbose)
        self.host, self.port = self.httpd.server_address[:2]
        self.url = "http://%s:%d/" % (self.host, self.port)
        self.endpoint = self.url + BASE_PATH.lstrip("/")
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="compute-api", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # conveniences for tests
    def add_faults(self, rules):
        self.api.add_faults(rules)

    def requests(self, path_re=None):
        with self.api.lock:
            return [r for r in self.api.requests if path_re is None or re.search(path_re, r["path"])]

    def clear_requests(self):
        with self.api.lock:
            self.api.requests = []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (0 = any free port; see --port-file)")
    ap.add_argument("--port-file", help="write the bound port to this file once listening")
    ap.add_argument("--state", help="persist the state to this JSON file (loaded at start when it exists)")
    ap.add_argument("--host-pool", default="", help="IP[,IP...]: addresses of real test hosts; each inserted "
                                                    "instance takes the next free one as networkIP and natIP")
    ap.add_argument("--host-keys", action="append", default=[], metavar="ADDR=ROOT",
                    help="the VM at ADDR publishes the SSH host keys of the test host whose root directory is ROOT "
                         "(ROOT/etc/ssh/ssh_host_*_key.pub) as guest attributes; repeatable")
    ap.add_argument("--project", action="append", dest="projects",
                    help="accept only these projects (repeatable; default: any)")
    ap.add_argument("--op-polls", type=int, default=2,
                    help="polls (get/wait) an operation takes to go PENDING -> RUNNING -> DONE (default 2)")
    ap.add_argument("--op-seconds", type=float, default=5.0,
                    help="an operation is DONE at the latest after this many seconds (default 5)")
    ap.add_argument("--clock-scale", type=float, default=1.0,
                    help="API seconds per real second: every duration of this server (op-seconds, the wait hold, "
                         "slow_operation faults) runs this many times faster (default 1)")
    ap.add_argument("--wait-hold", type=float, default=WAIT_HOLD_SECONDS,
                    help="operations.wait holds a request at most this many API seconds (default 120, as Google's)")
    ap.add_argument("--wait-early-every", type=int, default=3,
                    help="every Nth operations.wait returns at once, not DONE (default 3; 0 = never)")
    ap.add_argument("--token", help="require exactly this bearer token (default: any non-empty token)")
    ap.add_argument("--fault", action="append", default=[],
                    help='a fault rule as JSON, e.g. \'{"kind": "status", "status": 429, "count": 3}\' (repeatable)')
    ap.add_argument("--seed", type=int, default=0, help="seed this many RUNNING instances (bench)")
    ap.add_argument("--seed-project", default=DEFAULT_PROJECT)
    ap.add_argument("--discovery", help="path of compute.v1.json (default: google-api-python-client's)")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    server = ComputeApiServer(
        args.host, args.port, discovery_path=args.discovery, verbose=args.verbose, projects=args.projects,
        host_pool=[a.strip() for a in args.host_pool.split(",") if a.strip()], op_polls=args.op_polls,
        op_seconds=args.op_seconds, state_file=args.state, token=args.token, clock_scale=args.clock_scale,
        wait_hold=args.wait_hold, wait_early_every=args.wait_early_every)
    for rule in args.fault:
        server.add_faults(json.loads(rule))
    for item in args.host_keys:
        addr, sep, root = item.partition("=")
        if not sep or not os.path.isdir(os.path.join(root, "etc", "ssh")):
            ap.error("--host-keys %s: expected ADDR=ROOT with ROOT/etc/ssh holding the host keys" % item)
        server.api.host_key_roots[addr.strip()] = root
    if args.seed:
        server.api.seed(args.seed, project=args.seed_project)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % server.port)
        os.replace(tmp, args.port_file)
    print("local Compute API listening on %s (api_endpoint %s)" % (server.url, server.endpoint), flush=True)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.api.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
