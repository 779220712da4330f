"""MkDocs hooks of the documentation site (`mkdocs.yml`: `hooks:`): the configuration reference is
written from conf/ on every build (`tools/config_reference.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("config_reference", Path(__file__).with_name("config_reference.py"))
config_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config_reference)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    return config_reference.fill(markdown)
