# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Compute Engine rules of llmops.gce_vllm, in one place.

Every rule that an input must follow before anything is sent to the Compute API lives here, once: resource
name, zone, project and label formats, ports, CIDR ranges, the 0.0.0.0/0 warning, the GPU rules (L4 needs G2,
no MIGRATE with a GPU, no Deep Learning VM image on G2), credentials settings; and the small helpers that read
or write Compute resources (basename, natIP, network and image paths, default scopes).

Users: the modules gce_instance, gce_firewall and gce_preflight (the whole-plan check calls the very
functions the two other modules' validation calls), the inventory plugin, and module_utils/gce.py (the client).

Every check takes the name under which the caller's user knows the input (`name=`, or a Names mapping for
the whole-plan checks), so the message names the user's variable and says how to fix it. A check returns
None (or an empty list) when the input is fine, else the message(s). Pure Python, no API call, no import of
ansible (the inventory plugin and the client use it too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# The scopes gcloud gives a VM's service account when --scopes is not given (`gcloud compute instances create
# --help`, the --scopes alias "default"); gcloud attaches the project's default compute service account with
# them when no --service-account is named. An API insert without serviceAccounts gets no service account.
GCLOUD_DEFAULT_VM_SCOPES = tuple("https://www.googleapis.com/auth/" + s for s in (
    "devstorage.read_only", "logging.write", "monitoring.write", "pubsub", "service.management.readonly",
    "servicecontrol", "trace.append"))
NO_SERVICE_ACCOUNT = "none"
READONLY_SCOPES = ("https://www.googleapis.com/auth/compute.readonly",)
AUTH_KINDS = ("application", "serviceaccount", "accesstoken", "machineaccount")

DLVM_IMAGE_PROJECT = "deeplearning-platform-release"
RECOMMENDED_GPU_IMAGE_PROJECT = "ubuntu-os-accelerator-images"
RECOMMENDED_GPU_IMAGE_FAMILY = "ubuntu-accelerator-2204-amd64-with-nvidia-580"
# machine-type families that always carry GPUs (accelerator-optimized)
GPU_MACHINE_FAMILIES = ("a2", "a3", "a4", "g2", "g4")

# API answers worth retrying with backoff and jitter. Compute answers an exceeded *rate* quota with 403 and
# reason rateLimitExceeded or userRateLimitExceeded (429 happens too); 403 quotaExceeded (a resource quota such
# as GPUS_ALL_REGIONS) and permission errors are final: retrying cannot help.
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
RATE_LIMIT_REASONS = frozenset(("rateLimitExceeded", "userRateLimitExceeded"))
MIN_BOOT_DISK_GB = 10

# Boot disk types per machine family. G2 (the L4 series): Google's GPU machine types page lists Balanced
# Persistent Disk (pd-balanced), SSD Persistent Disk (pd-ssd), Hyperdisk ML and Hyperdisk Throughput for G2, and
# the Hyperdisk Balanced page says "Hyperdisk Balanced and Hyperdisk Balanced High Availability are the only
# supported Hyperdisk types" for boot disks, which G2 does not offer: a G2 boot disk is pd-balanced or pd-ssd.
BOOT_DISK_TYPES = {"g2": ("pd-balanced", "pd-ssd")}
_SUBNETWORK_RE = re.compile(r"(?:^|/)(?:projects/([^/]+)/)?regions/([^/]+)/subnetworks/([^/]+)$")

FIREWALL_PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")

_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROJECT_RE = re.compile(r"^([a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_PORT_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$")
_MACHINE_TYPE_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_NETWORK_PATH_RE = re.compile(r"(?:^|/)((?:projects/[^/]+/)?global/networks/[^/]+)$")
_NETWORK_ID_RE = re.compile(r"(?:projects/([^/]+)/)?global/networks/([^/]+)$")
_URL_RE = re.compile(r"^https?://[^/]+")


# --------------------------------------------------------------------------------------------- names
class Names(object):
    """How messages name each input: `names` maps an option path ("instance.zone", "firewalls.0.source_ranges")
    to the name the user knows (a role variable); a path without an entry is named by the path itself.

    Names(names, "instance")("zone") -> names["instance.zone"] or "instance.zone".
    """

    def __init__(self, names=None, prefix=""):
        self.names = names or {}
        self.prefix = prefix

    def __call__(self, path):
        full = "%s.%s" % (self.prefix, path) if self.prefix else str(path)
        if full in self.names:
            return self.names[full]
        # a list element by pattern: "fleet.N.zone" -> "gce_vllm_instances[N].zone" names fleet.3.zone as
        # gce_vllm_instances[3].zone (N: the first index of the path)
        m = re.match(r"^(.*?)\.([0-9]+)(\..*)?$", full)
        if m:
            pattern = self.names.get("%s.N%s" % (m.group(1), m.group(3) or ""))
            if pattern:
                return pattern.replace("N", m.group(2))
        return full

    def sub(self, path):
        """The Names of a part of the plan (a firewall of the list, an allowed entry)."""
        return Names(self.names, "%s.%s" % (self.prefix, path) if self.prefix else str(path))


# --------------------------------------------------------------------------------------------- helpers
def basename(link):
    """The last path segment of a resource URL or path (the value itself when it has no slash)."""
    if not link:
        return link
    return str(link).rstrip("/").rsplit("/", 1)[-1]


def retryable(status, reason=None):
    """Whether an API error answer (HTTP status, error.errors[0].reason) is retried with backoff."""
    return status in RETRY_STATUSES or (status == 403 and reason in RATE_LIMIT_REASONS)


def vm_service_accounts(email=None, scopes=None):
    """The instance's serviceAccounts, as gcloud chooses them: no email -> the project's default compute
    service account ("default", which the API resolves) with gcloud's default scopes; "none" -> none."""
    if email == NO_SERVICE_ACCOUNT:
        return []
    return [{"email": email or "default", "scopes": list(scopes or GCLOUD_DEFAULT_VM_SCOPES)}]


SSH_KEYS_KEY = "ssh-keys"
# the ssh-keys lines this collection added, so that a later run removes only those (the keys are public)
MANAGED_SSH_KEYS_KEY = "llmops-gce-vllm-ssh-keys"
OS_LOGIN_KEY = "enable-oslogin"


def ssh_key_lines(value):
    """The USER:KEY lines of an ssh-keys metadata value (blank lines dropped, order kept)."""
    return [line.strip() for line in str(value or "").splitlines() if line.strip()]


def merge_ssh_keys(current, ours, ours_before=None):
    """The ssh-keys value with our lines added and the other users' kept: one value holds many USER:KEY lines,
    which gcloud compute ssh and other users add to; only the lines that we added before (ours_before) and no
    longer want are removed."""
    want = ssh_key_lines(ours)
    before = set(ssh_key_lines(ours_before))
    lines = [line for line in ssh_key_lines(current) if line not in before or line in want]
    lines.extend(line for line in want if line not in lines)
    return "\n".join(lines)


def _flag(value):
    if value is None:
        return None
    return str(value).strip().lower() in ("true", "1", "yes", "y")


def os_login_enabled(instance_metadata=None, project_metadata=None):
    """Whether OS Login is on for a VM (instance metadata enable-oslogin overrides the project's, which an
    organization policy often forces). With it on, the ssh-keys metadata is ignored."""
    for metadata in (instance_metadata or {}, project_metadata or {}):
        flag = _flag(metadata.get(OS_LOGIN_KEY))
        if flag is not None:
            return flag
    return False


OS_LOGIN_HINT = ("OS Login is on (%s metadata enable-oslogin=TRUE, often forced by the organization policy "
                 "compute.requireOsLogin): the VM ignores the ssh-keys metadata, so Ansible cannot log in with that "
                 "key. Use OS Login: grant the controller's account roles/compute.osAdminLogin (or osLogin) on the "
                 "VM or project, add its key with 'gcloud compute os-login ssh-keys add --key-file KEY.pub', and log "
                 "in as its POSIX user name ('gcloud compute os-login describe-profile'; for a service account "
                 "sa_<uniqueId>); see docs/real-gcp.md")


_FILTER_OP_RE = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\w.])(eq|ne)(?![\w.])|(!=|=|:|>|<)')


def _one_group(expr):
    """Whether expr is one parenthesized group: (a OR b), not (a) OR (b)."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    quoted = False
    for i, ch in enumerate(expr):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0 and i != len(expr) - 1:
                return False
    return True


def join_filters(filters):
    """The API's filter parameter for several filter expressions, in the API's documented form (and
    google.cloud.gcp_compute's): one expression as it is; several, each as a parenthesized group,
    juxtaposed: "(a) (b)" (each group is ANDed)."""
    filters = [str(f).strip() for f in filters or [] if f is not None and str(f).strip()]
    if len(filters) <= 1:
        return filters[0] if filters else None
    return " ".join(f if _one_group(f) else "(%s)" % f for f in filters)


def filter_problems(filters, name="option 'filters'"):
    """The API refuses a filter mixing regular-expression eq/ne expressions with =, !=, :, > or <."""
    regex, other = set(), set()
    for expr in filters or []:
        for m in _FILTER_OP_RE.finditer(str(expr)):
            if m.group(1):
                regex.add(m.group(1))
            elif m.group(2):
                other.add(m.group(2))
    if regex and other:
        return ["%s mixes regular-expression %s with %s: eq/ne expressions cannot be mixed with =, !=, :, > "
                "or < ones in one Compute API filter; write all of them with eq/ne (e.g. 'labels.app eq vllm') or none"
                % (name, "/".join(sorted(regex)), ", ".join(sorted(other)))]
    return []


def stale_precondition(status, reason=None):
    """A write refused because what it was based on changed: 412 conditionNotMet (a stale fingerprint) or
    resourceNotReady. The rule: re-read the resource and re-apply, once."""
    return status == 412 or reason in ("conditionNotMet", "resourceNotReady")


def api_error_hint(status, reason=None):
    """What a user should do about a final API error, or "" (the API's message names the quota/permission)."""
    if status == 403 and reason == "quotaExceeded":
        return ("a resource quota is exhausted (named above); retrying cannot help: request more quota "
                "(console: IAM & Admin > Quotas) or use another region/zone")
    if status in RETRY_STATUSES or (status == 403 and reason in RATE_LIMIT_REASONS):
        return ("the API's rate limit or availability: retried with backoff; raise 'retries' or try again later "
                "(a rate quota: no IAM change is needed)")
    if status == 403:
        return ("permission denied: the credentials lack the permission named above; grant a role that has it "
                "(for example roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser to provision, "
                "roles/compute.viewer to list)")
    return ""


def zone_region(zone):
    return zone.rsplit("-", 1)[0]


def machine_family(machine_type):
    return basename(machine_type or "").split("-", 1)[0]


def has_gpu(machine_type=None, accelerators=None):
    """True when a VM of `machine_type` with `accelerators` has GPUs (attached or built into the type)."""
    attached = any(int((a or {}).get("count") or 0) > 0 for a in accelerators or ())
    return attached or machine_family(machine_type) in GPU_MACHINE_FAMILIES


def nat_ip(resource):
    """The first external IP (natIP) of networkInterfaces[0] of an instance resource, or None."""
    nics = (resource or {}).get("networkInterfaces") or ()
    for conf in (nics[0] if nics else {}).get("accessConfigs") or ():
        if conf.get("natIP"):
            return conf["natIP"]
    return None


def internal_ip(resource):
    nics = (resource or {}).get("networkInterfaces") or ()
    return (nics[0] if nics else {}).get("networkIP")


def network_path(network):
    """The API path of a VPC network given by name, path or URL: global/networks/N or projects/P/global/networks/N."""
    m = _NETWORK_PATH_RE.search(network or "")
    if m:
        return m.group(1)
    return "global/networks/%s" % network


def subnetwork_path(subnetwork, zone):
    """The API path of a subnetwork given by name (in the zone's region), path or URL:
    regions/R/subnetworks/S or projects/P/regions/R/subnetworks/S; None when not given."""
    if not subnetwork:
        return None
    m = _SUBNETWORK_RE.search(subnetwork)
    if m:
        return ("projects/%s/" % m.group(1) if m.group(1) else "") + "regions/%s/subnetworks/%s" % m.group(2, 3)
    return "regions/%s/subnetworks/%s" % (zone_region(zone), subnetwork)


def check_subnetwork(subnetwork, zone, name="subnetwork", zone_name="zone"):
    """A subnetwork must be in the zone's region (a subnetwork is regional)."""
    if not subnetwork or not zone:
        return None
    m = _SUBNETWORK_RE.search(subnetwork)
    if m is None:
        if "/" in subnetwork or not _NAME_RE.match(subnetwork):
            return ("%s %r is neither a subnetwork name nor a regions/REGION/subnetworks/NAME path"
                    % (name, subnetwork))
        return None
    if m.group(2) != zone_region(zone):
        return ("%s %s is in region %s, but %s %s is in region %s: a VM's subnetwork must be in its zone's region"
                % (name, subnetwork, m.group(2), zone_name, zone, zone_region(zone)))
    return None


def check_boot_disk_type(machine_type, disk_type, name="boot_disk.type", machine_type_name="machine_type"):
    """The boot disk type the machine family supports (see BOOT_DISK_TYPES)."""
    allowed = BOOT_DISK_TYPES.get(machine_family(machine_type) or "")
    if not allowed or not disk_type or basename(disk_type) in allowed:
        return None
    family = machine_family(machine_type).upper()
    return ("%s %s cannot be the boot disk of %s %s: %s machine types boot from %s only (Google's GPU machine "
            "types documentation); use %s" % (name, basename(disk_type), machine_type_name, machine_type, family,
                                              ", ".join(allowed), " or ".join(allowed)))


def network_id(link, project):
    """(project, network name) of a network link, path or name."""
    m = _NETWORK_ID_RE.search(link or "")
    if m:
        return (m.group(1) or project, m.group(2))
    return (project, link)


def image_path(image=None, image_family=None, image_project=None, project=None):
    """The API path that resolves a boot image: an image name/URL, or images/family/FAMILY (newest image)."""
    if image:
        if "/" in image:
            return image
        return "projects/%s/global/images/%s" % (image_project or project, image)
    return "projects/%s/global/images/family/%s" % (image_project or project, image_family)


def image_problems(image, what, project, size_gb=None, name="boot_disk", size_name="boot_disk.size_gb"):
    """(errors, warnings) about an image resource the API returned for `what` (None: nothing resolved)."""
    if image is None:
        return (["%s: %s does not resolve to any usable image in project %s (families change: list them with "
                 "gcloud compute images list --project %s --no-standard-images)" % (name, what, project, project)],
                [])
    state = (image.get("deprecated") or {}).get("state")
    if state in ("OBSOLETE", "DELETED"):
        return ["%s: image %s is %s" % (name, image.get("name"), state.lower())], []
    warnings = ["boot image %s is deprecated" % image.get("name")] if state == "DEPRECATED" else []
    if size_gb is not None and image.get("diskSizeGb") and size_gb < int(image["diskSizeGb"]):
        return (["%s %s GB is smaller than image %s (%s GB)" % (size_name, size_gb, image.get("name"),
                                                                image["diskSizeGb"])], warnings)
    return [], warnings


# --------------------------------------------------------------------------------------------- formats
def check_zone(zone, name="zone"):
    """None when `zone` looks like a Compute zone (asia-northeast3-a), else the error message."""
    if not isinstance(zone, str) or not _ZONE_RE.match(zone):
        hint = (" (%s is a region, not a zone)" % zone) if isinstance(zone, str) and _REGION_RE.match(zone) else ""
        return ("%s %r is not a zone name%s; write REGION-ZONE such as asia-northeast3-a (list the zones with an L4: "
                "gcloud compute accelerator-types list --filter=name=nvidia-l4)" % (name, zone, hint))
    return None


def check_name(value, name="name"):
    """None when `value` is a valid resource name (RFC 1035: lowercase, digits, hyphens, <= 63)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        return ("%s %r is not a valid resource name; use 1-63 lowercase letters, digits and hyphens, starting "
                "with a letter and not ending with a hyphen (RFC 1035)" % (name, value))
    return None


def check_project(value, name="project"):
    if value in (None, ""):
        return ("%s (unset): a project is required; set %s (or the GCP_PROJECT environment variable) to the ID "
                "of the Google Cloud project (gcloud projects list)" % (name, name))
    if not isinstance(value, str) or not _PROJECT_RE.match(value):
        return ("%s %r is not a project ID; a project ID has 6-30 lowercase letters, digits and hyphens "
                "and starts with a letter, e.g. my-project-123 (gcloud projects list)" % (name, value))
    return None


def check_machine_type(value, name="machine_type"):
    if not isinstance(value, str) or not _MACHINE_TYPE_RE.match(basename(value) or ""):
        return "%s %r is not a machine type name; use e.g. g2-standard-4" % (name, value)
    return None


def check_ports(ports, name="ports"):
    """None when `ports` is a list of distinct "PORT" or "LOW-HIGH" entries (1 <= LOW <= HIGH <= 65535)."""
    if ports is None:
        return None
    if not isinstance(ports, (list, tuple)):
        return ("%s %s is not a port list: write a YAML list of port numbers 1-65535, e.g. [8000, 8001] "
                "(ranges as \"8000-8010\"), not a string like \"8000,8001\"" % (name, json.dumps(ports)))
    seen = set()
    for port in ports:
        text = str(port).strip() if isinstance(port, (str, int)) and not isinstance(port, bool) else None
        m = _PORT_RE.match(text) if text is not None else None
        low = int(m.group(1)) if m else 0
        high = int(m.group(2)) if m and m.group(2) else low
        if not 1 <= low <= high <= 65535:
            return ("%s %r is not a port or a port range; write a list such as [8000, 8001] or [\"8000-8001\"] "
                    "(1-65535, low before high)" % (name, port))
        if (low, high) in seen:
            return "%s lists %r twice; give each port once, e.g. [8000, 8001]" % (name, port)
        seen.add((low, high))
    return None


def check_cidrs(ranges, name="source_ranges"):
    """None when `ranges` is a list of IPv4/IPv6 CIDR ranges (host bits clear), else the message."""
    if not isinstance(ranges, (list, tuple)):
        return "%s %s is not a list of CIDR ranges; write e.g. [203.0.113.0/24]" % (name, json.dumps(ranges))
    for value in ranges:
        try:
            if "/" not in str(value):
                raise ValueError("no prefix length")
            ipaddress.ip_network(str(value), strict=True)
        except ValueError as e:
            return ("%s %r is not a CIDR range (%s); write an address with a prefix length such as "
                    "203.0.113.0/24 or 10.128.0.0/9" % (name, value, e))
    return None


def open_to_world(ranges):
    """True when a range of `ranges` is the whole IPv4 or IPv6 internet."""
    return any(str(r).strip() in ("0.0.0.0/0", "::/0") for r in ranges or ())


def check_labels(labels, name="labels"):
    if not isinstance(labels, dict):
        return "%s: expected a mapping of label keys to values, got %r" % (name, labels)
    for key, value in labels.items():
        if not _LABEL_KEY_RE.match(str(key)):
            return ("%s: key %r is not a label key; use 1-63 lowercase letters, digits, '_' and '-', starting "
                    "with a letter" % (name, key))
        if not _LABEL_VALUE_RE.match(str(value)):
            return ("%s: value %r of key %r is not a label value; use up to 63 lowercase letters, digits, "
                    "'_' and '-'" % (name, value, key))
    return None


def check_metadata_keys(metadata, name="metadata"):
    for key in metadata or {}:
        if not _METADATA_KEY_RE.match(str(key)):
            return "%s: key %r is not valid; use letters, digits, '-' and '_' (at most 128)" % (name, key)
    return None


def check_api_endpoint(value, name="api_endpoint"):
    if not isinstance(value, str) or not _URL_RE.match(value):
        return ("%s %r is not an http(s) URL; use e.g. https://compute.googleapis.com/compute/v1/ (or leave it "
                "unset)" % (name, value))
    return None


# --------------------------------------------------------------------------------------------- GPU rules
def check_gpu_setup(machine_type=None, accelerators=None, on_host_maintenance=None, image_project=None,
                    machine_type_name="machine_type", accelerators_name="accelerators",
                    maintenance_name="scheduling.on_host_maintenance", image_project_name="image_project",
                    restart_name="scheduling.automatic_restart", image_family_name="image_family"):
    """The runbook's hardware rules, checked before any API call; a list of error messages (empty = fine).

    - nvidia-l4 attaches only to G2 machine types;
    - a VM with GPUs (accelerators, or an accelerator-optimized machine type) cannot live-migrate: it needs
      on_host_maintenance TERMINATE;
    - Deep Learning VM images (deeplearning-platform-release) do not work on G2.
    """
    errors = []
    family = machine_family(machine_type) if machine_type else None
    accelerators = accelerators or []
    for acc in accelerators:
        acc_type = basename(str((acc or {}).get("type") or ""))
        if acc_type.startswith("nvidia-l4") and family and family != "g2":
            errors.append("%s %r cannot carry %s %s: NVIDIA L4 GPUs attach only to G2 machine types. Use %s "
                          "g2-standard-4 (the runbook's, 1 x L4) or another g2-standard-* type."
                          % (machine_type_name, machine_type, accelerators_name, acc_type, machine_type_name))
    if has_gpu(machine_type, accelerators) and str(on_host_maintenance or "").upper() == "MIGRATE":
        gpus = ", ".join("%s x %s" % ((a or {}).get("count") or 1, basename(str((a or {}).get("type"))))
                         for a in accelerators) or machine_type
        errors.append("%s MIGRATE is refused: a VM with GPUs (%s) cannot live-migrate, Compute Engine rejects it. "
                      "Set %s to TERMINATE (the runbook's --maintenance-policy=TERMINATE) and keep %s true."
                      % (maintenance_name, gpus, maintenance_name, restart_name))
    if image_project == DLVM_IMAGE_PROJECT and family == "g2":
        errors.append("%s %s is refused on %s: Deep Learning VM images are not compatible with G2 machine types "
                      "(creating the VM fails; the runbook's troubleshooting B-1). Use %s %s with %s %s (NVIDIA "
                      "driver 580 preinstalled)." % (image_project_name, DLVM_IMAGE_PROJECT, machine_type,
                                                     image_project_name, RECOMMENDED_GPU_IMAGE_PROJECT,
                                                     image_family_name, RECOMMENDED_GPU_IMAGE_FAMILY))
    return errors


# --------------------------------------------------------------------------------------------- credentials
def _credentials_json(path, name):
    """The parsed JSON of a credentials file; raises ValueError with the message (never the file's content)."""
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        also = "" if name == "GOOGLE_APPLICATION_CREDENTIALS" else " (or GCP_SERVICE_ACCOUNT_FILE)"
        raise ValueError("%s %s does not exist on the controller: create a service-account key (gcloud iam "
                         "service-accounts keys create FILE --iam-account=...) and set %s%s to its path"
                         % (name, path, name, also))
    try:
        with open(expanded, "rb") as f:
            data = f.read()
    except (OSError, IOError) as e:
        raise ValueError("%s %s cannot be read: %s" % (name, path, e.strerror or e))
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as e:
        # the error names a line and column, never the content
        where = "line %s column %s" % (e.lineno, e.colno) if hasattr(e, "lineno") else "not UTF-8"
        raise ValueError("%s %s is not a Google credentials file: it is not JSON (the file is not valid JSON: %s). "
                         "Set %s to a service-account key file created by 'gcloud iam service-accounts keys create'"
                         % (name, path, where, name))


def service_account_info_problem(info, source, auth_kind_name="auth_kind"):
    """None when `info` (parsed JSON) is a complete service-account key, else the message."""
    if not isinstance(info, dict) or info.get("type") != "service_account":
        kind = info.get("type") if isinstance(info, dict) else None
        return ("%s is not a service-account key: its \"type\" is %s, %s serviceaccount needs \"service_account\" "
                "(download a JSON key of the service account: IAM > Service accounts > Keys)"
                % (source, json.dumps(kind), auth_kind_name))
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        return "%s is not a complete service-account key: missing %s" % (source, ", ".join(missing))
    return None


def service_account_source_problems(service_account_file=None, service_account_contents=None, names=None):
    """(info or None, errors): the service-account key read and checked, for auth_kind serviceaccount."""
    names = names or Names()
    if service_account_contents not in (None, ""):
        if isinstance(service_account_contents, dict):
            info = service_account_contents
        else:
            try:
                info = json.loads(service_account_contents)
            except ValueError as e:
                where = "line %s column %s" % (e.lineno, e.colno)
                return None, ["%s is not valid JSON (%s); pass the whole key file created by 'gcloud iam "
                              "service-accounts keys create'" % (names("service_account_contents"), where)]
        source = names("service_account_contents")
    elif service_account_file:
        try:
            info = _credentials_json(service_account_file, names("service_account_file"))
        except ValueError as e:
            return None, [str(e)]
        source = "%s %s" % (names("service_account_file"), service_account_file)
    else:
        return None, ["%s is required with %s serviceaccount: set it (or GCP_SERVICE_ACCOUNT_FILE) to the path of "
                      "the service-account JSON key, or give %s" % (names("service_account_file"),
                                                                    names("auth_kind"),
                                                                    names("service_account_contents"))]
    err = service_account_info_problem(info, source, names("auth_kind"))
    return (None, [err]) if err else (info, [])


def api_option_problems(params, names=None, require_project=True, environ=None):
    """(errors, warnings) of the connection options (GCE_AUTH_ARGSPEC), without any API call.

    project presence and format, auth_kind and what it needs (the service-account key exists, is JSON and
    is a key; an access token), GOOGLE_APPLICATION_CREDENTIALS for auth_kind application, api_endpoint.
    """
    names = names or Names()
    environ = os.environ if environ is None else environ
    errors, warnings = [], []
    if require_project:
        err = check_project(params.get("project"), names("project"))
        if err:
            errors.append(err)
    kind = params.get("auth_kind") or "application"
    if kind not in AUTH_KINDS:
        errors.append("%s %r is unknown: use application (Application Default Credentials), serviceaccount (with "
                      "%s), accesstoken (with %s) or machineaccount (on a GCE VM)"
                      % (names("auth_kind"), kind, names("service_account_file"), names("access_token")))
    elif kind == "serviceaccount":
        errors.extend(service_account_source_problems(params.get("service_account_file"),
                                                      params.get("service_account_contents"), names)[1])
        if params.get("service_account_file") and not errors:
            warnings.extend(_readable_by_others(params["service_account_file"]))
    elif kind == "accesstoken":
        if not params.get("access_token"):
            errors.append("%s is required with %s accesstoken (or GCP_ACCESS_TOKEN), e.g. the output of 'gcloud "
                          "auth print-access-token'; keep it in vault or the environment"
                          % (names("access_token"), names("auth_kind")))
    elif kind == "application" and environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        path = environ["GOOGLE_APPLICATION_CREDENTIALS"]
        try:
            _credentials_json(path, "GOOGLE_APPLICATION_CREDENTIALS")
            warnings.extend(_readable_by_others(path))
        except ValueError as e:
            errors.append(str(e))
    if params.get("api_endpoint"):
        err = check_api_endpoint(params["api_endpoint"], names("api_endpoint"))
        if err:
            errors.append(err)
    return errors, warnings


def _readable_by_others(path):
    try:
        mode = os.stat(os.path.expanduser(path)).st_mode
    except OSError:
        return []
    if mode & 0o044:
        return ["%s is readable by group or others (mode %s): it holds a private key; chmod 600 it"
                % (path, oct(mode & 0o777))]
    return []


# --------------------------------------------------------------------------------------------- whole resources
def instance_problems(p, names=None, creating=True):
    """The rule errors of gce_instance's options `p` (a dict with that module's option names).

    `creating`: the options that describe a VM to create/reconcile (state present/started) are checked too.
    """
    names = names or Names()
    errors = []
    for err in (check_name(p.get("name"), names("name")), check_zone(p.get("zone"), names("zone"))):
        if err:
            errors.append(err)
    sched = p.get("scheduling") or {}
    boot = p.get("boot_disk") or {}
    accelerators = p.get("accelerators") or []
    if creating:
        if p.get("machine_type"):
            err = check_machine_type(p["machine_type"], names("machine_type"))
            if err:
                errors.append(err)
        for i, acc in enumerate(accelerators):
            if (acc.get("count") if acc.get("count") is not None else 1) < 1:
                errors.append("%s: must be at least 1" % names("accelerators.%d.count" % i))
        acc_name = names("accelerators.0.type") if accelerators else names("accelerators")
        errors.extend(check_gpu_setup(
            p.get("machine_type"), accelerators, sched.get("on_host_maintenance"), boot.get("image_project"),
            machine_type_name=names("machine_type"), accelerators_name=acc_name,
            maintenance_name=names("scheduling.on_host_maintenance"),
            image_project_name=names("boot_disk.image_project"),
            restart_name=names("scheduling.automatic_restart"), image_family_name=names("boot_disk.image_family")))
        err = check_boot_disk_type(p.get("machine_type"), boot.get("type"), names("boot_disk.type"),
                                   names("machine_type"))
        if err:
            errors.append(err)
        err = check_subnetwork(p.get("subnetwork"), p.get("zone"), names("subnetwork"), names("zone"))
        if err:
            errors.append(err)
        if boot.get("size_gb") is not None and boot["size_gb"] < MIN_BOOT_DISK_GB:
            errors.append("%s %s is too small: a boot disk has at least %d GB (the runbook uses 200: vLLM, the "
                          "model cache and CUDA graphs need room)" % (names("boot_disk.size_gb"), boot["size_gb"],
                                                                      MIN_BOOT_DISK_GB))
    if p.get("labels") is not None:
        err = check_labels(p["labels"], names("labels"))
        if err:
            errors.append(err)
    for tag in p.get("tags") or []:
        err = check_name(tag, names("tags"))
        if err:
            errors.append(err)
    err = check_metadata_keys(p.get("metadata"), names("metadata"))
    if err:
        errors.append(err)
    return errors


def instance_create_problems(p, names=None):
    """What creating the VM of gce_instance's options `p` needs on top of instance_problems."""
    names = names or Names()
    errors = []
    if not p.get("machine_type"):
        errors.append("%s is required to create instance %s (e.g. g2-standard-4)" % (names("machine_type"),
                                                                                     p.get("name")))
    boot = p.get("boot_disk") or {}
    if not (boot.get("image") or boot.get("image_family")):
        errors.append("%s (or %s) is required to create instance %s, e.g. image_family: %s, image_project: %s"
                      % (names("boot_disk.image_family"), names("boot_disk.image"), p.get("name"),
                         RECOMMENDED_GPU_IMAGE_FAMILY, RECOMMENDED_GPU_IMAGE_PROJECT))
    return errors


def fleet_problems(fleet, only=None, names=None):
    """The rule errors of a fleet: `fleet` a list of {name, zone} (the VMs of one plan), `only` the names of the
    members to act on (None or empty: all). Names are the VMs' identity (inventory host, instance group member):
    each is used once in the whole fleet, even across zones."""
    names = names or Names()
    errors = []
    seen = {}
    for i, member in enumerate(fleet or []):
        member_names = names.sub("fleet.%d" % i)
        for err in (check_name(member.get("name"), member_names("name")),
                    check_zone(member.get("zone"), member_names("zone"))):
            if err:
                errors.append(err)
        name = member.get("name")
        if name in seen:
            errors.append("%s %r is also the name of %s: give each VM of the fleet its own name (the inventory and "
                          "the load balancer's instance groups know a VM by its name)"
                          % (member_names("name"), name, seen[name]))
        seen.setdefault(name, member_names("name"))
    unknown = [n for n in (only or []) if n not in seen]
    if unknown:
        errors.append("%s names %s, which %s not in the fleet (%s); use the names of %s"
                      % (names("only"), ", ".join(repr(n) for n in unknown), "is" if len(unknown) == 1 else "are",
                         ", ".join(sorted(str(n) for n in seen)) or "empty", names("fleet")))
    return errors


def fleet_selection(fleet, only=None):
    """The members of `fleet` that `only` names (all when `only` is empty), in fleet order."""
    return [m for m in fleet or [] if not only or m.get("name") in only]


# Quota metrics of the GPUs (Compute's Quota.metric enum): per region, and GPUS_ALL_REGIONS for the project.
GPU_QUOTA_METRICS = {"nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
                     "nvidia-tesla-v100": "NVIDIA_V100_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
                     "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS", "nvidia-h100-80gb": "NVIDIA_H100_GPUS"}
GLOBAL_GPU_METRIC = "GPUS_ALL_REGIONS"


def quota_problems(needed, quotas, where, names_hint):
    """Errors for `needed` ({metric: GPUs the plan adds}) against `quotas` (a region's or project's quotas list
    as the API returns them: [{metric, limit, usage}]). A metric the API does not list is not checked."""
    by_metric = dict((q.get("metric"), q) for q in quotas or [])
    errors = []
    for metric in sorted(needed):
        want = needed[metric]
        quota = by_metric.get(metric)
        if not want or quota is None:
            continue
        free = float(quota.get("limit") or 0) - float(quota.get("usage") or 0)
        if want > free:
            errors.append("quota %s %s: the VMs to create need %d GPU(s), but only %d of its limit %d are free "
                          "(%d in use); request more quota (console: IAM & Admin > Quotas, or gcloud compute "
                          "regions describe), stop or delete other GPU VMs, or spread %s over other regions"
                          % (metric, where, want, max(free, 0), float(quota.get("limit") or 0),
                             float(quota.get("usage") or 0), names_hint))
    return errors


# Where Google's health-check probes of a backend service-based external passthrough Network Load Balancer come
# from (https://cloud.google.com/load-balancing/docs/firewall-rules, row "External passthrough Network Load
# Balancer"): the firewall must admit them on the health-check port. 130.211.0.0/22 (with 35.191.0.0/16) is
# the list of the proxy-based and internal load balancers, not of this one.
NLB_HEALTH_CHECK_RANGES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")


def load_balancer_problems(p, names=None):
    """The rule errors of gce_load_balancer's options `p` (no API call): names, one region for every member,
    ports, health-check timing (timeout <= interval, thresholds 1..10), the draining timeout."""
    names = names or Names()
    errors = []
    err = check_name(p.get("name"), names("name"))
    if err:
        errors.append(err)
    instances = p.get("instances") or []
    if p.get("state", "present") == "present" and not instances:
        errors.append("%s is empty: the load balancer needs at least one VM" % names("instances"))
    regions = {}
    for i, inst in enumerate(instances):
        for e in (check_name(inst.get("name"), names("instances.%d.name" % i)),
                  check_zone(inst.get("zone"), names("instances.%d.zone" % i))):
            if e:
                errors.append(e)
        if isinstance(inst.get("zone"), str) and _ZONE_RE.match(inst["zone"]):
            regions.setdefault(zone_region(inst["zone"]), []).append(inst.get("name"))
    region = p.get("region")
    if region and not _REGION_RE.match(region):
        errors.append("%s %r is not a region name (for example asia-northeast3)" % (names("region"), region))
    if len(regions) > 1 or (region and regions and set(regions) != {region}):
        errors.append("%s: an external passthrough Network Load Balancer is regional and its backends must be in its "
                      "region%s, but the VMs are in %s; keep the fleet in one region (zones of one region), or make "
                      "one load balancer per region" % (
                          names("instances"), " (%s)" % region if region else "",
                          "; ".join("%s: %s" % (r, ", ".join(map(str, v))) for r, v in sorted(regions.items()))))
    if p.get("state", "present") == "present" and not region and not regions:
        errors.append("%s is required without %s" % (names("region"), names("instances")))
    group_names = set("%s-%s" % (p.get("name"), inst.get("zone")) for inst in instances)
    for group in sorted(group_names):
        if len(group) > 63:
            errors.append("%s %r gives the instance group name %r, longer than 63 characters; use a shorter name"
                          % (names("name"), p.get("name"), group))
    for key in ("port",):
        value = p.get(key)
        if value is not None and not 1 <= int(value) <= 65535:
            errors.append("%s %s is not a port (1-65535)" % (names(key), value))
    hc = p.get("health_check") or {}
    if hc.get("port") is not None and not 1 <= int(hc["port"]) <= 65535:
        errors.append("%s %s is not a port (1-65535)" % (names("health_check.port"), hc["port"]))
    path = hc.get("request_path")
    if path is not None and (not str(path).startswith("/") or any(c.isspace() for c in str(path))):
        errors.append("%s %r must be a path starting with / (the readiness path, /ready)"
                      % (names("health_check.request_path"), path))
    interval, timeout = hc.get("check_interval_sec"), hc.get("timeout_sec")
    if interval is not None and not 1 <= interval <= 300:
        errors.append("%s %s must be 1..300 seconds" % (names("health_check.check_interval_sec"), interval))
    if timeout is not None and interval is not None and not 1 <= timeout <= interval:
        errors.append("%s %s must be at least 1 and at most %s %s (Compute refuses a timeout longer than the interval)"
                      % (names("health_check.timeout_sec"), timeout, names("health_check.check_interval_sec"),
                         interval))
    for key in ("healthy_threshold", "unhealthy_threshold"):
        value = hc.get(key)
        if value is not None and not 1 <= value <= 10:
            errors.append("%s %s must be 1..10 consecutive probes" % (names("health_check.%s" % key), value))
    drain = p.get("draining_timeout_sec")
    if drain is not None and not 0 <= drain <= 3600:
        errors.append("%s %s must be 0..3600 seconds" % (names("draining_timeout_sec"), drain))
    seen = {}
    for i, inst in enumerate(instances):
        if inst.get("name") in seen:
            errors.append("%s %r is also %s: each VM once"
                          % (names("instances.%d.name" % i), inst.get("name"), seen[inst["name"]]))
        seen.setdefault(inst.get("name"), names("instances.%d.name" % i))
    return errors


def describe_allowed(allowed):
    """'tcp:8000,8001' for an allowed list (as the user wrote it; a string of ports is shown as it is)."""
    def ports(rule):
        value = rule.get("ports") or ["all"]
        return value if isinstance(value, str) else ",".join(str(x) for x in value)
    return ", ".join("%s:%s" % (r.get("ip_protocol"), ports(r)) for r in allowed or [])


def firewall_problems(p, names=None):
    """(errors, warnings) of gce_firewall's options `p` (a dict with that module's option names)."""
    names = names or Names()
    errors, warnings = [], []
    err = check_name(p.get("name"), names("name"))
    if err:
        errors.append(err)
    if (p.get("state") or "present") != "present":
        return errors, warnings
    direction = p.get("direction") or "INGRESS"
    priority = p.get("priority")
    if priority is not None and not 0 <= priority <= 65535:
        errors.append("%s %s is out of range; use 0 (highest) to 65535 (default 1000)" % (names("priority"), priority))
    if not p.get("allowed"):
        errors.append("%s: required with state=present, e.g. [{ip_protocol: tcp, ports: ['8000', '8001']}]"
                      % names("allowed"))
    for i, rule in enumerate(p.get("allowed") or []):
        proto = str(rule.get("ip_protocol")).lower()
        if proto not in FIREWALL_PROTOCOLS and not proto.isdigit():
            errors.append("%s %r is not one of %s or a protocol number"
                          % (names("allowed.%d.ip_protocol" % i), rule.get("ip_protocol"),
                             ", ".join(FIREWALL_PROTOCOLS)))
        if rule.get("ports"):
            ports_name = names("allowed.%d.ports" % i)
            if proto not in PORT_PROTOCOLS:
                errors.append("%s: ports apply only to tcp, udp and sctp, not %s" % (ports_name, proto))
            err = check_ports(rule["ports"], ports_name)
            if err:
                errors.append(err)
    for key in ("source_ranges", "destination_ranges"):
        if p.get(key) is not None:
            err = check_cidrs(p[key], names(key))
            if err:
                errors.append(err)
    for key in ("source_tags", "target_tags"):
        for tag in p.get(key) or []:
            err = check_name(tag, names(key))
            if err:
                errors.append(err)
    if direction == "INGRESS" and not p.get("source_ranges") and not p.get("source_tags"):
        errors.append("%s (unset): required for an INGRESS rule, there is no default (the API would otherwise open "
                      "%s to 0.0.0.0/0, the whole internet). Write the list of CIDR ranges allowed to reach %s, "
                      "e.g. [203.0.113.0/24] for your office or your backend's egress address; 0.0.0.0/0 is "
                      "accepted only when you write it yourself." % (names("source_ranges"), p.get("name"),
                                                                     describe_allowed(p.get("allowed"))))
    if direction == "EGRESS" and p.get("source_tags"):
        errors.append("%s: not allowed on an EGRESS rule" % names("source_tags"))
    if open_to_world(p.get("source_ranges")):
        tags = p.get("target_tags")
        warnings.append("%s contains 0.0.0.0/0: firewall rule %s opens %s of %s to the whole internet. Narrow it to "
                        "the networks that need access." % (
                            names("source_ranges"), p.get("name"), describe_allowed(p.get("allowed")),
                            ("every VM tagged %s" % ", ".join(tags)) if tags else "every VM of the network"))
    return errors, warnings


def plan_problems(instance=None, firewalls=None, names=None):
    """(errors, warnings) of a whole plan: the VM (gce_instance's options; to be created unless its `state` is
    started, stopped or absent, when only what that needs is checked) and the firewall rules (gce_firewall's
    options), with the checks of those modules and the checks across them."""
    names = names or {}
    errors, warnings = [], []
    creating = instance is not None and (instance.get("state") or "present") == "present"
    if instance is not None:
        inst_names = Names(names, "instance")
        errors.extend(instance_problems(instance, inst_names, creating=creating))
        if creating:
            errors.extend(instance_create_problems(instance, inst_names))
    seen = {}
    for i, fw in enumerate(firewalls or []):
        fw_names = Names(names, "firewalls.%d" % i)
        fw_errors, fw_warnings = firewall_problems(fw, fw_names)
        errors.extend(fw_errors)
        warnings.extend(fw_warnings)
        if fw.get("name") in seen:
            errors.append("%s %r is also the name of %s: give each firewall rule its own name"
                          % (fw_names("name"), fw.get("name"), seen[fw["name"]]))
        seen.setdefault(fw.get("name"), fw_names("name"))
        targets = fw.get("target_tags") or []
        if creating and targets and (fw.get("state") or "present") == "present" \
                and not set(targets) & set(instance.get("tags") or []):
            warnings.append("firewall rule %s targets the tags %s, which instance %s does not carry (%s): the rule "
                            "will not apply to it" % (fw.get("name"), ", ".join(targets), instance.get("name"),
                                                      Names(names, "instance")("tags")))
    return errors, warnings


# --------------------------------------------------------------------------------------------- option specs
# The options of gce_instance and gce_firewall (argument_spec form, without the connection options), shared
# with gce_preflight's `instance` and `firewalls` so that a plan is described with the very same options.
INSTANCE_OPTIONS = dict(
    name=dict(type="str", required=True),
    zone=dict(type="str", required=True),
    machine_type=dict(type="str"),
    accelerators=dict(type="list", elements="dict", default=[], options=dict(
        type=dict(type="str", required=True),
        count=dict(type="int", default=1),
    )),
    boot_disk=dict(type="dict", options=dict(
        image=dict(type="str"),
        image_family=dict(type="str"),
        image_project=dict(type="str"),
        size_gb=dict(type="int", default=MIN_BOOT_DISK_GB),
        type=dict(type="str", default="pd-balanced"),
        auto_delete=dict(type="bool", default=True),
    ), mutually_exclusive=[("image", "image_family")]),
    scheduling=dict(type="dict", options=dict(
        on_host_maintenance=dict(type="str", choices=["TERMINATE", "MIGRATE"]),
        automatic_restart=dict(type="bool", default=True),
    )),
    network=dict(type="str", default="default"),
    subnetwork=dict(type="str"),
    external_ip=dict(type="bool", default=True),
    tags=dict(type="list", elements="str"),
    labels=dict(type="dict"),
    metadata=dict(type="dict"),
    service_account_email=dict(type="str"),
    service_account_scopes=dict(type="list", elements="str", default=list(GCLOUD_DEFAULT_VM_SCOPES)),
)

FIREWALL_OPTIONS = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    network=dict(type="str", default="default"),
    direction=dict(type="str", choices=["INGRESS", "EGRESS"], default="INGRESS"),
    priority=dict(type="int", default=1000),
    allowed=dict(type="list", elements="dict", options=dict(
        ip_protocol=dict(type="str", required=True),
        ports=dict(type="list", elements="str"),
    )),
    source_ranges=dict(type="list", elements="str"),
    source_tags=dict(type="list", elements="str"),
    destination_ranges=dict(type="list", elements="str"),
    target_tags=dict(type="list", elements="str"),
    description=dict(type="str"),
)

# A VM named by its name and zone: a load balancer's members (gce_load_balancer, gce_load_balancer_health) and the
# members of a fleet (gce_preflight's `fleet`).
VM_REF_OPTIONS = dict(
    name=dict(type="str", required=True),
    zone=dict(type="str", required=True),
)

# What names a load balancer, in gce_load_balancer and in gce_load_balancer_health (which makes `instances` required);
# their DOCUMENTATION: the doc fragment llmops.gce_vllm.gce.load_balancer.
LOAD_BALANCER_REF_OPTIONS = dict(
    name=dict(type="str", required=True),
    region=dict(type="str"),
    instances=dict(type="list", elements="dict", options=VM_REF_OPTIONS),
)

# The options of gce_load_balancer (argument_spec form, without the connection options), shared with
# gce_preflight's `load_balancer`. Modules take a deep copy.
LOAD_BALANCER_OPTIONS = dict(
    name=LOAD_BALANCER_REF_OPTIONS["name"],
    state=dict(type="str", choices=["present", "absent"], default="present"),
    region=LOAD_BALANCER_REF_OPTIONS["region"],
    network=dict(type="str", default="default"),
    instances=dict(LOAD_BALANCER_REF_OPTIONS["instances"], default=[]),
    port=dict(type="int", default=8000),
    health_check=dict(type="dict", default={}, options=dict(
        port=dict(type="int"),
        request_path=dict(type="str", default="/ready"),
        check_interval_sec=dict(type="int", default=5),
        timeout_sec=dict(type="int", default=5),
        healthy_threshold=dict(type="int", default=2),
        unhealthy_threshold=dict(type="int", default=2),
    )),
    draining_timeout_sec=dict(type="int", default=60),
    description=dict(type="str", default="AI server load balancer (managed by llmops.gce_vllm)"),
)
