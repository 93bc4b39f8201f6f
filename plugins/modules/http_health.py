#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: http_health
short_description: Wait until an HTTP endpoint answers with an expected status
version_added: "0.1.0"
description:
  - Polls O(url) with GET until it answers with one of O(status_code) (and, if given, a body containing
    O(body_contains)), or until O(timeout) seconds have passed.
  - Made for services that take minutes to start, such as vLLM loading a model (3-6 min on a first start);
    connection refused, resets and non-matching statuses are retried; the first matching answer returns
    at once, so readiness is noticed within O(interval) seconds.
  - Uses the monotonic clock and sleeps only the poll interval. Read-only; runs in check mode too.
  - Requests go directly to O(url), without HTTP proxies.
author:
  - llmops team (@llmops)
options:
  url:
    description: The http or https URL to poll, for example V(http://127.0.0.1:8001/health).
    type: str
    required: true
  status_code:
    description: HTTP statuses that count as healthy.
    type: list
    elements: int
    default: [200]
  body_contains:
    description: If set, a healthy answer's body must also contain this text.
    type: str
  headers:
    description:
      - Request headers, for example C(Authorization). Never logged.
    type: dict
    default: {}
  timeout:
    description: Seconds to keep trying. V(0) means one attempt.
    type: float
    default: 300
  interval:
    description: Seconds between attempts (the first wait).
    type: float
    default: 1
  backoff:
    description: Factor applied to the wait after each attempt; V(1) keeps it fixed.
    type: float
    default: 1
  max_interval:
    description: Upper bound of the wait between attempts when O(backoff) > 1.
    type: float
    default: 10
  request_timeout:
    description: Seconds one request may take (never longer than the time left).
    type: float
    default: 10
  validate_certs:
    description: Verify TLS certificates for https URLs.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Read-only; polls in check mode as well.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
notes:
  - The module fails with the last error seen (connection refused, status, ...) when the time is up.
seealso:
  - module: llmops.gce_vllm.vllm_models
'''

EXAMPLES = r'''
- name: Wait up to 15 minutes for vLLM to load the model
  llmops.gce_vllm.http_health:
    url: http://127.0.0.1:8001/health
    timeout: 900
    interval: 1

- name: Wait for the AI server and check what its health endpoint says
  llmops.gce_vllm.http_health:
    url: http://127.0.0.1:8000/health
    status_code: [200]
    body_contains: '"vllm"'
    timeout: 60
  register: ai_health
'''

RETURN = r'''
url:
  description: The URL that was polled.
  returned: always
  type: str
  sample: http://127.0.0.1:8001/health
status:
  description: HTTP status of the last answer; null if no answer came.
  returned: always
  type: int
  sample: 200
elapsed:
  description: Seconds from the first attempt until the healthy answer (or until giving up).
  returned: always
  type: float
  sample: 2.07
attempts:
  description: Number of requests made.
  returned: always
  type: int
  sample: 3
json:
  description: The healthy answer's body decoded as JSON; null when it is empty or not JSON.
  returned: success
  type: raw
  sample: {"status": "ok"}
last_error:
  description: The last failed attempt, described in one line; null on success.
  returned: always
  type: str
  sample: connection refused ([Errno 111] Connection refused)
'''

from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.http_poll import (
    POLL_ARGUMENT_SPEC, http_get, poll_until, request_timeout_for, validate_poll_params)


def validate(module):
    params = module.params
    problems = []
    parts = urlsplit(params['url'])
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        problems.append('url must be an http:// or https:// URL with a host, got %r' % params['url'])
    if not params['status_code']:
        problems.append('status_code must list at least one status, e.g. [200]')
    bad = [code for code in params['status_code'] if not 100 <= code <= 599]
    if bad:
        problems.append('status_code entries must be HTTP statuses 100-599, got %s' % bad)
    if problems:
        module.fail_json(msg='Invalid parameters: ' + '; '.join(problems) + '.')
    validate_poll_params(module)


def main():
    argument_spec = dict(
        url=dict(type='str', required=True),
        status_code=dict(type='list', elements='int', default=[200]),
        body_contains=dict(type='str'),
        headers=dict(type='dict', default={}, no_log=True),
    )
    argument_spec.update(POLL_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    validate(module)
    params = module.params
    headers = dict((str(k), str(v)) for k, v in params['headers'].items())
    state = {'last': None, 'last_error': None}

    def check(remaining):
        result = http_get(params['url'], headers=headers,
                          timeout=request_timeout_for(remaining, params['request_timeout']),
                          validate_certs=params['validate_certs'])
        state['last'] = result
        if result.error_kind is not None:
            state['last_error'] = result.describe()
            return False, result
        if result.status not in params['status_code']:
            state['last_error'] = 'HTTP %s (expected %s)' % (
                result.status, ', '.join(str(c) for c in params['status_code']))
            return False, result
        if params['body_contains'] is not None and params['body_contains'] not in result.text:
            state['last_error'] = 'HTTP %s but the body does not contain %r' % (
                result.status, params['body_contains'])
            return False, result
        return True, result

    outcome = poll_until(check, params['timeout'], params['interval'], params['backoff'], params['max_interval'])
    last = state['last']
    output = dict(changed=False, url=params['url'], status=last.status if last else None,
                  elapsed=round(outcome.elapsed, 3), attempts=outcome.attempts)
    if not outcome.done:
        module.fail_json(msg='%s did not become healthy within %s s (%d attempts); last result: %s' % (
            params['url'], params['timeout'], outcome.attempts, state['last_error']),
            last_error=state['last_error'], **output)
    try:
        body_json = last.json() if last.body.strip() else None
    except ValueError:
        body_json = None
    module.exit_json(json=body_json, last_error=None, **output)


if __name__ == '__main__':
    main()
