"""docs/api-reference.md is generated from the OpenAPI document; it must not drift."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_the_api_reference_is_generated_from_the_openapi_document() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_reference.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
