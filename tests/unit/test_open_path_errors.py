"""llmops.gce_vllm.open_path_errors: the one check of the service roles' *_open_paths."""
from ansible_collections.llmops.gce_vllm.plugins.filter.open_path_errors import open_path_errors


def test_good_entries_pass():
    assert open_path_errors([{"path": "/metrics", "sources": ["10.128.0.0/9", "192.0.2.7", "2001:db8::/32"]},
                             {"path": "/version", "sources": ["0.0.0.0/0"]}]) == []
    assert open_path_errors([]) == [] and open_path_errors(None) == []


def test_every_problem_is_named():
    errors = open_path_errors([
        {"path": "/metrics*", "sources": ["10.0.0.0/8"]},
        {"path": "/v1/../metrics", "sources": ["10.0.0.0/8"]},
        {"path": "/health", "sources": ["10.0.0.0/8"]},
        {"path": "/metrics", "sources": []},
        {"path": "/ping", "sources": ["10.1.2.3/8", "300.1.1.1", "example.com"]},
        {"path": "/ping", "sources": ["10.0.0.0/8"], "prefix": True},
        "/docs",
    ], variable="vllm_server_open_paths", always_open=["/health"])
    text = "\n".join(errors)
    assert "vllm_server_open_paths[0]: path '/metrics*'" in text
    assert "vllm_server_open_paths[1]: path '/v1/../metrics'" in text
    assert "vllm_server_open_paths[2]: path /health is open anyway" in text
    assert "vllm_server_open_paths[3]: sources must be a non-empty list" in text
    assert "'10.1.2.3/8'" in text and "'300.1.1.1'" in text and "'example.com'" in text
    assert "vllm_server_open_paths[5] has unknown keys prefix" in text and "listed twice" in text
    assert "vllm_server_open_paths[6] must be a dict" in text
