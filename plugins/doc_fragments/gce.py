# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options shared by the GCE modules of llmops.gce_vllm (module_utils/gce.py GCE_AUTH_ARGSPEC), and
(LOAD_BALANCER: llmops.gce_vllm.gce.load_balancer) the options that name a load balancer, shared by gce_load_balancer
and gce_load_balancer_health (module_utils/gce_rules.py LOAD_BALANCER_REF_OPTIONS)."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  project:
    description:
      - The Google Cloud project ID.
      - Falls back to the E(GCP_PROJECT) environment variable.
    type: str
  auth_kind:
    description:
      - How to get credentials, with the names of C(google.cloud).
      - V(application) uses application default credentials (C(gcloud auth application-default login),
        E(GOOGLE_APPLICATION_CREDENTIALS), or the metadata server).
      - V(serviceaccount) uses a service-account key from O(service_account_file) or O(service_account_contents).
      - V(accesstoken) uses O(access_token) as it is.
      - V(machineaccount) uses the service account of the GCE VM the task runs on (O(service_account_email)).
      - Falls back to E(GCP_AUTH_KIND). Credentials are checked before any API call.
    type: str
    choices: [application, serviceaccount, accesstoken, machineaccount]
    default: application
  service_account_file:
    description:
      - Path of a service-account key JSON file, for O(auth_kind=serviceaccount). Falls back to E(GCP_SERVICE_ACCOUNT_FILE).
    type: path
  service_account_contents:
    description:
      - The service-account key itself (JSON), for O(auth_kind=serviceaccount). Falls back to E(GCP_SERVICE_ACCOUNT_CONTENTS).
    type: jsonarg
  service_account_email:
    description:
      - For O(auth_kind=machineaccount), the e-mail of the VM's service account (default C(default)).
      - Falls back to E(GCP_SERVICE_ACCOUNT_EMAIL).
    type: str
  access_token:
    description:
      - An OAuth2 access token (for example from C(gcloud auth print-access-token)), for O(auth_kind=accesstoken).
      - Falls back to E(GCP_ACCESS_TOKEN).
    type: str
  scopes:
    description:
      - OAuth2 scopes. Falls back to E(GCP_SCOPES).
    type: list
    elements: str
    default: ['https://www.googleapis.com/auth/cloud-platform']
  api_endpoint:
    description:
      - Base URL of the Compute Engine v1 REST API. When not set, E(GCE_API_ENDPOINT), then
        C(https://compute.googleapis.com/compute/v1/).
      - Point it at another server (a private endpoint, or the local stand-in of the tests) to send every
        request there; self links in answers are mapped onto it.
    type: str
  timeout:
    description:
      - Timeout of one HTTP request, in seconds.
    type: float
    default: 30
  retries:
    description:
      - How many times a request is retried on HTTP 429, 500, 502, 503, 504 and on connection errors, with
        exponential backoff and jitter (honouring C(Retry-After)). Other errors are never retried.
    type: int
    default: 5
requirements:
  - requests
  - google-auth (not needed for O(auth_kind=accesstoken))
notes:
  - "Runs on the controller (use C(connection: local) or C(delegate_to: localhost))."
'''

    # llmops.gce_vllm.gce.load_balancer: a module may add keys to an option (ansible-core merges each option's keys,
    # the module's winning): gce_load_balancer gives `instances` its own description and a default,
    # gce_load_balancer_health makes it required.
    LOAD_BALANCER = r'''
options:
  name:
    description:
      - Name of the load balancer's resources (RFC 1035) - its health check, backend service and forwarding rule; the
        instance group of each zone is O(name)C(-)ZONE.
    type: str
    required: true
  region:
    description: Region of the load balancer. Default the region of the zones of O(instances), which must be one.
    type: str
  instances:
    description: The VMs behind the load balancer, each by name and zone (their zones give its instance groups).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the VM.
        type: str
        required: true
      zone:
        description: Zone of the VM.
        type: str
        required: true
'''
