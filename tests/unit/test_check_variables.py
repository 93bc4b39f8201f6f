"""llmops.gce_vllm.check_variables (plugins/action/check_variables.py): typos of variable names and values set on one
role that another reads (issue 15, items 3 and 4), from the collection's real argument specs."""
import os

from ansible_collections.llmops.gce_vllm.plugins.action import check_variables as cv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_specs_are_read_from_every_role_of_the_collection():
    roles = cv.load_roles()
    assert set(roles) == {d for d in os.listdir(os.path.join(ROOT, "roles"))
                          if os.path.isfile(os.path.join(ROOT, "roles", d, "meta", "argument_specs.yml"))}
    # the prefixes come from the roles, not from a hand list: the internal roles are in
    assert {"gpu_host_", "vllm_server_", "ai_server_", "gce_vllm_", "auth_proxy_", "venv_service_", "checklist_"} <= set(cv.prefixes(roles))
    assert "vllm_server_max_model_len" in cv.declared(roles)


def test_the_issue_s_typo_names_the_real_variable():
    roles = cv.load_roles()
    found = cv.unknown_variables(["vllm_server_max_model_length", "vllm_server_max_model_len"], roles)
    assert found == [("vllm_server_max_model_length", "vllm_server_max_model_len")]
    msg = cv.unknown_messages(found, roles)[0]
    assert "vllm_server_max_model_length" in msg and "did you mean vllm_server_max_model_len?" in msg


def test_every_prefix_is_checked_and_names_the_closest_of_its_own_role():
    roles = cv.load_roles()
    found = dict(cv.unknown_variables(
        ["gpu_host_min_driver_majr", "ai_server_prot", "gce_vllm_zon", "checklist_timout", "auth_proxy_nonsense_xyz"], roles))
    assert found["gpu_host_min_driver_majr"] == "gpu_host_min_driver_major"
    assert found["ai_server_prot"] == "ai_server_port"
    assert found["gce_vllm_zon"] == "gce_vllm_zone"
    assert found["checklist_timout"] == "checklist_timeout"
    assert "auth_proxy_nonsense_xyz" in found


def test_private_registered_declared_and_foreign_names_do_not_warn():
    roles = cv.load_roles()
    names = ["_vllm_server_host", "_gce_vllm_variables_checked", "vllm_server_verify_result", "vllm_server_port",
             "gce_vllm_hosts", "ansible_user", "gce_name", "my_vllm_server_thing", "vllm_server_registered_result"]
    assert cv.unknown_variables(names, roles, ignore={"vllm_server_registered_result", "vllm_server_verify_result"}) == []


def test_a_value_on_one_role_that_the_wiring_reads_is_a_problem():
    roles = cv.load_roles()
    wiring = {"ai_server_vllm_api_key": "{{ vllm_server_api_key | default('') }}",
              "ai_server_vllm_ports": "{{ [vllm_server_port, vllm_server_backend_port | default(18001)] }}"}
    readers = {"the play's vars": cv.referenced(wiring, cv.declared(roles))}
    for role in ("vllm_server", "ai_server"):
        readers["role %s" % role] = cv.referenced(roles[role]["defaults"], cv.declared(roles)) | set(roles[role]["defaults"])
    msgs = cv.scope_problems([("vllm_server", {"vllm_server_api_key", "vllm_server_port", "vllm_server_max_model_len"}),
                              ("ai_server", set())], readers, roles)
    assert len(msgs) == 2, msgs
    assert all("at play level" in m and "the play's vars" in m for m in msgs)
    assert msgs[0].startswith("vllm_server_api_key is set only on role llmops.gce_vllm.vllm_server")
    assert msgs[1].startswith("vllm_server_port ")


def test_a_value_of_another_role_given_to_a_role_is_a_problem_and_its_own_is_not():
    roles = cv.load_roles()
    msgs = cv.scope_problems([("ai_server", {"vllm_server_api_key", "ai_server_port"}), ("vllm_server", set())], {}, roles)
    assert len(msgs) == 1 and "role vllm_server reads it" in msgs[0]
    # alone in its play, a role's own parameters are fine
    assert cv.scope_problems([("vllm_server", {"vllm_server_api_key", "vllm_server_port"})], {}, roles) == []
