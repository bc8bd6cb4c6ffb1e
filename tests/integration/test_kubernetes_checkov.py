"""checkov on the rendered manifests: nothing beyond the reasoned skips in tests/kubernetes/checkov-skip.yaml.

checkov is a separate tool with many pinned dependencies, so it lives in its own
virtualenv (``.venv-checkov``, or ``FLOTILLA_CHECKOV``, or ``checkov`` on PATH). It
contacts its vendor for policy metadata unless told not to; it runs here with
``--skip-download`` and inside a network namespace of its own, so it sends nothing
anywhere. Without checkov or without ``unshare``, the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flotilla.cli.kube import write_manifests
from tests.kubernetes.variants import variants

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "kubernetes"


@pytest.fixture(scope="module")
def rendered():
    return variants()


def _checkov() -> str | None:
    found = os.environ.get("FLOTILLA_CHECKOV") or shutil.which("checkov")
    local = REPO / ".venv-checkov" / "bin" / "checkov"
    return found or (str(local) if local.exists() else None)


def _skips() -> list[dict]:
    return yaml.safe_load((FIXTURES / "checkov-skip.yaml").read_text())


def _isolated(command: list[str]) -> list[str] | None:
    """checkov phones home for policy metadata: run it in a network namespace of its own (no network)."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "--net", "true"], capture_output=True).returncode != 0:
        return None
    return [unshare, "--net", *command]


def test_checkov_finds_nothing_beyond_the_skip_list(rendered, tmp_path):
    checkov = _checkov()
    if checkov is None:
        pytest.skip("checkov is not installed: set FLOTILLA_CHECKOV, put it on PATH, or "
                    "`python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov`")
    for variant, objects in rendered.items():
        write_manifests(objects, tmp_path / variant, source=variant, private=True)
    command = _isolated([checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--quiet", "--compact",
                         "--skip-download", "-o", "json"])
    if command is None:
        pytest.skip("cannot run checkov without network access here (needs `unshare --net`, i.e. root)")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f for r in reports for f in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    skips = {s["id"]: s for s in _skips()}
    unexpected = [f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})" for f in failed
                  if f["check_id"] not in skips
                  or ("resources" in skips[f["check_id"]] and f["resource"] not in skips[f["check_id"]]["resources"])]
    assert not unexpected, "\n".join(unexpected)
    assert passed > 500


def test_every_skip_has_a_reason():
    for skip in _skips():
        assert skip["id"].startswith("CKV") and len(skip["reason"]) > 40, skip
