"""MkDocs hook: the parts of the docs that the code states, generated at build time so they cannot drift.

- ``<!-- robustcars:attacks -->``: every registered attack (name, norm, kind, source, parameters and defaults),
  from ``robustcars.registry.ATTACKS``;
- ``<!-- robustcars:suites -->``: the suites of ``attacks/*.toml``, their descriptions and entries;
- ``<!-- robustcars:help COMMAND -->``: the output of ``robustcars COMMAND --help``;
- ``<!-- robustcars:schema NAME -->``: the fields of ``robustcars/reporting/schemas/NAME.schema.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_MARK = re.compile(r"<!-- robustcars:(attacks|suites|help|schema)(?: ([\w-]+))? -->")
_ROOT = Path(__file__).resolve().parents[1]
_SCHEMAS = _ROOT / "robustcars" / "reporting" / "schemas"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(param) -> str:
    return "required" if param.required else f"default `{_cell(json.dumps(param.default))}`"


def attacks_table() -> str:
    from robustcars.registry import ATTACKS, NORMS

    lines = ["| attack | norm | kind | source | parameters: allowed values, default — meaning |",
             "| --- | --- | --- | --- | --- |"]
    for spec in ATTACKS.values():
        params = "<br>".join(f"`{p.name}`: {_cell(p.describe)}, {_default(p)} — {_cell(p.help)}"
                             for p in spec.params) or "–"
        lines.append(f"| `{spec.name}` | {NORMS[spec.norm]} | {spec.kind} | {spec.source}: {_cell(spec.summary)} "
                     f"| {params} |")
    return "\n".join(lines)


def suites_table() -> str:
    import tomllib

    lines = ["| suite | what it runs | entries (label: attack, eps) |", "| --- | --- | --- |"]
    for path in sorted((_ROOT / "attacks").glob("*.toml")):
        suite = tomllib.loads(path.read_text())
        entries = "<br>".join(f"`{a.get('label', a['name'])}`: {a['name']}, "
                              f"{', '.join(f'{e:g}' for e in a.get('eps', [])) or 'default eps'}"
                              for a in suite.get("attack", []))
        kind = " (one cascade, cheapest first)" if suite.get("cascade") else ""
        lines.append(f"| `attacks/{path.name}` | {_cell(suite.get('description', ''))}{kind} | {entries or '–'} |")
    return "\n".join(lines)


def command_help(command: str) -> str:
    from typer.testing import CliRunner

    from robustcars.cli.app import app

    result = CliRunner().invoke(app, [command, "--help"])  # 160 columns: the width the CLI sets for its help
    if result.exit_code != 0:
        raise RuntimeError(f"robustcars {command} --help failed: {result.output}")
    return "```text\n" + result.output.rstrip() + "\n```"


def _fields(schema: dict, prefix: str = "") -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        kind = sub.get("type", "")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        if "const" in sub:
            kind = f"`{json.dumps(sub['const'])}`"
        elif "enum" in sub:
            kind = "one of " + ", ".join(f"`{json.dumps(v)}`" for v in sub["enum"])
        elif "$ref" in sub:
            kind = sub["$ref"].rsplit("/", 1)[-1]
        desc = sub.get("description", "")
        rows.append(f"| `{prefix}{name}` | {_cell(kind)} | {'yes' if name in required else ''} | {_cell(desc)} |")
        if sub.get("type") == "object":
            rows += _fields(sub, f"{prefix}{name}.")
        elif sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            rows += _fields(sub["items"], f"{prefix}{name}[].")
    return rows


def schema_table(name: str) -> str:
    schema = json.loads((_SCHEMAS / f"{name}.schema.json").read_text())
    head = f"Schema `robustcars/reporting/schemas/{name}.schema.json`"
    if schema.get("description"):
        head += f": {schema['description']}"
    return "\n".join([head, "", "| field | type | required | meaning |", "| --- | --- | --- | --- |",
                      *_fields(schema)])


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    def render(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "attacks":
            return attacks_table()
        if kind == "suites":
            return suites_table()
        if kind == "help":
            return command_help(arg)
        return schema_table(arg)

    return _MARK.sub(render, markdown)
