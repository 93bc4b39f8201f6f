"""No role template names, as a Jinja variable, a role variable that renders that same template.

Jinja resolves every context name a template uses when its render starts, whichever branch uses it, and Ansible
renders a lazy variable when it is resolved. So a template that names a variable defined by
``lookup('ansible.builtin.template', <that template>)`` renders itself again at each level, even where the name
sits in a branch the pass skips (vllm.service.j2's digest pass), until Ansible's recursion guard stops it: with
ansible-core 2.21 it nested 53 deep and cost about 4 s of controller CPU per evaluation, three evaluations a host in
every configure run. Such a template reads the variable with ``lookup('ansible.builtin.vars', NAME)`` instead, called
only where the branch runs.
"""
import glob
import os
import re

import jinja2
import jinja2.meta
import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOOKUP = re.compile(r"""lookup\(\s*['"](?:ansible\.builtin\.)?template['"]\s*,\s*['"]([^'"]+)['"]""")


class _AnyName(dict):
    """Every filter or test name exists (Ansible's and the collection's are not plain Jinja's): only names matter."""

    def __contains__(self, key):
        return True

    def get(self, key, default=None):
        return super().get(key, lambda *args, **kwargs: None)


def _context_names(source):
    """The context names a template resolves when its render starts (Jinja's own analysis)."""
    env = jinja2.Environment()
    env.filters, env.tests = _AnyName(env.filters), _AnyName(env.tests)
    return jinja2.meta.find_undeclared_variables(env.parse(source))


def _self_rendering_vars():
    """(role, variable, template file) for each role variable whose value renders one of the role's templates."""
    found = []
    for role_dir in sorted(glob.glob(os.path.join(ROOT, "roles", "*"))):
        for vars_file in ("defaults/main.yml", "vars/main.yml"):
            path = os.path.join(role_dir, vars_file)
            if not os.path.exists(path):
                continue
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
            for name, value in data.items():
                for template in LOOKUP.findall(value if isinstance(value, str) else ""):
                    found.append((os.path.basename(role_dir), name, os.path.join(role_dir, "templates", template)))
    return found


def test_the_digest_variable_is_found():
    """The scan sees the case it guards (a scan that finds nothing would pass for nothing)."""
    assert ("vllm_server", "_vllm_server_unit_digest",
            os.path.join(ROOT, "roles", "vllm_server", "templates", "vllm.service.j2")) in _self_rendering_vars()


@pytest.mark.parametrize("role,name,template", _self_rendering_vars(), ids=os.path.basename)
def test_a_template_does_not_resolve_the_variable_that_renders_it(role, name, template):
    with open(template, encoding="utf-8") as fh:
        source = fh.read()
    names = _context_names(source)
    assert "ansible_managed" in names or "vllm_server_model" in names, sorted(names)   # the analysis sees names
    assert name not in names, (
        "%s/templates/%s names %s, which renders this template: read it with lookup('ansible.builtin.vars', '%s')"
        % (role, os.path.basename(template), name, name))
