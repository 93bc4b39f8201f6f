"""The docs quote what exists and what was measured (issue 15, item 8): every name a doc gives to a module,
plugin, role or playbook exists, the lists of them are complete, and every figure or list marked as generated
equals what its source gives now (scripts/render_docs.py, tests/bench/report.py)."""
import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


def _stems(pattern):
    return {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, pattern))
            if not os.path.basename(p).startswith("__")}


MODULES = _stems("plugins/modules/*.py")
PLAYBOOKS = _stems("playbooks/*.yml")
ROLES = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "roles", "*", "meta"))}
PLUGINS = {t: _stems("plugins/%s/*.py" % t) for t in ("action", "filter", "test", "inventory", "doc_fragments",
                                                      "module_utils", "lookup", "callback")}
with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as _fh:
    ACTION_GROUPS = set((yaml.safe_load(_fh) or {}).get("action_groups") or {})
DOCS = ["README.md", "playbooks/README.md", "changelogs/changelog.yaml"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
    + glob.glob(os.path.join(ROOT, "roles", "*", "README.md")))


def _table_rows(text, heading):
    """The rows (lists of cells) of the first Markdown table after HEADING."""
    rest = text[text.index(heading):]
    rows, started = [], False
    for line in rest.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            if not re.fullmatch(r"\|[-:| ]+\|", line.strip()):   # not the |---|---| line
                rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif started:
            break
    return rows[1:]   # without the header


def _names(cell):
    return re.findall(r"`([^`]+)`", cell)


@pytest.mark.parametrize("doc", DOCS)
def test_every_fqcn_in_the_docs_exists(doc):
    known = MODULES | PLAYBOOKS | ROLES | ACTION_GROUPS | set().union(*PLUGINS.values())
    text = _read(doc)
    named = set(re.findall(r"(?<![\w.])llmops\.gce_vllm\.([a-z_][a-z0-9_]*)", text))
    missing = sorted(named - known)
    assert not missing, "%s names llmops.gce_vllm.%s, which is no module, plugin, role or playbook here" % (
        doc, ", llmops.gce_vllm.".join(missing))


def test_design_layout_names_every_plugin_and_nothing_else():
    rows = {r[0]: r[1] for r in _table_rows(_read("docs/DESIGN.md"), "## Layout")}
    problems = []
    for ptype, files in PLUGINS.items():
        keys = [k for k in rows if k.startswith("`plugins/%s/" % ptype)]
        if not keys:
            if files:
                problems.append("no row `plugins/%s/` for %s" % (ptype, sorted(files)))
            continue
        # a row of the directory names its files in the cell; a row of one file names it in the key
        named = {n[:-3] if n.endswith(".py") else n for k in keys
                 for n in (_names(rows[k]) if k.endswith("/`") else [os.path.basename(k.strip("`"))])
                 if re.fullmatch(r"[a-z][a-z0-9_]*(\.py)?", n)}
        if ptype == "modules":
            files = MODULES
        problems += ["plugins/%s/%s.py is not named" % (ptype, f) for f in sorted(files - named)]
        problems += ["plugins/%s/ names `%s`, which does not exist" % (ptype, n) for n in sorted(named - files)]
    row = rows.get("`plugins/modules/`")
    named = {n for n in _names(row or "") if re.fullmatch(r"[a-z][a-z0-9_]*", n)}
    problems += ["plugins/modules/%s.py is not named" % m for m in sorted(MODULES - named)]
    problems += ["plugins/modules/ names `%s`, which does not exist" % n for n in sorted(named - MODULES)]
    row = rows.get("`playbooks/`", "")
    named = {n[:-4] for n in _names(row) if re.fullmatch(r"[a-z_]+\.yml", n)}
    problems += ["playbooks/: %s.yml is not named" % p for p in sorted(PLAYBOOKS - named)]
    problems += ["playbooks/ names %s.yml, which does not exist" % p for p in sorted(named - PLAYBOOKS)]
    roles = {r for k in rows if k.startswith("`roles/") for r in re.findall(r"roles/([a-z_]+)", k)}
    problems += ["no row for roles/%s" % r for r in sorted(ROLES - roles)]
    assert not problems, "docs/DESIGN.md's layout table: " + "; ".join(problems)


def test_readme_tables_list_every_module_and_playbook():
    text = _read("README.md")
    modules = {_names(r[0])[0] for r in _table_rows(text, "### Modules and inventory plugin") if _names(r[0])}
    modules.discard("gce")   # inventory `gce`
    playbooks = set()
    for row in _table_rows(text, "### Playbooks"):
        for name in _names(row[0]):
            playbooks.add(name[len("llmops.gce_vllm."):] if name.startswith("llmops.gce_vllm.") else name)
    expected_playbooks = PLAYBOOKS | {"site.yml"}
    if "site" in PLAYBOOKS:   # playbooks/site.yml: the repository root's site.yml imports it
        expected_playbooks.discard("site.yml")
        playbooks.discard("site.yml")
    problems = ["module %s is not in the table" % m for m in sorted(MODULES - modules)]
    problems += ["the table names module %s, which does not exist" % m for m in sorted(modules - MODULES)]
    problems += ["playbook %s is not in the table" % p for p in sorted(expected_playbooks - playbooks)]
    problems += ["the table names playbook %s, which does not exist" % p for p in sorted(playbooks - expected_playbooks)]
    assert not problems, "README.md: " + "; ".join(problems)


def test_generated_parts_of_the_docs_match_their_sources():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "render_docs.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_steps_in_docs_are_the_steps_the_demo_prints():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import render_docs   # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    steps = render_docs.demo_steps()
    assert steps[-1].startswith("cleanup") and len(steps) == len(re.findall(r'^\s*step "', _read("scripts/demo"), re.M))
    listed = re.findall(r"^(\d+)\. ", _read("docs/demo.md").split("demo-steps -->", 1)[1].split("<!--", 1)[0], re.M)
    assert [int(n) for n in listed] == list(range(1, len(steps) + 1))


def test_benchmarks_page_is_rendered_from_its_data():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "bench", "report.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
