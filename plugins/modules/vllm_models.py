#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vllm_models
short_description: List the models a vLLM server serves and wait until the expected ones are there
version_added: "0.1.0"
description:
  - Reads C(GET <base>/v1/models) of a vLLM OpenAI-compatible server with the Bearer API key and returns the
    served model cards, split into base models and LoRA adapters (cards with a C(parent)).
  - With O(expected), waits up to O(timeout) seconds until every expected id is served, then fails naming
    the missing ids and what the server does serve.
  - An API key the server rejects (HTTP 401) fails at once with a clear message; the key is never shown.
  - Read-only; runs in check mode too.
author:
  - llmops team (@llmops)
options:
  base_url:
    description:
      - Base URL of the server, with or without the C(/v1) suffix, for example V(http://127.0.0.1:8001)
        or V(http://127.0.0.1:8001/v1).
    type: str
    required: true
  api_key:
    description:
      - The server's API key (vLLM C(--api-key) or C(VLLM_API_KEY)), sent as a Bearer token in the
        C(Authorization) header. Never logged or returned.
      - Leave unset for a server without a key.
    type: str
  expected:
    description: Model ids that must be served (base model name and LoRA adapter names).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for the server to answer and serve every id in O(expected).
    type: float
    default: 60
  interval:
    description: Seconds between attempts.
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
    description: Seconds one request may take.
    type: float
    default: 10
  validate_certs:
    description: Verify TLS certificates for https URLs.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Read-only; queries the server in check mode as well.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
seealso:
  - module: llmops.gce_vllm.http_health
'''

EXAMPLES = r'''
- name: Check that vLLM serves the base model and both LoRA adapters
  llmops.gce_vllm.vllm_models:
    base_url: http://127.0.0.1:8001
    api_key: "{{ vllm_server_api_key }}"
    expected:
      - LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct
      - easycontract
      - checklist
    timeout: 120
  register: served

- name: Show the adapters
  ansible.builtin.debug:
    var: served.adapters
'''

RETURN = r'''
url:
  description: The models URL that was read.
  returned: always
  type: str
  sample: http://127.0.0.1:8001/v1/models
models:
  description: The served model cards (id, root, parent, max_model_len), in the server's order.
  returned: success
  type: list
  elements: dict
  sample:
    - {id: LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct, root: LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct, parent: null, max_model_len: 8192}
    - {id: easycontract, root: temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1, parent: LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct,
       max_model_len: null}
ids:
  description: Every served id.
  returned: always
  type: list
  elements: str
  sample: [LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct, easycontract, checklist]
base_models:
  description: Ids of cards without a parent (base models).
  returned: always
  type: list
  elements: str
  sample: [LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct]
adapters:
  description: Ids of cards with a parent (LoRA adapters).
  returned: always
  type: list
  elements: str
  sample: [easycontract, checklist]
missing:
  description: Ids of O(expected) that are not served (empty on success).
  returned: always
  type: list
  elements: str
  sample: []
elapsed:
  description: Seconds spent until success or failure.
  returned: always
  type: float
  sample: 0.02
attempts:
  description: Number of requests made.
  returned: always
  type: int
  sample: 1
'''

from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.http_poll import (
    POLL_ARGUMENT_SPEC, StopPolling, http_get, poll_until, request_timeout_for, validate_poll_params)


def models_url(base_url):
    """http://h:8001, http://h:8001/, http://h:8001/v1 and http://h:8001/v1/ -> http://h:8001/v1/models."""
    base = base_url.strip().rstrip('/')
    if base.endswith('/v1/models'):
        return base
    if not base.endswith('/v1'):
        base += '/v1'
    return base + '/models'


def parse_models(payload):
    """Validate vLLM's {"object": "list", "data": [cards]} and reduce each card to id/root/parent/max_model_len."""
    if not isinstance(payload, dict) or not isinstance(payload.get('data'), list):
        raise ValueError('not an OpenAI model list (expected {"object": "list", "data": [...]})')
    cards = []
    for card in payload['data']:
        if not isinstance(card, dict) or not isinstance(card.get('id'), str):
            raise ValueError('a model card has no string "id": %r' % (card,))
        cards.append(dict(id=card['id'], root=card.get('root'), parent=card.get('parent'),
                          max_model_len=card.get('max_model_len')))
    return cards


def summarize(cards, expected):
    ids = [card['id'] for card in cards]
    return dict(models=cards, ids=ids,
                base_models=[card['id'] for card in cards if not card['parent']],
                adapters=[card['id'] for card in cards if card['parent']],
                missing=[name for name in expected if name not in ids])


def main():
    argument_spec = dict(
        base_url=dict(type='str', required=True),
        api_key=dict(type='str', no_log=True),
        expected=dict(type='list', elements='str', default=[]),
    )
    argument_spec.update(POLL_ARGUMENT_SPEC)
    argument_spec['timeout'] = dict(type='float', default=60.0)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    parts = urlsplit(params['base_url'].strip())
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        module.fail_json(msg='Invalid parameters: base_url must be an http:// or https:// URL with a host, '
                             'e.g. http://127.0.0.1:8001 (got %r).' % params['base_url'])
    if params['api_key'] is not None and (not params['api_key'].strip() or any(c in params['api_key'] for c in '\r\n')):
        module.fail_json(msg='Invalid parameters: api_key is empty or contains a line break; '
                             'pass the key the server was started with, or omit api_key for a server without one.')
    validate_poll_params(module)
    url = models_url(params['base_url'])
    headers = {'Accept': 'application/json'}
    if params['api_key']:
        headers['Authorization'] = 'Bearer ' + params['api_key']
    expected = list(dict.fromkeys(params['expected']))
    state = {'last_error': None, 'answered': False, 'summary': summarize([], expected)}

    def check(remaining):
        result = http_get(url, headers=headers, timeout=request_timeout_for(remaining, params['request_timeout']),
                          validate_certs=params['validate_certs'])
        if result.error_kind is not None:
            state['last_error'] = result.describe()
            return False, None
        if result.status == 401:
            if params['api_key']:
                raise StopPolling('API key rejected by %s (HTTP 401): the api_key given is not the key the '
                                  'vLLM server was started with (--api-key / VLLM_API_KEY).' % url)
            raise StopPolling('%s requires an API key (HTTP 401) and none was given: set api_key.' % url)
        if result.status != 200:
            state['last_error'] = 'HTTP %s: %s' % (result.status, result.text[:200])
            return False, None
        try:
            cards = parse_models(result.json())
        except ValueError as exc:
            raise StopPolling('%s answered HTTP 200 but %s; is this a vLLM server?' % (url, exc))
        state['answered'] = True
        state['summary'] = summarize(cards, expected)
        if state['summary']['missing']:
            state['last_error'] = 'missing %s' % ', '.join(state['summary']['missing'])
            return False, None
        return True, None

    try:
        outcome = poll_until(check, params['timeout'], params['interval'], params['backoff'], params['max_interval'])
    except StopPolling as exc:
        module.fail_json(msg=str(exc), url=url, changed=False, **state['summary'])
    result = dict(changed=False, url=url, elapsed=round(outcome.elapsed, 3), attempts=outcome.attempts)
    result.update(state['summary'])
    if not outcome.done:
        summary = state['summary']
        if state['answered']:
            msg = ('vLLM at %s does not serve the expected model(s) %s after %s s; it serves: %s' % (
                url, ', '.join(summary['missing']), params['timeout'], ', '.join(summary['ids']) or 'nothing'))
        else:
            msg = ('vLLM at %s did not answer with its model list within %s s (%d attempts); last result: %s' % (
                url, params['timeout'], outcome.attempts, state['last_error']))
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
