"""The app spec: the one declarative file (``flotilla.yaml``) that describes an application.

Everything else in Flotilla reads an AppSpec and nothing else, so this package
is the only place that knows the YAML: how it is read (with line numbers),
interpolated (``${VAR}``, ``.env``), validated (every problem at once, as a
SpecError), turned back into a dict for the daemon API, and hashed per
service to decide when a container must be replaced. See docs/spec.md.
"""

from flotilla.spec.hashing import config_hash
from flotilla.spec.loader import load_spec, parse_spec, spec_from_dict
from flotilla.spec.models import (
    AppSpec,
    AutoscaleSpec,
    AutoscaleTarget,
    CacheSpec,
    GatewaySpec,
    HealthSpec,
    ResourcesSpec,
    RouteSpec,
    ServiceSpec,
    TlsSpec,
)
from flotilla.spec.serialize import spec_to_dict

__all__ = [
    "AppSpec",
    "AutoscaleSpec",
    "AutoscaleTarget",
    "CacheSpec",
    "GatewaySpec",
    "HealthSpec",
    "ResourcesSpec",
    "RouteSpec",
    "TlsSpec",
    "ServiceSpec",
    "config_hash",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "spec_to_dict",
]
