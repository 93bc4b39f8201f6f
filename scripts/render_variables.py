"""Render the role sections of docs/variables.md from each role's meta/argument_specs.yml (the one source).

    python scripts/render_variables.py          rewrite docs/variables.md
    python scripts/render_variables.py --check  exit 1 when docs/variables.md is not what the specs render (a unit test runs this)

Everything from the first "## <role>" heading of a host role to the end of the page is generated; the text
before it (how to set the variables, the runbook's values) is kept as written.
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ROLES = ("gpu_host", "vllm_server", "ai_server")
PAGE = os.path.join(ROOT, "docs", "variables.md")
# Defaults that do not fit in a table cell are shown as YAML below the role's table.
LONG_DEFAULT = 80


def markup(text):
    """ansible-doc markup to Markdown."""
    text = re.sub(r"L\(([^,)]+),\s*([^)]+)\)", r"[\1](\2)", text)
    text = re.sub(r"B\(([^)]*)\)", r"**\1**", text)
    text = re.sub(r"U\(([^)]*)\)", r"\1", text)
    text = re.sub(r"(?:RV|[CIOVEM])\(((?:[^()]|\([^()]*\))*)\)", r"`\1`", text)
    return text


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def describe(spec):
    desc = spec.get("description", "")
    parts = [markup(" ".join(desc) if isinstance(desc, list) else desc)]
    if spec.get("choices"):
        parts.append("choices: %s." % ", ".join("`%s`" % json.dumps(c).strip('"') for c in spec["choices"]))
    if spec.get("options"):
        keys = ["`%s`%s" % (k, " (required)" if v.get("required") else "") for k, v in spec["options"].items()]
        parts.append("Keys: %s." % ", ".join(keys))
    if spec.get("no_log"):
        parts.append("secret (`no_log`).")
    return " ".join(p for p in parts if p)


def type_of(spec):
    kind = spec.get("type", "str")
    return "list of %s" % spec["elements"] if kind == "list" and spec.get("elements") else kind


def default_of(name, spec, below):
    if spec.get("required"):
        return "**required**"
    if "default" not in spec:
        return "none"
    value = spec["default"]
    text = json.dumps(value) if not isinstance(value, str) or value == "" else value
    if isinstance(value, bool):
        text = "true" if value else "false"
    if len(text) > LONG_DEFAULT and not isinstance(value, str):
        below.append((name, value))
        return "see below"
    return "`%s`" % text


class _Indented(yaml.SafeDumper):
    """Lists indented under their key, as the rest of the docs write YAML."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def render_role(role):
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml")) as fh:
        main = yaml.safe_load(fh)["argument_specs"]["main"]
    lines = ["## %s" % role, "", main["short_description"] + ".", "",
             "| variable | type | default | description |", "|---|---|---|---|"]
    below = []
    for name, spec in main.get("options", {}).items():
        lines.append("| `%s` | %s | %s | %s |" % (name, type_of(spec), cell(default_of(name, spec, below)),
                                                  cell(describe(spec))))
    for name, value in below:
        lines += ["", "Default of `%s`:" % name, "", "```yaml",
                  yaml.dump({name: value}, Dumper=_Indented, sort_keys=False, default_flow_style=False).rstrip(), "```"]
    return lines


def render(current):
    start = current.index("\n## %s\n" % ROLES[0]) + 1
    out = []
    for role in ROLES:
        out += render_role(role) + [""]
    return current[:start] + "\n".join(out).rstrip() + "\n\n"


def main(argv):
    with open(PAGE) as fh:
        current = fh.read()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            sys.stderr.write("docs/variables.md is not what the argument specs render: run .venv/bin/python scripts/render_variables.py\n")
            return 1
        return 0
    with open(PAGE, "w") as fh:
        fh.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
