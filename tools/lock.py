"""Write requirements.lock: the exact version of every package that `pip install -e '.[dev,notebook]'`
pulls in, read from the environment this runs in (the one that produced the README's numbers).

    .venv/bin/python tools/lock.py            # rewrite requirements.lock (`make lock`)
    .venv/bin/python tools/lock.py --check    # exit 1 if it is out of date

`make install` installs with `-c requirements.lock`, so a fresh clone gets these versions. The
closure is walked from pyproject.toml's dependencies and extras through each installed package's
own requirements (markers evaluated for this interpreter); a requirement that is not installed is
an error naming it, since the lock would otherwise miss it."""

from __future__ import annotations

import argparse
import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
EXTRAS = ("dev", "notebook")


def roots(pyproject: Path, extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no optional-dependencies.{extra}; the lock covers extras {extras}")
        reqs += [Requirement(r) for r in optional[extra]]
    return reqs


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """{distribution name: installed version} for the requirements and everything they need."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset()) for r in requirements]
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (parent_extras or {""})):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req} is required but not installed in {sys.prefix}; "
                             "install it (pip install -e '.[dev,notebook]') and run tools/lock.py again") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"{req}: installed {dist.version} does not satisfy it; reinstall and lock again")
        pinned[dist.metadata["Name"]] = dist.version
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return pinned


def render(pinned: dict[str, str]) -> str:
    head = [f"# requirements.lock: written by tools/lock.py (`make lock`) from the environment that produced",
            f"# the README's numbers (Python {platform.python_version()}, {sys.platform}); every package that",
            f"# pip install -e '.[{','.join(EXTRAS)}]' pulls in, at its exact version. Used as pip constraints by",
            "# `make install`; do not edit by hand."]
    body = [f"{name}=={version}" for name, version in sorted(pinned.items(), key=lambda kv: kv[0].lower())]
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if requirements.lock is out of date")
    args = parser.parse_args(argv)
    pinned = closure(roots(ROOT / "pyproject.toml", EXTRAS))
    pinned.pop("xferlab", None)
    text = render(pinned)
    if args.check:
        current = LOCK.read_text() if LOCK.exists() else ""
        if current != text:
            print(f"{LOCK} is out of date: run `make lock`", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK} ({len(pinned)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
