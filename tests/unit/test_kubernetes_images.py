"""Images on the Kubernetes target: digests where a deploy pinned them, pull Secrets, no builds.

Why: a cluster must run the bytes that were tested, so a pinned reference
renders as ``repo@sha256:...``; a private registry needs an image pull Secret
built from the vault's login (only when values are asked for), referenced by
every pod pulling from it; and ``build:`` has no cluster form, so it is refused
with what to do instead.
"""

from __future__ import annotations

import base64
import json

import pytest

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.engines.kubernetes.registries import PULL_SECRET_TYPE, pull_secret_name
from flotilla.errors import SpecError
from flotilla.spec import parse_spec
from flotilla.spec.models import ImagePin

REGISTRY = "127.0.0.1:5000"
REF = f"{REGISTRY}/shop/web:1"
PIN = ImagePin(id="sha256:" + "1" * 64, digest=f"{REGISTRY}/shop/web@sha256:" + "a" * 64)
TEXT = f"app: shop\nservices:\n  web: {{image: {REF}, port: 8000}}\n  api: {{image: redis:7, port: 6379}}\n"


def deployment(objects, name):
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def test_pinned_images_render_by_digest_and_others_by_tag():
    spec = parse_spec(TEXT, filename="f.yaml", environ={}).model_copy(update={"images": {REF: PIN}})
    objects = render(spec, options=RenderOptions())
    assert deployment(objects, "web")["spec"]["template"]["spec"]["containers"][0]["image"] == PIN.digest
    assert deployment(objects, "api")["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7"


def test_logged_in_registries_get_pull_secrets_referenced_by_their_pods():
    spec = parse_spec(TEXT, filename="f.yaml", environ={})
    options = RenderOptions(registry_logins=(REGISTRY, "other.example.com"))
    objects = render(spec, options=options)
    name = pull_secret_name(REGISTRY)
    assert deployment(objects, "web")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": name}]
    assert not [o for o in objects if o["kind"] == "Secret"]  # values only when asked
    with_values = render(spec, options=RenderOptions(registry_logins=(REGISTRY,), include_secrets=True,
                                                     registry_values={REGISTRY: ("ci", "pw")}))
    (secret,) = [o for o in with_values if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    assert secret["type"] == PULL_SECRET_TYPE
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config["auths"][REGISTRY]["auth"] == base64.b64encode(b"ci:pw").decode()


def test_build_is_refused_with_what_to_do():
    spec = parse_spec("app: shop\nservices:\n  web: {image: shop-web, build: ., port: 8000}\n", filename="f.yaml",
                      environ={})
    with pytest.raises(SpecError) as caught:
        render(spec, options=RenderOptions())
    (problem,) = caught.value.problems
    assert problem.path == "services.web.build" and "push the image to a registry" in str(problem)
