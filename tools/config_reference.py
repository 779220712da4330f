"""The configuration reference, written from `conf/` itself, so the documentation cannot drift
from it: the top-level configs (`train.yaml`, `pretrain.yaml`, `prepare.yaml`) with their comments,
then every config group with each option's own description (its header comment) and its YAML.

The site's hook (`tools/mkdocs_hooks.py`) puts it where `docs/configuration.md` says
`<!-- config-reference -->`, on every build.

    python tools/config_reference.py    # print it"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "xferlab" / "conf"
MARKER = "<!-- config-reference -->"
TOP_LEVEL = ("train.yaml", "pretrain.yaml", "prepare.yaml")


def header(text: str) -> str:
    """The comment lines a config file starts with, as one paragraph (`@package` lines left out)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("#").strip()
        if not line.startswith("@package"):
            lines.append(line)
    return " ".join(lines).strip()


def groups(conf: Path = CONF) -> dict[str, list[Path]]:
    """group (a folder of conf/, `hydra/launcher` included) -> its options' files, sorted."""
    found = {}
    for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
        files = sorted(folder.glob("*.yaml"))
        if files:
            found[folder.relative_to(conf).as_posix()] = files
    return found


def fence(text: str) -> str:
    return "```yaml\n" + text.rstrip() + "\n```\n"


def render(conf: Path = CONF) -> str:
    out = ["Written from `src/xferlab/conf/` when the site is built. Pick an option with `group=option`, "
           "set any key with `key=value` (`python -m xferlab.train --help` lists the same).\n"]
    out.append("## Top-level configs\n")
    for name in TOP_LEVEL:
        path = conf / name
        if path.is_file():
            out += [f"### `{name}`\n", fence(path.read_text())]
    out.append("## Config groups\n")
    for group, files in groups(conf).items():
        out.append(f"### `{group}`\n")
        out.append("| option | what it is |\n|---|---|\n" + "".join(
            f"| [`{p.stem}`](#{slug(group, p.stem)}) | {header(p.read_text()).replace('|', '/') or '–'} |\n"
            for p in files))
        for path in files:
            out.append(f"#### `{group}={path.stem}` {{#{slug(group, path.stem)}}}\n")
            out.append(fence(path.read_text()))
    return "\n".join(out)


def slug(group: str, option: str) -> str:
    return "option-" + re.sub(r"[^a-z0-9]+", "-", f"{group}-{option}".lower()).strip("-")


def fill(markdown: str, conf: Path = CONF) -> str:
    """`markdown` with the marker replaced by the reference (unchanged without a marker)."""
    return markdown.replace(MARKER, render(conf)) if MARKER in markdown else markdown


if __name__ == "__main__":
    sys.stdout.write(render())
