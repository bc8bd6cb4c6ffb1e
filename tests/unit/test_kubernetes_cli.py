"""``flotilla render kubernetes`` as a user runs it: stdout, a directory of files, usage errors, secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml
from click.testing import CliRunner

from flotilla.cli import kube
from tests.kubernetes.cli import cli

REPO = Path(__file__).resolve().parents[2]
SHOP = str(REPO / "examples" / "shop" / "flotilla.yaml")
EVERY = str(REPO / "tests" / "kubernetes" / "every-feature.yaml")


def invoke(*args):
    return CliRunner().invoke(cli, ["--home", "/nonexistent-flotilla-home", *args], catch_exceptions=False)


def test_render_to_stdout_is_multi_document_yaml():
    result = invoke("render", "kubernetes", "-f", SHOP)
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs[0]["kind"] == "Namespace" and len(docs) == 23
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Ingress", "NetworkPolicy", "StatefulSet"}


def test_render_to_a_directory_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "README.md").write_text("mine")
    (out / "99-deployment-stale.yaml").write_text(kube.GENERATED + " from old\nkind: Deployment\n")
    result = invoke("render", "kubernetes", "-f", SHOP, "-o", str(out), "--ingress", "gateway-api",
                    "--gateway", "infra/public")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert "README.md" in names and "99-deployment-stale.yaml" not in names
    assert names[0] == "00-namespace-shop.yaml" and any("httproute-web" in n for n in names)
    route = yaml.safe_load((out / next(n for n in names if "httproute" in n)).read_text())
    assert route["spec"]["parentRefs"][0] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                             "name": "public", "namespace": "infra"}


def test_gateway_api_without_a_gateway_is_a_usage_error():
    result = invoke("render", "kubernetes", "-f", SHOP, "--ingress", "gateway-api")
    assert result.exit_code == 2 and "--gateway" in result.output


def test_include_secrets_warns_and_writes_private_files(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "_lazy_vault", lambda ctx, app: lambda name: f"value-of-{name}".encode())
    result = invoke("render", "kubernetes", "-f", EVERY, "-o", str(tmp_path), "--include-secrets")
    assert result.exit_code == 0, result.output
    assert "warning: --include-secrets" in result.stderr
    secret_file = next(tmp_path.glob("*-secret-flotilla-secrets.yaml"))
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert "dmFsdWUtb2YtZGItcGFzc3dvcmQ=" in secret_file.read_text()  # base64 of value-of-db-password


def test_help_texts_have_examples():
    for command in ("render", "apply"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command
