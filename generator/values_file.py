"""Write values as commented YAML, laid out in the model's order."""

import textwrap

import yaml

from generator.model import Param

WIDTH = 100


def comment(text, indent, marker):
    """`text` wrapped as comment lines; only the first line carries the marker (# -- or ##)."""
    first, rest = " " * indent + marker + " ", " " * indent + marker[0] * (2 if marker == "##" else 1) + " "
    return [line.rstrip() for line in textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest)]


def dump_value(name, value, indent):
    text = yaml.safe_dump({name: value}, default_flow_style=False, sort_keys=False, width=1000, allow_unicode=False)
    return [" " * indent + line for line in text.rstrip("\n").split("\n")]


def section_lines(section, values, notes, indent, with_docs):
    lines = []
    unknown = set(values) - {child.path[-1] for child in section.children}
    if unknown:
        where = section.name + "." if section.path else ""
        raise ValueError(f"not in the values model: {', '.join(where + k for k in sorted(unknown))}")
    for child in section.children:
        name = child.path[-1]
        if name not in values:
            continue
        note = notes.get(child.name)
        if isinstance(child, Param) or not isinstance(values[name], dict):
            if with_docs and child.doc:
                lines += comment(child.doc, indent, "# --" if isinstance(child, Param) else "##")
            if note:
                lines += comment(note, indent, "#")
            lines += dump_value(name, values[name], indent)
            continue
        if indent == 0 and lines:
            lines.append("")
        if with_docs and child.doc:
            lines += comment(child.doc, indent, "##")
        if note:
            lines += comment(note, indent, "#")
        lines.append(" " * indent + f"{name}:")
        body = section_lines(child, values[name], notes, indent + 2, with_docs)
        lines += body or [" " * (indent + 2) + "{}"]
    return lines


def render(root, values, header, notes=None, with_docs=True):
    """The YAML text of `values`: `header` comment lines, then every key in model order, each with the
    model's doc (with_docs) and its note from `notes` ({"a.b": "text"}) as comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("")
    lines += section_lines(root, values, notes or {}, 0, with_docs)
    return "\n".join(lines) + "\n"
