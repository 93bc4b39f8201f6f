# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dynamic inventory of Google Compute Engine instances, built for fleets."""

from __future__ import annotations

DOCUMENTATION = r"""
name: gce
short_description: Google Compute Engine instances as an inventory, fast enough for fleets
description:
  - Lists the instances of one or more Google Cloud projects with B(one) C(instances.aggregatedList)
    call per project and page (O(page_size) instances a page), not one call per zone; zones are
    filtered on the controller.
  - Only C(RUNNING) instances by default (O(statuses)).
  - Builds its groups in Python, without a Jinja2 expression per host, so 5,000 instances build in
    well under two seconds. The built-in groups (see O(builtin_groups)) are, for an instance in zone
    C(asia-northeast3-a) of machine type C(g2-standard-4) with one C(nvidia-l4), network tags
    C(ai-server) and C(monitoring) and label C(env=prod), they are
    C(ai_server), C(monitoring) (one group per network tag, named after the tag),
    C(label_env_prod), C(zone_asia_northeast3_a), C(region_asia_northeast3), C(status_running),
    C(machine_type_g2_standard_4) and C(gpu_nvidia_l4). Names are sanitized (C(-) becomes C(_)).
  - Every host gets these variables, all prefixed C(gce_) so that they never collide with role variables
    C(gce_name), C(gce_hostname) (the instance's custom C(hostname), or null), C(gce_id), C(gce_project), C(gce_zone), C(gce_region), C(gce_status),
    C(gce_machine_type), C(gce_gpus) (a list of C({type, count})), C(gce_labels), C(gce_tags),
    C(gce_private_ip) (C(networkInterfaces[0].networkIP)), C(gce_public_ip)
    (C(networkInterfaces[0].accessConfigs[0].natIP), or null), C(gce_network), C(gce_self_link),
    C(gce_creation_timestamp), C(gce_metadata) (only the keys listed in O(metadata_keys)),
    and C(ansible_host) (see O(address_preference)).
  - A O(keyed_groups) entry whose key resolves on no host gets a warning (a google.cloud.gcp_compute file's
    keys on the instance's own fields need O(google_cloud_compat)).
  - O(keyed_groups), O(groups) and O(compose) work as in every constructed inventory, for your own
    extra groups and variables, and are only run when set. Their expressions see the host's variables
    with C(inventory_hostname) and C(group_names) (the built-in groups). An expression that is just a
    variable path (C(gce_zone), C(gce_labels.team)) or a quoted string is resolved without Jinja2; any
    other expression costs a template compilation per host (about 0.5 ms in ansible-core 2.21).
  - The inventory file name must end in C(gce.yml) or C(gce.yaml), for example C(prod.gce.yml), or in
    C(gcp.yml)/C(gcp.yaml) (google.cloud.gcp_compute's names, which turn O(google_cloud_compat) on).
  - Uses the collection's Compute API client (google-auth + requests), with retries on 429/5xx and on 403
    rateLimitExceeded/userRateLimitExceeded.
author:
  - llmops.gce_vllm contributors (!UNKNOWN)
version_added: 0.1.0
requirements:
  - google-auth
  - requests
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it marks the file as an inventory source for it.
    required: true
    type: str
    choices: [llmops.gce_vllm.gce]
  projects:
    description:
      - Google Cloud project IDs to list instances of. At least one, from here or from E(GCP_PROJECT)
        (comma-separated).
    type: list
    elements: str
    env:
      - name: GCP_PROJECT
  zones:
    description:
      - Only instances in these zones (for example C(asia-northeast3-a)). Empty means every zone.
      - Filtered on the controller; the API is still called once per project and page.
    type: list
    elements: str
    default: []
  filters:
    description:
      - Compute API filter expressions (the C(filter) parameter of C(instances.aggregatedList)),
        for example C(labels.app = vllm) or C(name = "ai-*"). Several are sent as the API documents (and
        C(google.cloud.gcp_compute) does), each in parentheses, the groups side by side with a space between them (all must match).
      - "Regular-expression C(eq)/C(ne) expressions cannot be mixed with C(=), C(!=), C(:), C(>) or C(<) ones (the
        API refuses it); such a list is refused before any API call."
      - A syntax error is reported with the API's own message.
    type: list
    elements: str
    default: []
  statuses:
    description:
      - Only instances in one of these states. Empty means every state.
    type: list
    elements: str
    default: [RUNNING]
    choices: [PROVISIONING, STAGING, RUNNING, STOPPING, STOPPED, SUSPENDING, SUSPENDED, REPAIRING, TERMINATED]
  hostnames:
    description:
      - How to name each host (its C(inventory_hostname)), as a preference list; the first entry that
        gives a non-empty value wins.
      - C(name) (the instance name), C(hostname) (the instance's custom C(hostname) field, unset on most
        instances), C(public_ip), C(private_ip), C(labels.KEY) (the value of label KEY),
        or any other string, which is a Jinja2 expression over the host's C(gce_*) variables
        (for example C(gce_name ~ '.' ~ gce_zone)); expressions cost a template evaluation per host.
      - When two instances get the same name (the same instance name in two zones or projects), the
        second one is named C(NAME.ZONE) (then C(NAME.ZONE.PROJECT)) and a warning says so.
    type: list
    elements: str
    default: [name]
  address_preference:
    description:
      - Which address becomes C(ansible_host), as a preference list of C(public_ip), C(private_ip),
        C(name). Use C([private_ip]) when the controller reaches the VPC directly (VPN, IAP, peering).
      - An empty list leaves C(ansible_host) unset. O(compose) can still override it.
    type: list
    elements: str
    default: [public_ip, private_ip]
    choices: [public_ip, private_ip, name]
  builtin_groups:
    description:
      - Which built-in groups to build (see the description). An empty list builds none.
    type: list
    elements: str
    default: [tags, labels, zone, region, status, machine_type, gpu]
    choices: [tags, labels, zone, region, status, machine_type, gpu, project]
  tag_group_prefix:
    description:
      - Prefix of the groups made from network tags. With the default (empty) tag C(ai-server) gives
        group C(ai_server). A tag named like a reserved group (C(all), C(ungrouped)) always gets C(tag_).
    type: str
    default: ''
  metadata_keys:
    description:
      - Instance metadata keys whose values are exposed in C(gce_metadata). None by default, because
        metadata can hold secrets (startup scripts, ssh keys); list only keys you know hold none.
    type: list
    elements: str
    default: []
  google_cloud_compat:
    description:
      - Read an inventory file written for C(google.cloud.gcp_compute) as that plugin does, with only its
        C(plugin) line changed. The hosts also get the instance's own fields as C(google.cloud) exposes them
        (C(name), C(zone) and C(machineType) as names, C(project), C(tags), C(labels), C(networkInterfaces),
        C(status), ...), so its O(keyed_groups) (C(tags['items']), C(labels.env)), O(groups) and O(compose)
        work; O(statuses) defaults to every status and O(hostnames) to C([public_ip, private_ip, name]),
        C(google.cloud)'s defaults, unless the file sets them.
      - One difference stays, on purpose, C(metadata) holds only the keys listed in O(metadata_keys) (metadata
        can hold secrets).
      - The default (unset) turns it on for file names ending in C(gcp.yml) or C(gcp.yaml), C(google.cloud)'s
        names, and off for C(gce.yml) files. It costs about the size of the instance resource per host.
    type: bool
  page_size:
    description: C(maxResults) of each aggregatedList call (the API's maximum is 500).
    type: int
    default: 500
  api_endpoint:
    description:
      - Base URL of the Compute API, ending in C(/compute/v1/). Point it at another server (a local
        stand-in, a private endpoint) to use that instead of Google's.
    type: str
    default: https://compute.googleapis.com/compute/v1/
    env:
      - name: GCE_API_ENDPOINT
  auth_kind:
    description:
      - How to authenticate, with the names google.cloud uses. C(application) uses Application Default
        Credentials, C(serviceaccount) a service account key (O(service_account_file) or
        O(service_account_contents)), C(accesstoken) an OAuth2 access token (O(access_token)),
        C(machineaccount) the service account of the GCE VM the controller runs on
        (O(service_account_email)).
      - Credentials are checked before any API call (a missing key file is an error naming the option).
    type: str
    default: application
    choices: [application, serviceaccount, accesstoken, machineaccount]
    env:
      - name: GCP_AUTH_KIND
  service_account_file:
    description: Path of a service account JSON key file (O(auth_kind=serviceaccount)).
    type: path
    env:
      - name: GCP_SERVICE_ACCOUNT_FILE
  service_account_contents:
    description:
      - The JSON of a service account key (O(auth_kind=serviceaccount)); prefer an environment variable
        or vault to writing it into the inventory file.
    type: str
    env:
      - name: GCP_SERVICE_ACCOUNT_CONTENTS
  service_account_email:
    description: The service account to use with O(auth_kind=machineaccount) (default C(default)).
    type: str
    env:
      - name: GCP_SERVICE_ACCOUNT_EMAIL
  access_token:
    description: An OAuth2 access token (O(auth_kind=accesstoken)).
    type: str
    env:
      - name: GCP_ACCESS_TOKEN
  scopes:
    description: OAuth2 scopes to request; read-only access to Compute is all this plugin needs.
    type: list
    elements: str
    default: [https://www.googleapis.com/auth/compute.readonly]
    env:
      - name: GCP_SCOPES
  timeout:
    description: Seconds to wait for each API answer.
    type: float
    default: 30
  retries:
    description: Retries of a request answered 429 or 5xx or not answered (exponential backoff, Retry-After).
    type: int
    default: 5
notes:
  - Cache the inventory with O(cache=true) and a cache plugin such as C(ansible.builtin.jsonfile);
    a cached run makes no API call. The cache holds the compact per-instance variables (as one JSON text),
    not the raw API answer, and is ignored when O(projects), O(filters), O(metadata_keys) or
    O(api_endpoint) changed, or when it was written by another version of this plugin.
"""

EXAMPLES = r"""
# prod.gce.yml: every RUNNING instance of one project, reached at its external IP
plugin: llmops.gce_vllm.gce
projects: [my-project]
auth_kind: serviceaccount
service_account_file: ~/.config/gcloud/inventory-sa.json
---
# fleet.gce.yml: two projects, two zones, only vLLM servers, cached for 10 minutes,
# private addresses, plus a group of your own made with keyed_groups
plugin: llmops.gce_vllm.gce
projects: [team-a, team-b]
zones: [asia-northeast3-a, asia-northeast3-b]
filters:
  - labels.app = vllm
address_preference: [private_ip]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ansible-inventory
cache_timeout: 600
keyed_groups:
  - key: gce_labels.team | default('none')
    prefix: team
compose:
  ansible_user: "'ubuntu'"
---
# local.gce.yml: a local stand-in of the Compute API, stopped instances included
plugin: llmops.gce_vllm.gce
projects: [demo-project]
api_endpoint: http://127.0.0.1:8089/compute/v1/
auth_kind: accesstoken
access_token: local
statuses: []
"""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.template import is_trusted_as_template

from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GceApiError,
    GceAuthError,
    GceClient,
    GceError,
    check_project,
    check_zone,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    READONLY_SCOPES as _DEFAULT_SCOPES,
    basename as _basename,
    check_api_endpoint,
    filter_problems,
    join_filters,
    nat_ip,
    zone_region,
)

_ADDRESS_KEYS = {"public_ip": "gce_public_ip", "private_ip": "gce_private_ip", "name": "gce_name"}
_RESERVED_GROUPS = frozenset(("all", "ungrouped"))
# google.cloud.gcp_compute's inventory file names; such a file turns google_cloud_compat on unless it says otherwise
_GOOGLE_CLOUD_SUFFIXES = ("gcp.yml", "gcp.yaml")
_GOOGLE_CLOUD_HOSTNAMES = ["public_ip", "private_ip", "name"]
_CACHE_FORMAT = 3  # 3: gce_hostname, google_cloud_compat records
# A Jinja2 expression that is nothing but a variable path (gce_zone, gce_labels.team) is resolved by
# dict lookups instead of compiling it for every host, which costs ~0.5 ms per host in ansible-core 2.21.
_SIMPLE_PATH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")
_STRING_LITERAL = re.compile(r"""^\s*(?:'([^'\\{}%]*)'|"([^"\\{}%]*)")\s*$""")
_JINJA_LITERALS = frozenset(("true", "false", "none", "True", "False", "None"))
_MISS = object()


class _CountingChildren(object):
    """The inventory, counting the hosts put into groups (Constructable's keyed groups call
    inventory.add_host(host, group)), to tell which keyed_groups entries resolve on some host."""

    def __init__(self, inventory):
        self._inventory = inventory
        self.children = 0

    def add_host(self, host, group=None, port=None):
        if group is not None:
            self.children += 1
        return self._inventory.add_host(host, group, port)

    def __getattr__(self, name):
        return getattr(self._inventory, name)


def _plain(value, depth=0):
    """True when templating would return value unchanged: no string in it is a trusted template."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return not is_trusted_as_template(value)
    if depth > 4:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def google_cloud_fields(project, inst, metadata):
    """The instance's own fields as google.cloud.gcp_compute's inventory exposes them (for its keyed_groups,
    groups and compose expressions: tags['items'], labels.env, zone, networkInterfaces[0].networkIP ...):
    the API's resource with zone and machineType as names, project added, and metadata as a dict, but only
    of the keys in metadata_keys (google.cloud exposes every key; metadata can hold secrets)."""
    fields = dict((k, v) for k, v in inst.items() if k not in ("kind", "metadata"))
    if inst.get("zone"):
        fields["zone_selflink"] = inst["zone"]
        fields["zone"] = _basename(inst["zone"])
    if inst.get("machineType"):
        fields["machineType_selflink"] = inst["machineType"]
        fields["machineType"] = _basename(inst["machineType"])
    fields["project"] = project
    fields["metadata"] = dict(metadata)
    fields.setdefault("labels", {})
    fields.setdefault("tags", {"items": []})
    fields["tags"].setdefault("items", [])
    return fields


def instance_record(project, inst, metadata_keys=(), google_cloud=False):
    """The host variables of one instance resource (a dict from the Compute API), all prefixed gce_, and with
    google_cloud also its own fields as google.cloud.gcp_compute exposes them (see google_cloud_fields).

    Pure and cheap: no templating; the result is what the cache stores.
    """
    zone = _basename(inst.get("zone"))
    nics = inst.get("networkInterfaces") or ()
    nic0 = nics[0] if nics else {}
    public_ip = nat_ip(inst)
    gpus = [
        {"type": _basename(acc.get("acceleratorType")), "count": int(acc.get("acceleratorCount") or 0)}
        for acc in inst.get("guestAccelerators") or ()
    ]
    metadata = {}
    if metadata_keys:
        wanted = set(metadata_keys)
        for item in (inst.get("metadata") or {}).get("items") or ():
            if item.get("key") in wanted:
                metadata[item["key"]] = item.get("value")
    record = google_cloud_fields(project, inst, metadata) if google_cloud else {}
    record.update({
        "gce_name": inst.get("name"),
        "gce_hostname": inst.get("hostname"),
        "gce_id": inst.get("id"),
        "gce_project": project,
        "gce_zone": zone,
        "gce_region": zone_region(zone) if zone else None,
        "gce_status": inst.get("status"),
        "gce_machine_type": _basename(inst.get("machineType")),
        "gce_gpus": gpus,
        "gce_labels": dict(inst.get("labels") or {}),
        "gce_tags": list((inst.get("tags") or {}).get("items") or ()),
        "gce_private_ip": nic0.get("networkIP"),
        "gce_public_ip": public_ip,
        "gce_network": _basename(nic0.get("network")),
        "gce_self_link": inst.get("selfLink"),
        "gce_creation_timestamp": inst.get("creationTimestamp"),
        "gce_metadata": metadata,
    })
    return record


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """llmops.gce_vllm.gce inventory plugin."""

    NAME = "llmops.gce_vllm.gce"

    def __init__(self):
        super().__init__()
        self._group_names = {}
        self._paths = {}
        self._client_factory = GceClient

    # ----------------------------------------------------------------- entry points
    def verify_file(self, path):
        if not super().verify_file(path):
            return False
        base = os.path.basename(path)
        return base.endswith(("gce.yml", "gce.yaml") + _GOOGLE_CLOUD_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._group_names = {}  # groups made in this inventory
        config = self._read_config_data(path) or {}
        opts = self._validated_options(path, config)

        query = {
            "format": _CACHE_FORMAT,
            "projects": opts["projects"],
            "filter": opts["filter"],
            "api_endpoint": opts["api_endpoint"],
            "metadata_keys": opts["metadata_keys"],
            "google_cloud_compat": opts["google_cloud_compat"],
        }
        # Cacheable, as community.general's inventory plugins use it: read the cache unless the run asked
        # for fresh data (cache=False: --flush-cache, meta: refresh_inventory), write it after a fetch
        use_cache = self.get_option("cache")
        cache_key = self.get_cache_key(path)
        records = self._cached_records(cache_key, query) if use_cache and cache else None
        if records is None:
            records = self._fetch(opts)
            if use_cache:
                # the records as one JSON text: ansible-core deep-copies a cached value and encodes it part by
                # part (0.19 s for 5,000 records as a list, 0.03 s as one string)
                self._cache[cache_key] = {"query": query, "records": json.dumps(records, separators=(",", ":"))}

        self._populate(records, opts)

    def _cached_records(self, cache_key, query):
        """The records of the cache entry written for this query, or None (none, expired, another query)."""
        try:
            cached = self._cache[cache_key]
        except KeyError:
            return None
        if not isinstance(cached, dict) or cached.get("query") != query or not isinstance(cached.get("records"), str):
            return None
        try:
            return json.loads(cached["records"])
        except ValueError:
            return None

    # ----------------------------------------------------------------- options
    def _fail(self, msg):
        raise AnsibleError("%s: %s" % (self.NAME, msg))

    def _validated_options(self, path="", config=None):
        """Check every option before any API call; errors name the option and the fix."""
        config = config or {}
        compat = self.get_option("google_cloud_compat")
        if compat is None:
            compat = os.path.basename(path).endswith(_GOOGLE_CLOUD_SUFFIXES)
        projects = self.get_option("projects") or []
        if not projects:
            self._fail("option 'projects' is empty: list at least one Google Cloud project ID in the inventory file "
                       "(projects: [my-project]) or set GCP_PROJECT")
        for project in projects:
            err = check_project(project, "option 'projects'")
            if err:
                self._fail(err)
        zones = self.get_option("zones") or []
        for zone in zones:
            err = check_zone(zone, "option 'zones'")
            if err:
                self._fail(err)
        filters = [str(f).strip() for f in self.get_option("filters") or [] if f and f.strip()]
        for err in filter_problems(filters):
            self._fail(err)
        filter_expr = join_filters(filters)
        page_size = self.get_option("page_size")
        if not 1 <= page_size <= 500:
            self._fail("option 'page_size' is %s: the Compute API accepts 1 to 500" % page_size)
        hostnames = self.get_option("hostnames") or ["name"]
        if compat and "hostnames" not in config:
            hostnames = list(_GOOGLE_CLOUD_HOSTNAMES)  # google.cloud's default order
        for entry in hostnames:
            if (re.match(r"^[A-Za-z0-9_-]+$", entry) and entry not in _ADDRESS_KEYS and entry != "hostname"
                    and not entry.startswith("gce_") and not compat):
                self._fail("option 'hostnames' has %r, which is none of name, hostname, public_ip, private_ip, "
                           "labels.KEY; anything else is a Jinja2 expression over the gce_* variables, e.g. "
                           "\"gce_name ~ '.' ~ gce_zone\" (or over the instance's own fields with "
                           "google_cloud_compat: true)" % entry)
        statuses = self.get_option("statuses") or ()
        if compat and "statuses" not in config:
            statuses = ()  # google.cloud lists every status
        endpoint = self.get_option("api_endpoint")
        err = check_api_endpoint(endpoint, "option 'api_endpoint' (or GCE_API_ENDPOINT)")
        if err:
            self._fail(err)
        if not endpoint.endswith("/"):
            endpoint += "/"

        # str(): drop the config's data tags (origin, trust) from values that end up in hostvars or the
        # cache; a tagged value costs ~0.5 ms to decode from the cache, and a project ID is not a template
        return {
            "projects": [str(p) for p in projects],
            "zones": frozenset(str(z) for z in zones),
            "filter": filter_expr,
            "statuses": frozenset(str(st) for st in statuses),
            "google_cloud_compat": bool(compat),
            "page_size": page_size,
            "hostnames": list(hostnames),
            "address_preference": list(self.get_option("address_preference") or ()),
            "builtin_groups": frozenset(self.get_option("builtin_groups") or ()),
            "tag_group_prefix": self.get_option("tag_group_prefix") or "",
            "metadata_keys": sorted(str(k) for k in self.get_option("metadata_keys") or ()),
            "api_endpoint": str(endpoint),
            "auth": {
                "auth_kind": self.get_option("auth_kind"),
                "service_account_file": self.get_option("service_account_file"),
                "service_account_contents": self.get_option("service_account_contents"),
                "service_account_email": self.get_option("service_account_email"),
                "access_token": self.get_option("access_token"),
                "scopes": self.get_option("scopes") or list(_DEFAULT_SCOPES),
                "api_endpoint": endpoint,
                "timeout": self.get_option("timeout"),
                "retries": self.get_option("retries"),
            },
        }

    def _clients(self, opts):
        """One client per project, built before any API call: credentials problems surface here."""
        clients = {}
        for project in opts["projects"]:
            try:
                clients[project] = self._client_factory(project=project, **opts["auth"])
            except GceError as e:
                hint = "" if isinstance(e, GceAuthError) else " (check the plugin's options)"
                self._fail("%s%s" % (to_native(e), hint))
        return clients

    # ----------------------------------------------------------------- API
    def _fetch(self, opts):
        """Records of every instance of every project: one aggregatedList per project and page."""
        clients = self._clients(opts)
        projects = opts["projects"]
        if len(projects) == 1:
            return self._fetch_project(clients[projects[0]], projects[0], opts)
        with ThreadPoolExecutor(max_workers=min(8, len(projects))) as pool:
            results = list(pool.map(lambda p: self._fetch_project(clients[p], p, opts), projects))
        records = []
        for part in results:
            records.extend(part)
        return records

    def _fetch_project(self, client, project, opts):
        params = {"maxResults": opts["page_size"]}
        if opts["filter"]:
            params["filter"] = opts["filter"]
        metadata_keys = opts["metadata_keys"]
        started = time.monotonic()
        try:
            records = [
                instance_record(project, item, metadata_keys, opts["google_cloud_compat"])
                for _scope, item in client.aggregated_list("instances", params)
            ]
        except GceError as e:  # str(e) carries the API's status and message
            hint = ""
            status = e.status if isinstance(e, GceApiError) else None
            if status == 400 and opts["filter"]:
                hint = " Check the 'filters' option: %r." % opts["filter"]
            elif status == 403 and (e.retryable or e.reason == "quotaExceeded"):
                hint = ""  # a rate limit or quota, named in the message with what to do: no IAM problem
            elif status in (401, 403):
                hint = (" Check the credentials (auth_kind=%s) and that they may list instances in project %s "
                        "(roles/compute.viewer)." % (opts["auth"]["auth_kind"], project))
            elif status == 404:
                hint = " Check the project ID in 'projects' and 'api_endpoint'."
            raise AnsibleError("%s: listing instances of project %s failed: %s.%s"
                               % (self.NAME, project, to_native(e).rstrip("."), hint)) from None
        self.display.vvv("%s: %d instances in project %s in %.2fs"
                         % (self.NAME, len(records), project, time.monotonic() - started))
        return records

    # ----------------------------------------------------------------- private paths kept for speed
    # Two, each in one function with its measured reason; tests/unit/test_inventory_gce.py has a canary test
    # for each that fails when ansible-core changes what it relies on.
    def _set_host_variables(self, hostname, variables, fast=True):
        """Set each of `variables` on host `hostname`, as inventory.set_variable(hostname, key, value) does.

        Private path, kept for speed: one ``host.vars.update(variables)`` instead of one
        ``inventory.set_variable`` per variable. Measured with ansible-core 2.21.5 at 5,000 instances (18
        variables a host, 90,000 set_variable calls; the plugin's parse in-process as tests/bench/inv_timer.py
        times it, 5 runs each, interleaved, 2 shared CPUs): 0.39 s with the update, 1.23 s with set_variable
        (3.2x), about 9 us a call: set_variable looks the name up among groups and hosts, strips trust from and
        validates the variable name and formats a debug message, every time.

        The update does exactly what set_variable does when (a) every name is a valid variable name without
        tags (ours: the fixed gce_* names and ansible_host), (b) the host holds none of the names yet
        (set_variable merges a mapping into a mapping already there) and (c) set_variable stores the value
        untouched into ``Host.vars``. (a) holds by construction, (b) is checked here (a host that an earlier
        source of the same inventory made takes the public path), (c) is what the canary test checks.
        ``fast=False`` is the public path, for that test.
        """
        host = self.inventory.hosts.get(hostname) if fast else None
        hostvars = getattr(host, "vars", None)
        if isinstance(hostvars, dict) and hostvars.keys().isdisjoint(variables):
            hostvars.update(variables)
            return
        set_variable = self.inventory.set_variable
        for key, value in variables.items():
            set_variable(hostname, key, value)

    def _compose(self, template, variables, disable_lookups=...):
        """Constructable._compose, which compose, keyed_groups and hostnames expressions go through, with a
        shortcut: a bare variable path (gce_zone, gce_labels.team) or a quoted string is resolved by dict
        lookups, anything else is templated by ansible-core.

        Private path, kept for speed: ansible-core 2.21 compiles an expression on every call (no cache), about
        0.5 ms each. Measured at 5,000 instances with keyed_groups [{key: gce_labels.app}] and compose
        {ansible_user: "'ubuntu'"} (tests/bench/inv_timer.py, 2 loaded CPUs): 0.7 s with the shortcut, 5.6 s
        without. It relies on Constructable's helpers calling self._compose(template, variables) for compose
        and keyed_groups; the canary test fails when they stop doing so (then the shortcut would silently
        stop applying) and checks that the shortcut answers what Jinja2 answers.
        """
        value = self._resolve_simple(template, variables)
        if value is not _MISS:
            return value
        return super()._compose(template, variables)

    def _resolve_simple(self, template, variables):
        """The value of a bare variable path, or _MISS when Jinja2 must decide (anything else)."""
        if not isinstance(template, str):
            return _MISS
        path = self._paths.get(template, _MISS)
        if path is _MISS:
            match = _SIMPLE_PATH.match(template)
            literal = _STRING_LITERAL.match(template)
            path = None
            if match and match.group(1) not in _JINJA_LITERALS:
                path = [match.group(1)] + [seg for seg in match.group(2).split(".") if seg]
            elif literal:
                path = literal.group(1) if literal.group(1) is not None else literal.group(2)
            self._paths[template] = path
        if isinstance(path, str):
            return path
        if path is None or (self._vars and self.get_option("use_extra_vars")):
            return _MISS
        value = variables.get(path[0], _MISS) if isinstance(variables, dict) else _MISS
        for seg in path[1:]:
            # attribute syntax on a dict: Jinja2 tries the attribute first (items, keys, ...)
            if not isinstance(value, dict) or seg not in value or hasattr(type(value), seg):
                return _MISS
            value = value[seg]
        if value is _MISS or not _plain(value):
            return _MISS
        return value

    # ----------------------------------------------------------------- inventory (public API)
    def _group(self, name):
        """inventory.add_group of the sanitized name, once per name (zones, tags and labels repeat across
        thousands of hosts); returns the name the inventory uses."""
        group = self._group_names.get(name)
        if group is None:
            group = self.inventory.add_group(self._sanitize_group_name(name))
            self._group_names[name] = group
        return group

    def _hostname_getters(self, hostnames):
        getters = []
        for pref in hostnames:
            if pref in _ADDRESS_KEYS:
                key = _ADDRESS_KEYS[pref]
                getters.append(lambda rec, key=key: rec[key])
            elif pref == "hostname":  # the instance's custom hostname field (unset on most instances)
                getters.append(lambda rec: rec.get("gce_hostname"))
            elif pref.startswith("labels.") and re.match(r"^labels\.[a-z0-9_-]+$", pref):
                label = pref[len("labels."):]
                getters.append(lambda rec, label=label: rec["gce_labels"].get(label))
            else:
                getters.append(lambda rec, expr=pref: self._compose(expr, rec))
        return getters

    def _hostname(self, rec, getters, strict):
        """The first non-empty name the 'hostnames' preferences give, or None."""
        for getter in getters:
            try:
                hostname = getter(rec)
            except Exception as e:
                if strict:
                    self._fail("could not compute a hostname for instance %s: %s" % (rec["gce_name"], to_native(e)))
                continue
            if hostname:
                return str(hostname)
        return None

    @staticmethod
    def _builtin_group_names(rec, kinds, tag_prefix):
        """Raw (unsanitized) names of the built-in groups of one instance."""
        names = []
        if "tags" in kinds:
            for tag in rec["gce_tags"]:
                name = tag_prefix + tag
                names.append("tag_" + name if name in _RESERVED_GROUPS else name)
        if "labels" in kinds:
            for key, value in rec["gce_labels"].items():
                names.append("label_%s_%s" % (key, value))
        if "zone" in kinds and rec["gce_zone"]:
            names.append("zone_" + rec["gce_zone"])
        if "region" in kinds and rec["gce_region"]:
            names.append("region_" + rec["gce_region"])
        if "status" in kinds and rec["gce_status"]:
            names.append("status_" + rec["gce_status"].lower())
        if "machine_type" in kinds and rec["gce_machine_type"]:
            names.append("machine_type_" + rec["gce_machine_type"])
        if "gpu" in kinds:
            for gpu in rec["gce_gpus"]:
                if gpu["type"]:
                    names.append("gpu_" + gpu["type"])
        if "project" in kinds:
            names.append("project_" + rec["gce_project"])
        return names

    def _populate(self, records, opts):
        inventory = self.inventory
        zones = opts["zones"]
        statuses = opts["statuses"]
        kinds = opts["builtin_groups"]
        tag_prefix = opts["tag_group_prefix"]
        getters = self._hostname_getters(opts["hostnames"])
        address_keys = [_ADDRESS_KEYS[p] for p in opts["address_preference"]]
        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        seen = set()
        unnamed = []
        keyed_hits = [False] * len(keyed_groups or ())
        counting = _CountingChildren(inventory)
        placed = 0

        for rec in records:
            if zones and rec["gce_zone"] not in zones:
                continue
            if statuses and rec["gce_status"] not in statuses:
                continue
            hostname = self._hostname(rec, getters, strict)
            if not hostname:
                if strict:
                    self._fail("no entry of 'hostnames' gives a value for instance %s in %s; add 'name' as the last "
                               "entry" % (rec["gce_name"], rec["gce_zone"]))
                unnamed.append("%s/%s" % (rec["gce_zone"], rec["gce_name"]))
                continue
            if hostname in seen:
                unique = "%s.%s" % (hostname, rec["gce_zone"])
                if unique in seen:
                    unique = "%s.%s" % (unique, rec["gce_project"])
                self.display.warning("%s: two instances are both named %r by 'hostnames'; the one in %s/%s "
                                     "is named %r" % (self.NAME, hostname, rec["gce_project"], rec["gce_zone"], unique))
                hostname = unique
            seen.add(hostname)

            hostname = inventory.add_host(hostname)
            placed += 1
            variables = dict(rec)
            for key in address_keys:
                if rec[key]:
                    variables["ansible_host"] = rec[key]
                    break
            self._set_host_variables(hostname, variables)
            for name in self._builtin_group_names(rec, kinds, tag_prefix):
                inventory.add_child(self._group(name), hostname)

            # Constructable's helpers, each only when its option is set, in the order and over the variables
            # of ansible.builtin.constructed: the host's variables with the magic ones (inventory_hostname,
            # group_names), fetched again after compose so that groups and keyed_groups see what it set
            if compose or groups or keyed_groups:
                host = inventory.get_host(hostname)
                host_vars = host.get_vars()
                if compose:
                    self._set_composite_vars(compose, host_vars, hostname, strict=strict)
                    host_vars = host.get_vars()
                if groups:
                    self._add_host_to_composed_groups(groups, host_vars, hostname, strict=strict, fetch_hostvars=False)
                if keyed_groups:
                    # each entry on its own, through a counter of group memberships: an entry that never adds a host to
                    # a group (not even one the host is in already) resolves on no host
                    self.inventory = counting
                    try:
                        for i, keyed in enumerate(keyed_groups):
                            before = counting.children
                            self._add_host_to_keyed_groups([keyed], host_vars, hostname, strict=strict,
                                                           fetch_hostvars=False)
                            if counting.children > before:
                                keyed_hits[i] = True
                    finally:
                        self.inventory = inventory
        if placed:
            for keyed, hit in zip(keyed_groups or (), keyed_hits):
                if not hit:
                    self.display.warning(
                        "%s: keyed_groups entry with key %r put none of the %d hosts into a group (the key resolves "
                        "on no host). The host variables are the gce_* ones; the instance's own fields (tags['items'], "
                        "labels.env, as google.cloud.gcp_compute has them) come with google_cloud_compat: true"
                        % (self.NAME, keyed.get("key") if isinstance(keyed, dict) else keyed, placed))
        if unnamed:
            self.display.warning("%s: skipped %d instance(s) that no entry of 'hostnames' (%s) gives a name: %s%s"
                                 % (self.NAME, len(unnamed), ", ".join(opts["hostnames"]), ", ".join(unnamed[:5]),
                                    ", ..." if len(unnamed) > 5 else ""))
