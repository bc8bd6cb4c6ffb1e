"""Broken specs: each asserts the exact, complete list of rendered problems.

The rendering is ``FILE:LINE:COLUMN: dotted.path: what is wrong; what to do``;
these strings are what a user reads, so they are pinned here word for word.
Several specs carry many problems to show that all are reported at once.
"""

from __future__ import annotations

import re

import pytest
import yaml

from flotilla.errors import SpecError
from flotilla.spec import parse_spec, spec_from_dict

ENVIRON = {"PORT": "8000", "HOME": "/root"}

CASES = [
    pytest.param(
        """\
app: shop
services:
  web: {image: x
""",
        [
            ("flotilla.yaml:4:1: (top): invalid YAML: while parsing a flow mapping, expected ',' "
             "or '}', but got '<stream end>' (started on line 3); check the indentation, colons "
             'and quotes around this position'),
        ],
        id='yaml_syntax_error',
    ),
    pytest.param(
        'app: shop\nservices:\n\tweb: {image: x}\n',
        [
            ('flotilla.yaml:3:1: (top): invalid YAML: while scanning for the next token, found '
             "character '\\t' that cannot start any token; indent with spaces, not tabs"),
        ],
        id='tab_indentation',
    ),
    pytest.param(
        """\
""",
        [
            ('flotilla.yaml:1:1: (top): the spec is empty; start with app: <name> and services: '
             'with at least one service'),
        ],
        id='empty_file',
    ),
    pytest.param(
        """\
# nothing here yet

""",
        [
            ('flotilla.yaml:1:1: (top): the spec is empty; start with app: <name> and services: '
             'with at least one service'),
        ],
        id='only_comments',
    ),
    pytest.param(
        """\
- app: shop
""",
        [
            ('flotilla.yaml:1:1: (top): expected a mapping, got a list; give a mapping with the '
             'keys app, gateway, services, caches, pull, acme, jobs'),
        ],
        id='top_level_list',
    ),
    pytest.param(
        """\
shop
""",
        [
            ("flotilla.yaml:1:1: (top): expected a mapping, got a string ('shop'); give a "
             'mapping with the keys app, gateway, services, caches, pull, acme, jobs'),
        ],
        id='top_level_scalar',
    ),
    pytest.param(
        """\
app: shop
services: {web: {image: x}}
---
app: other
""",
        [
            ('flotilla.yaml:3:1: (top): invalid YAML: expected a single document in the stream, '
             'but found another document (started on line 1); keep one document per file: remove '
             "the second '---'"),
        ],
        id='two_documents',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    env:
      A: "1"
      A: "2"
  web: {image: y}
""",
        [
            ("flotilla.yaml:7:7: services.web.env.A: duplicate key 'A' (first defined on line "
             '6); remove one of them, or merge their contents'),
            ("flotilla.yaml:8:3: services.web: duplicate key 'web' (first defined on line 3); "
             'remove one of them, or merge their contents'),
        ],
        id='duplicate_keys',
    ),
    pytest.param(
        """\
app: shop
version: 3
services:
  web:
    image: x
    replics: 2
    helth: {path: /}
""",
        [
            ("flotilla.yaml:2:1: version: unknown key 'version'; allowed keys: app, gateway, "
             'services, caches, pull, acme, jobs'),
            ("flotilla.yaml:6:5: services.web.replics: unknown key 'replics'; did you mean "
             "'replicas'?"),
            "flotilla.yaml:7:5: services.web.helth: unknown key 'helth'; did you mean 'health'?",
        ],
        id='unknown_keys',
    ),
    pytest.param(
        """\
gateway: {listen: "127.0.0.1:8080"}
""",
        [
            ("flotilla.yaml:1:1: app: missing required key 'app'; add app: the application's "
             'name, e.g. app: shop'),
            ("flotilla.yaml:1:1: services: missing required key 'services'; add services: with "
             'at least one service and its image'),
        ],
        id='missing_app_and_services',
    ),
    pytest.param(
        """\
app: My_Shop
services: {web: {image: x}}
""",
        [
            ("flotilla.yaml:1:6: app: invalid app name 'My_Shop'; use lowercase letters, digits "
             "and '-', starting with a letter and not ending with '-', at most 30 characters, "
             "e.g. 'my-shop'"),
        ],
        id='bad_app_name',
    ),
    pytest.param(
        """\
app: a-very-long-application-name-indeed
services:
  web-: {image: x}
  1st: {image: x}
""",
        [
            ("flotilla.yaml:1:6: app: invalid app name 'a-very-long-application-name-indeed'; "
             "use lowercase letters, digits and '-', starting with a letter and not ending with "
             "'-', at most 30 characters, e.g. 'a-very-long-application-name-i'"),
            ("flotilla.yaml:3:3: services.web-: invalid service name 'web-'; use lowercase "
             "letters, digits and '-', starting with a letter and not ending with '-', at most "
             "30 characters, e.g. 'web'"),
            ("flotilla.yaml:4:3: services.1st: invalid service name '1st'; use lowercase "
             "letters, digits and '-', starting with a letter and not ending with '-', at most "
             '30 characters'),
        ],
        id='app_name_too_long_and_trailing_dash',
    ),
    pytest.param(
        """\
app: 42
services: {web: {image: x}}
""",
        [
            ('flotilla.yaml:1:6: app: expected a string, got an integer (42); use lowercase '
             "letters, digits and '-', starting with a letter and not ending with '-', at most "
             '30 characters'),
        ],
        id='app_not_a_string',
    ),
    pytest.param(
        """\
app: shop
services: {}
""",
        [
            ('flotilla.yaml:2:11: services: must not be empty; add a service, e.g. services: '
             '{web: {image: shop-web:1}}'),
        ],
        id='services_empty',
    ),
    pytest.param(
        """\
app: shop
services:
  - web
""",
        [
            ('flotilla.yaml:3:3: services: expected a mapping, got a list; give a mapping of '
             'service names to settings, e.g. services: {web: {image: shop-web:1}}'),
        ],
        id='services_a_list',
    ),
    pytest.param(
        """\
app: shop
services:
  web: shop-web:1
""",
        [
            ("flotilla.yaml:3:8: services.web: expected a mapping, got a string ('shop-web:1'); "
             'give a mapping with the keys image, command, port, replicas, env, health, deploy, '
             'resources, egress, routes, max_body, secrets, autoscale, caches, user, read_only, cap_add, pids_limit, '
             'concurrency, queue_timeout, before_deploy, volumes, allow_host_paths, backup, pull, build, standby'),
        ],
        id='service_not_a_mapping',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {port: 80}
  b: {image: "shop web:1"}
  c: {image: 7}
  d: {image: ""}
""",
        [
            ("flotilla.yaml:3:3: services.a.image: missing required key 'image'; add image: the "
             'container image to run, e.g. shop-web:1'),
            ('flotilla.yaml:4:14: services.b.image: must be non-empty and without spaces, got '
             "'shop web:1'; give the image to run, e.g. shop-web:1"),
            ('flotilla.yaml:5:14: services.c.image: expected a string, got an integer (7); give '
             'the image to run, e.g. shop-web:1'),
            ('flotilla.yaml:6:14: services.d.image: must be non-empty and without spaces, got '
             "''; give the image to run, e.g. shop-web:1"),
        ],
        id='image_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {image: x, port: true}
  b: {image: x, port: "8000"}
  c: {image: x, port: 0}
  d: {image: x, port: 70000}
  e: {image: x, port: }
""",
        [
            ('flotilla.yaml:3:23: services.a.port: expected an integer, got a boolean (true); '
             'use a whole number from 1 to 65535'),
            ("flotilla.yaml:4:23: services.b.port: expected an integer, got a string ('8000'); "
             'remove the quotes: write the number itself'),
            ('flotilla.yaml:5:23: services.c.port: must be between 1 and 65535, got 0; use a '
             'whole number from 1 to 65535'),
            ('flotilla.yaml:6:23: services.d.port: must be between 1 and 65535, got 70000; use a '
             'whole number from 1 to 65535'),
            ('flotilla.yaml:7:22: services.e.port: expected an integer, got null; use a whole '
             'number from 1 to 65535'),
        ],
        id='port_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    routes: [{host: shop.localhost}]
  api:
    image: x
    health: {path: /healthz}
  both:
    image: x
    health: {}
    routes: [{host: both.localhost}]
""",
        [
            ('flotilla.yaml:3:3: services.web.port: port is required because the service has '
             'routes; add port: the port the service listens on inside its container'),
            ('flotilla.yaml:6:3: services.api.port: port is required because the service has a '
             'health check; add port: the port the service listens on inside its container'),
            ('flotilla.yaml:9:3: services.both.port: port is required because the service has '
             'routes and a health check; add port: the port the service listens on inside its '
             'container'),
        ],
        id='port_required',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {image: x, replicas: two}
  b: {image: x, replicas: 101}
  c: {image: x, replicas: -1}
  d: {image: x, replicas: 2.5}
  e: {image: x, replicas: yes}
""",
        [
            ('flotilla.yaml:3:27: services.a.replicas: expected an integer, got a string '
             "('two'); use a whole number from 0 to 100"),
            ('flotilla.yaml:4:27: services.b.replicas: must be between 0 and 100, got 101; use a '
             'whole number from 0 to 100'),
            ('flotilla.yaml:5:27: services.c.replicas: must be between 0 and 100, got -1; use a '
             'whole number from 0 to 100'),
            ('flotilla.yaml:6:27: services.d.replicas: expected an integer, got a number (2.5); '
             'use a whole number from 0 to 100'),
            ('flotilla.yaml:7:27: services.e.replicas: expected an integer, got a boolean '
             '(true); use a whole number from 0 to 100'),
        ],
        id='replicas_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {image: x, command: []}
  b: {image: x, command: [sleep, 10]}
  c: {image: x, command: "sh -c 'echo hi"}
  d: {image: x, command: {run: x}}
  e: {image: x, command: ""}
""",
        [
            ('flotilla.yaml:3:26: services.a.command: must not be empty; remove command to run '
             "the image's default command"),
            ('flotilla.yaml:4:34: services.b.command.1: expected a string, got an integer (10); '
             'quote it: every argument is a string, e.g. "10"'),
            ('flotilla.yaml:5:26: services.c.command: cannot split the command into words: No '
             'closing quotation; balance the quotes, or give the command as a list of strings'),
            ('flotilla.yaml:6:26: services.d.command: expected a list, got a mapping; give a '
             'list of strings, or one string'),
            ('flotilla.yaml:7:26: services.e.command: must not be empty; remove command to run '
             "the image's default command"),
        ],
        id='command_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    env:
      9LIVES: "1"
      FLOTILLA_APP: x
      EMPTY:
      LIST: [a, b]
      OK: fine
      "WITH-DASH": x
  api:
    image: x
    env: [A=1]
""",
        [
            ('flotilla.yaml:6:7: services.web.env.9LIVES: invalid environment variable name '
             "'9LIVES'; use letters, digits and '_', not starting with a digit"),
            ('flotilla.yaml:7:7: services.web.env.FLOTILLA_APP: FLOTILLA_APP uses the reserved '
             'prefix FLOTILLA_; rename it: Flotilla sets FLOTILLA_* variables itself'),
            ('flotilla.yaml:8:13: services.web.env.EMPTY: expected a string, number or boolean, '
             'got null; write "" for an empty value'),
            ('flotilla.yaml:9:13: services.web.env.LIST: expected a string, number or boolean, '
             'got a list; quote it to pass it as one string'),
            ('flotilla.yaml:11:7: services.web.env.WITH-DASH: invalid environment variable name '
             "'WITH-DASH'; use letters, digits and '_', not starting with a digit"),
            ('flotilla.yaml:14:10: services.api.env: expected a mapping, got a list; give a '
             'mapping of variable names to values, e.g. env: {LOG_LEVEL: info}'),
        ],
        id='env_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a:
    image: x
    port: 80
    health: {path: healthz, interval: 2 sec, timeout: 0}
  b:
    image: x
    port: 80
    health: {interval: 1s, timeout: 1s}
  c:
    image: x
    port: 80
    health: {timeout: 5s, retries: 3}
  d:
    image: x
    port: 80
    health: /healthz
""",
        [
            ("flotilla.yaml:6:20: services.a.health.path: invalid health path 'healthz': it must "
             "start with '/'; write '/healthz'"),
            ('flotilla.yaml:6:39: services.a.health.interval: expected a duration, got a string '
             "('2 sec'); write a duration such as 500ms, 2s, 1.5m or 1h (a bare number is "
             'seconds)'),
            ('flotilla.yaml:6:55: services.a.health.timeout: must be greater than 0s and at most '
             '86400s, got 0s; write a duration such as 500ms, 2s, 1.5m or 1h (a bare number is '
             'seconds)'),
            ('flotilla.yaml:10:37: services.b.health.timeout: timeout (1s) must be shorter than '
             'interval (1s); lower timeout or raise interval'),
            ('flotilla.yaml:14:23: services.c.health.timeout: timeout (5s) must be shorter than '
             'interval (2s); lower timeout or raise interval'),
            ("flotilla.yaml:14:27: services.c.health.retries: unknown key 'retries'; allowed "
             'keys: path, interval, timeout, replace_after, start_period'),
            ('flotilla.yaml:18:13: services.d.health: expected a mapping, got a string '
             "('/healthz'); give a mapping with the keys path, interval, timeout, replace_after, "
             "start_period"),
        ],
        id='health_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a:
    image: x
    port: 80
    health: {interval: -1, timeout: 2d}
    autoscale: {min: 1, max: 2, target: {rps: 1}, scale_down_delay: 25h}
""",
        [
            ('flotilla.yaml:6:24: services.a.health.interval: must be greater than 0s and at '
             'most 86400s, got -1s; write a duration such as 500ms, 2s, 1.5m or 1h (a bare '
             'number is seconds)'),
            ('flotilla.yaml:6:37: services.a.health.timeout: expected a duration, got a string '
             "('2d'); write a duration such as 500ms, 2s, 1.5m or 1h (a bare number is seconds)"),
            ('flotilla.yaml:7:69: services.a.autoscale.scale_down_delay: must be at least 0s and '
             'at most 86400s, got 25h; write a duration such as 500ms, 2s, 1.5m or 1h (a bare '
             'number is seconds)'),
        ],
        id='duration_bounds',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {image: x, resources: {cpus: 0, memory: 1M}}
  b: {image: x, resources: {cpus: "0.5", memory: lots}}
  c: {image: x, resources: {cpus: 65, memory: 256}}
  d: {image: x, resources: {cpu: 1, memory: .nan}}
""",
        [
            ('flotilla.yaml:3:35: services.a.resources.cpus: must be greater than 0 and at most '
             '64, got 0; give a number of CPUs greater than 0 and at most 64, e.g. 0.5'),
            ('flotilla.yaml:3:46: services.a.resources.memory: must be between 6 MiB and 1 TiB, '
             'got 1M; write a size such as 256M or 1G (binary units; a bare number is bytes), at '
             'least 6 MiB'),
            ('flotilla.yaml:4:35: services.b.resources.cpus: expected a number, got a string '
             "('0.5'); give a number of CPUs greater than 0 and at most 64, e.g. 0.5"),
            ('flotilla.yaml:4:50: services.b.resources.memory: expected a memory size, got a '
             "string ('lots'); write a size such as 256M or 1G (binary units; a bare number is "
             'bytes), at least 6 MiB'),
            ('flotilla.yaml:5:35: services.c.resources.cpus: must be greater than 0 and at most '
             '64, got 65; give a number of CPUs greater than 0 and at most 64, e.g. 0.5'),
            ('flotilla.yaml:5:47: services.c.resources.memory: must be between 6 MiB and 1 TiB, '
             'got 256 bytes; a bare number is bytes: did you mean 256M?'),
            ("flotilla.yaml:6:29: services.d.resources.cpu: unknown key 'cpu'; did you mean "
             "'cpus'?"),
            ('flotilla.yaml:6:45: services.d.resources.memory: expected a memory size, got a '
             'number (nan); write a size such as 256M or 1G (binary units; a bare number is '
             'bytes), at least 6 MiB'),
        ],
        id='resources_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a: {image: x, port: 80, routes: [{host: a.localhost}], max_body: 0}
  b: {image: x, port: 80, routes: [{host: b.localhost}], max_body: lots}
  c: {image: x, port: 80, routes: [{host: c.localhost}], max_body: 2T}
  d: {image: x, max_body: 1M}
""",
        [
            ('flotilla.yaml:3:68: services.a.max_body: must be between 1 byte and 1 TiB, got 0 '
             'bytes; write a size such as 1M or 512k (binary units; a bare number is bytes), at '
             'least 1 byte'),
            ("flotilla.yaml:4:68: services.b.max_body: expected a size, got a string ('lots'); "
             'write a size such as 1M or 512k (binary units; a bare number is bytes), at least 1 '
             'byte'),
            ('flotilla.yaml:5:68: services.c.max_body: must be between 1 byte and 1 TiB, got 2T; '
             'write a size such as 1M or 512k (binary units; a bare number is bytes), at least 1 '
             'byte'),
            ('flotilla.yaml:6:17: services.d.max_body: max_body limits requests through the '
             'gateway, and this service has no routes; add routes, or remove max_body'),
        ],
        id='max_body_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    port: 80
    routes:
      - {path: /}
      - {host: shop_web.localhost}
      - {host: "a.*.example"}
      - {host: shop.localhost, path: api}
      - {host: shop.localhost, path: "/a?b=1"}
      - {host: shop.localhost, strip_prefix: "yes"}
      - {host: shop.localhost, prefix: /}
      - shop.localhost
  api:
    image: x
    port: 80
    routes: {host: api.localhost}
""",
        [
            ("flotilla.yaml:7:9: services.web.routes.0.host: missing required key 'host'; add "
             'host: the DNS name requests arrive for'),
            ("flotilla.yaml:8:16: services.web.routes.1.host: invalid host 'shop_web.localhost'; "
             'write a DNS name such as shop.localhost, or *.shop.example for every subdomain'),
            ("flotilla.yaml:9:16: services.web.routes.2.host: invalid host 'a.*.example'; write "
             'a DNS name such as shop.localhost, or *.shop.example for every subdomain'),
            ("flotilla.yaml:10:38: services.web.routes.3.path: invalid route path 'api': it must "
             "start with '/'; write '/api'"),
            ("flotilla.yaml:11:38: services.web.routes.4.path: invalid route path '/a?b=1': '?' "
             "starts a query, which is not part of the path a route matches; route the path "
             "alone, e.g. '/a'"),
            ('flotilla.yaml:12:46: services.web.routes.5.strip_prefix: expected true or false, '
             "got a string ('yes'); write true or false, unquoted"),
            ("flotilla.yaml:13:32: services.web.routes.6.prefix: unknown key 'prefix'; did you "
             "mean 'strip_prefix'?"),
            ('flotilla.yaml:14:9: services.web.routes.7: expected a mapping, got a string '
             "('shop.localhost'); give a mapping with the keys host, path, strip_prefix, tls"),
            ('flotilla.yaml:18:13: services.api.routes: expected a list, got a mapping; give a '
             'list of routes such as {host: shop.localhost, path: /}'),
        ],
        id='route_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    port: 80
    routes:
      - {host: shop.localhost, path: /}
      - {host: SHOP.localhost, path: /}
  api:
    image: x
    port: 80
    routes:
      - {host: shop.localhost, path: /api}
      - {host: shop.localhost}
""",
        [
            ('flotilla.yaml:8:9: services.web.routes.1: route shop.localhost/ is also defined at '
             'services.web.routes.0 (flotilla.yaml:7:9); give each route its own host or path'),
            ('flotilla.yaml:14:9: services.api.routes.1: route shop.localhost/ is also defined '
             'at services.web.routes.0 (flotilla.yaml:7:9); give each route its own host or path'),
        ],
        id='duplicate_routes_name_both_locations',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    port: 80
    routes:
      - {host: shop.localhost, path: "/a\\0b"}
      - {host: shop.localhost, path: "/\\ud800"}
      - {host: shop.localhost, path: "/login\\r\\nX-Admin: 1"}
      - {host: shop.localhost, path: "/caf\\u00e9"}
      - {host: shop.localhost, path: "/100%"}
      - {host: shop.localhost, path: '/say "hi"'}
      - {host: shop.localhost, path: '/a\\b'}
      - {host: shop.localhost, path: "/d%c3%a9j%C3%A0/it's;v=1:@~"}
""",
        [
            ("flotilla.yaml:7:38: services.web.routes.0.path: invalid route path '/a\\x00b': "
             "'\\x00' (U+0000) is not allowed in a URL path; percent-encode it: write '/a%00b'"),
            ("flotilla.yaml:8:38: services.web.routes.1.path: invalid route path '/\\ud800': "
             "'\\ud800' (U+D800) is a lone surrogate, not a character; remove it: it has no UTF-8 "
             'form, so no request can carry it'),
            ("flotilla.yaml:9:38: services.web.routes.2.path: invalid route path "
             "'/login\\r\\nX-Admin: 1': '\\r' (U+000D) is not allowed in a URL path; "
             "percent-encode it: write '/login%0D%0AX-Admin:%201'"),
            ("flotilla.yaml:10:38: services.web.routes.3.path: invalid route path '/café': 'é' "
             "(U+00E9) is not allowed in a URL path; percent-encode it: write '/caf%C3%A9'"),
            ("flotilla.yaml:11:38: services.web.routes.4.path: invalid route path '/100%': '%' "
             "must start an escape of two hex digits such as %20; percent-encode it: write "
             "'/100%25'"),
            ("flotilla.yaml:12:38: services.web.routes.5.path: invalid route path '/say \"hi\"': "
             "' ' (U+0020) is not allowed in a URL path; percent-encode it: write "
             "'/say%20%22hi%22'"),
            ("flotilla.yaml:13:38: services.web.routes.6.path: invalid route path '/a\\\\b': "
             "'\\\\' (U+005C) is not allowed in a URL path; percent-encode it: write '/a%5Cb'"),
        ],
        id='route_path_characters',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    port: 80
    health: {path: "/healthz\\0"}
    routes:
      - {host: "b\\u00fccher.example"}
      - {host: "*.B\\u00dcCHER.example"}
      - {host: "\\u212a.example"}
      - {host: "shop.localhost\\0"}
      - {host: "shop.localhost\\n"}
      - {host: "\\ud800.example"}
""",
        [
            ("flotilla.yaml:6:20: services.web.health.path: invalid health path '/healthz\\x00': "
             "'\\x00' (U+0000) is not allowed in a URL path; percent-encode it: write "
             "'/healthz%00'"),
            ("flotilla.yaml:8:16: services.web.routes.0.host: invalid host 'bücher.example': a "
             "Host header carries ASCII only; write the name in its IDNA form, "
             "'xn--bcher-kva.example'"),
            ("flotilla.yaml:9:16: services.web.routes.1.host: invalid host '*.BÜCHER.example': a "
             "Host header carries ASCII only; write the name in its IDNA form, "
             "'*.xn--bcher-kva.example'"),
            ("flotilla.yaml:10:16: services.web.routes.2.host: invalid host '\u212a.example': a "
             "Host header carries ASCII only; write the name in its IDNA form, 'k.example'"),
            ("flotilla.yaml:11:16: services.web.routes.3.host: invalid host "
             "'shop.localhost\\x00'; write a DNS name such as shop.localhost, or *.shop.example "
             'for every subdomain'),
            ("flotilla.yaml:12:16: services.web.routes.4.host: invalid host "
             "'shop.localhost\\n'; write a DNS name such as shop.localhost, or *.shop.example "
             'for every subdomain'),
            ("flotilla.yaml:13:16: services.web.routes.5.host: invalid host '\\ud800.example': a "
             'Host header carries ASCII only; write a DNS name such as shop.localhost, or '
             '*.shop.example for every subdomain'),
        ],
        id='route_host_characters',
    ),
    pytest.param(
        """\
app: shop
services:
  "web\\nflotilla.yaml:1:1: services.web: all good": {image: x}
  "\\ud800": {image: x, env: {"A\\0": "1"}}
""",
        [
            ("flotilla.yaml:3:3: services.'web\\nflotilla.yaml:1:1: services.web: all good': invalid "
             "service name 'web\\nflotilla.yaml:1:1: services.web: all...'; use lowercase letters, "
             "digits and '-', starting with a letter and not ending with '-', at most 30 characters, "
             "e.g. 'web-flotilla-yaml-1-1-services'"),
            ("flotilla.yaml:4:3: services.'\\ud800': invalid service name '\\ud800'; use lowercase "
             "letters, digits and '-', starting with a letter and not ending with '-', at most 30 "
             "characters"),
            ("flotilla.yaml:4:30: services.'\\ud800'.env.'A\\x00': invalid environment variable name "
             "'A\\x00'; use letters, digits and '_', not starting with a digit"),
        ],
        id='keys_that_would_break_the_problem_line',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    env: {DB_PASSWORD: hunter2}
    secrets:
      DB_PASSWORD: db-password
      API_KEY: API Key
      /proc/self/environ: x
      /run/../etc/shadow: x
      run/secrets/key: x
      FLOTILLA_TOKEN: t
      /run/secrets/tls.key: 42
  api:
    image: x
    secrets: [db-password]
""",
        [
            ('flotilla.yaml:7:7: services.web.secrets.DB_PASSWORD: DB_PASSWORD is set both in '
             'env and in secrets; remove it from env: the secret supplies the value'),
            ("flotilla.yaml:8:16: services.web.secrets.API_KEY: invalid secret name 'API Key'; "
             "name the secret with lowercase letters, digits, '.', '_' and '-' (starting with a "
             'letter or digit, at most 63 characters)'),
            ('flotilla.yaml:9:7: services.web.secrets./proc/self/environ: invalid secret file '
             "path '/proc/self/environ': /proc/self/environ is in a kernel filesystem (/proc, /sys, "
             "/dev); use an absolute file path without ':', ',', whitespace or '..', not under "
             '/proc, /sys, /dev or /run/flotilla, e.g. /run/secrets/tls.key'),
            ('flotilla.yaml:10:7: services.web.secrets./run/../etc/shadow: invalid secret file '
             "path '/run/../etc/shadow': '..' is resolved inside the image, where a symlink "
             "(/var/run -> /run) can take it anywhere; use an absolute file path without ':', ',', "
             "whitespace or '..', not under /proc, /sys, /dev or /run/flotilla, e.g. "
             '/run/secrets/tls.key'),
            ('flotilla.yaml:11:7: services.web.secrets.run/secrets/key: invalid secret target '
             "'run/secrets/key'; use an environment variable name (letters, digits and '_') or "
             'an absolute file path such as /run/secrets/tls.key'),
            ('flotilla.yaml:12:7: services.web.secrets.FLOTILLA_TOKEN: FLOTILLA_TOKEN uses the '
             'reserved prefix FLOTILLA_; rename it: Flotilla sets FLOTILLA_* variables itself'),
            ('flotilla.yaml:13:29: services.web.secrets./run/secrets/tls.key: expected a string, '
             "got an integer (42); name the secret with lowercase letters, digits, '.', '_' and "
             "'-' (starting with a letter or digit, at most 63 characters)"),
            ('flotilla.yaml:16:14: services.api.secrets: expected a mapping, got a list; map an '
             'env variable name or a file path to a secret name, e.g. secrets: {DB_PASSWORD: '
             'db-password}'),
        ],
        id='secret_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  a:
    image: x
    autoscale: {min: 5, max: 3, target: {concurrency: 10}}
  b:
    image: x
    autoscale: {min: -1, max: 0, target: {}}
  c:
    image: x
    autoscale: {max: 101}
  d:
    image: x
    autoscale: {min: 1, max: 3, target: {rps: -5, cpu: 150%, latency: 1}}
""",
        [
            ('flotilla.yaml:5:22: services.a.autoscale.min: min (5) is greater than max (3); '
             'lower min or raise max'),
            ('flotilla.yaml:8:22: services.b.autoscale.min: must be between 0 and 100, got -1; '
             'use a whole number from 0 to 100'),
            ('flotilla.yaml:8:31: services.b.autoscale.max: must be between 1 and 100, got 0; '
             'use a whole number from 1 to 100'),
            ('flotilla.yaml:8:42: services.b.autoscale.target: needs at least one of '
             'concurrency, rps, cpu; e.g. target: {concurrency: 10} (in-flight requests per '
             'replica)'),
            ("flotilla.yaml:11:5: services.c.autoscale.min: missing required key 'min'; add min: "
             'the fewest replicas, e.g. 1'),
            ("flotilla.yaml:11:5: services.c.autoscale.target: missing required key 'target'; "
             'add target: e.g. {concurrency: 10}'),
            ('flotilla.yaml:11:22: services.c.autoscale.max: must be between 1 and 100, got 101; '
             'use a whole number from 1 to 100'),
            ('flotilla.yaml:14:47: services.d.autoscale.target.rps: must be greater than 0, got '
             '-5; give a number greater than 0 (per replica)'),
            ('flotilla.yaml:14:56: services.d.autoscale.target.cpu: must be greater than 0% and '
             'at most 100%, got 150%; write a percentage of resources.cpus such as 70%'),
            ('flotilla.yaml:14:56: services.d.autoscale.target.cpu: a cpu target needs '
             'resources.cpus; set resources.cpus: the percentage is measured against it'),
            ("flotilla.yaml:14:62: services.d.autoscale.target.latency: unknown key 'latency'; "
             'allowed keys: concurrency, rps, cpu'),
        ],
        id='autoscale_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    replicas: 10
    autoscale: {min: 1, max: 4, target: {cpu: 70%}, scale_down_delay: soon}
  api:
    image: x
    replicas: 0
    resources: {cpus: 1}
    autoscale: {min: 1, max: 4, target: {cpu: 0%, concurrency: .inf}}
""",
        [
            ('flotilla.yaml:5:15: services.web.replicas: replicas (10) must lie within autoscale '
             'min (1) and max (4); change replicas, or remove it: with autoscale it is only the '
             'starting count'),
            ('flotilla.yaml:6:47: services.web.autoscale.target.cpu: a cpu target needs '
             'resources.cpus; set resources.cpus: the percentage is measured against it'),
            ('flotilla.yaml:6:71: services.web.autoscale.scale_down_delay: expected a duration, '
             "got a string ('soon'); write a duration such as 500ms, 2s, 1.5m or 1h (a bare "
             'number is seconds)'),
            ('flotilla.yaml:9:15: services.api.replicas: replicas (0) must lie within autoscale '
             'min (1) and max (4); change replicas, or remove it: with autoscale it is only the '
             'starting count'),
            ('flotilla.yaml:11:47: services.api.autoscale.target.cpu: must be greater than 0% '
             'and at most 100%, got 0%; write a percentage of resources.cpus such as 70%'),
            ('flotilla.yaml:11:64: services.api.autoscale.target.concurrency: must be a finite '
             'number, got inf; give a number greater than 0 (per replica)'),
        ],
        id='autoscale_across_keys',
    ),
    pytest.param(
        """\
app: shop
services:
  web: {image: x}
caches:
  sessions: {type: memcached, shards: 2, replicas: 6, memory: 16M, persistence: always}
  Carts: {type: redis-cluster, shards: 17, size: 1G}
  queue: {shards: 3}
  web: {type: redis-cluster}
  store: redis
""",
        [
            ("flotilla.yaml:5:20: caches.sessions.type: unsupported cache type 'memcached'; "
             'write type: redis-cluster (the only cache type so far)'),
            ('flotilla.yaml:5:39: caches.sessions.shards: must be between 3 and 16, got 2; a '
             'Redis Cluster needs 3 to 16 shards (masters)'),
            ('flotilla.yaml:5:52: caches.sessions.replicas: must be between 0 and 5, got 6; give '
             '0 to 5 replicas per shard'),
            ('flotilla.yaml:5:63: caches.sessions.memory: must be between 32 MiB and 1 TiB, got '
             '16M; write a size such as 256M or 1G (binary units; a bare number is bytes), at '
             'least 32 MiB'),
            ('flotilla.yaml:5:81: caches.sessions.persistence: must be one of none, aof, rdb, '
             "got 'always'; use one of: none, aof, rdb"),
            ("flotilla.yaml:6:3: caches.Carts: invalid cache name 'Carts'; use lowercase "
             "letters, digits and '-', starting with a letter and not ending with '-', at most "
             "30 characters, e.g. 'carts'"),
            ('flotilla.yaml:6:40: caches.Carts.shards: must be between 3 and 16, got 17; a Redis '
             'Cluster needs 3 to 16 shards (masters)'),
            ("flotilla.yaml:6:44: caches.Carts.size: unknown key 'size'; allowed keys: type, "
             'shards, replicas, memory, persistence, image'),
            ("flotilla.yaml:7:3: caches.queue.type: missing required key 'type'; add type: "
             'redis-cluster'),
            ("flotilla.yaml:8:3: caches.web: cache 'web' has the same name as a service; rename "
             "the cache or the service: both are reached by name on the app's network"),
            ("flotilla.yaml:9:10: caches.store: expected a mapping, got a string ('redis'); give "
             'a mapping with the keys type, shards, replicas, memory, persistence, image'),
        ],
        id='cache_problems',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: x
    caches: [sesions, sessions, sessions, 7]
  api:
    image: x
    caches: sessions
caches:
  sessions: {type: redis-cluster}
  carts: {type: redis-cluster}
""",
        [
            ("flotilla.yaml:5:14: services.web.caches.0: unknown cache 'sesions'; did you mean "
             "'sessions'? (defined caches: sessions, carts)"),
            ("flotilla.yaml:5:33: services.web.caches.2: cache 'sessions' is listed twice; list "
             'each cache once'),
            ('flotilla.yaml:5:43: services.web.caches.3: expected a string, got an integer (7); '
             'give the name of a cache under caches:'),
            ('flotilla.yaml:8:13: services.api.caches: expected a list, got a string '
             "('sessions'); give a list of cache names"),
        ],
        id='cache_references',
    ),
    pytest.param(
        """\
app: shop
services:
  web: {image: x, caches: [sessions]}
""",
        [
            ("flotilla.yaml:3:28: services.web.caches.0: unknown cache 'sessions'; define it "
             'under the top-level caches: key'),
        ],
        id='cache_reference_without_caches',
    ),
    pytest.param(
        """\
app: shop
gateway: {listen: 8080, port: 80}
services:
  web: {image: x}
""",
        [
            ('flotilla.yaml:2:19: gateway.listen: expected a string, got an integer (8080); '
             'write "host:port" with an IPv4 address, localhost or [IPv6], e.g. "127.0.0.1:8080"'),
            "flotilla.yaml:2:25: gateway.port: unknown key 'port'; allowed keys: listen, https_port",
        ],
        id='gateway_problems',
    ),
    pytest.param(
        """\
app: shop
gateway:
  listen: "::1:8080"
services:
  web: {image: x}
""",
        [
            ("flotilla.yaml:3:11: gateway.listen: invalid listen address '::1:8080': the host "
             'must be an IPv4 address, localhost or [IPv6]; write "host:port" with an IPv4 '
             'address, localhost or [IPv6], e.g. "127.0.0.1:8080"'),
        ],
        id='gateway_listen_forms',
    ),
    pytest.param(
        """\
app: shop
gateway: {listen: "[::1%1]:18081"}
services: {web: {image: x}}
""",
        [
            ("flotilla.yaml:2:19: gateway.listen: invalid listen address '[::1%1]:18081': an "
             'IPv6 zone (scope id) such as %eth0 is not supported: listen on [::1] or a global '
             'address; write "host:port" with an IPv4 address, localhost or [IPv6], e.g. '
             '"127.0.0.1:8080"'),
        ],
        id='listen_ipv6_zone',
    ),
    pytest.param(
        """\
app: shop
services:
  web:
    image: "shop-web:${TAG}"
    env:
      URL: "${UPSTREAM_URL}/api/${VERSION}"
      BAD: "${1X}"
      OPEN: "${HOME"
      NESTED: "${A:-${B}}"
    port: ${PORT}
""",
        [
            ('flotilla.yaml:4:12: services.web.image: ${TAG} is not set; export TAG, add TAG=... '
             'to .env beside the spec, or give a default: ${TAG:-value}'),
            ('flotilla.yaml:6:12: services.web.env.URL: ${UPSTREAM_URL} is not set; export '
             'UPSTREAM_URL, add UPSTREAM_URL=... to .env beside the spec, or give a default: '
             '${UPSTREAM_URL:-value}'),
            ('flotilla.yaml:6:12: services.web.env.URL: ${VERSION} is not set; export VERSION, '
             'add VERSION=... to .env beside the spec, or give a default: ${VERSION:-value}'),
            ("flotilla.yaml:7:12: services.web.env.BAD: malformed variable reference '${1X}'; "
             'write ${NAME} or ${NAME:-default}, and $$ for a literal $'),
            ("flotilla.yaml:8:13: services.web.env.OPEN: unclosed variable reference '${HOME'; "
             'write ${NAME} or ${NAME:-default}, and $$ for a literal $'),
            ('flotilla.yaml:9:15: services.web.env.NESTED: nested variable reference '
             "'${A:-${B}'; nesting is not supported: write ${NAME} or ${NAME:-default}, and $$ "
             'for a literal $'),
        ],
        id='interpolation_problems',
    ),
    pytest.param(
        """\
app: a
gateway: {listen: "localhost"}
services: {web: {image: x}}
""",
        [
            ("flotilla.yaml:2:19: gateway.listen: invalid listen address 'localhost': no "
             '\':port\'; write "host:port" with an IPv4 address, localhost or [IPv6], e.g. '
             '"127.0.0.1:8080"'),
        ],
        id='listen_forms',
    ),
    pytest.param(
        """\
app: shop
gateway: {listen: "256.1.1.1:80"}
services: {web: {image: x}}
""",
        [
            ("flotilla.yaml:2:19: gateway.listen: invalid listen address '256.1.1.1:80': the "
             'host must be an IPv4 address, localhost or [IPv6]; write "host:port" with an IPv4 '
             'address, localhost or [IPv6], e.g. "127.0.0.1:8080"'),
        ],
        id='listen_bad_ipv4',
    ),
    pytest.param(
        """\
app: shop
gateway: {listen: "localhost:http"}
services: {web: {image: x}}
""",
        [
            ("flotilla.yaml:2:19: gateway.listen: invalid listen address 'localhost:http': the "
             'port must be a number from 1 to 65535; write "host:port" with an IPv4 address, '
             'localhost or [IPv6], e.g. "127.0.0.1:8080"'),
        ],
        id='listen_bad_port',
    ),
    pytest.param(
        """\
app: shop
services:
  web: {image: x, egress: "no", routes: [], secrets: {}, env: {}}
  api: {image: x, egress: 1}
""",
        [
            ('flotilla.yaml:3:27: services.web.egress: expected true or false, got a string '
             "('no'); write true or false, unquoted"),
            ('flotilla.yaml:4:27: services.api.egress: expected true or false, got an integer '
             '(1); write true or false, unquoted'),
        ],
        id='egress_and_types',
    ),
    pytest.param(
        """\
app: !shop x
services:
  web: &w
    image: x
    port: !!int eighty
    ? [a, b]
    : 1
    <<: [*w, 3]
""",
        [
            ("flotilla.yaml:1:6: app: unsupported YAML tag '!shop'; remove the tag: a spec holds "
             'plain mappings, lists and values'),
            ('flotilla.yaml:3:8: services.web: an alias refers to a value that contains it; '
             'remove the recursive alias'),
            ("flotilla.yaml:5:11: services.web.port: cannot read 'eighty' as an integer; fix the "
             'value, or quote it to make it a string'),
            ('flotilla.yaml:6:7: services.web: a key must be a plain name, got a list; write the '
             'key as plain text'),
            ("flotilla.yaml:8:14: services.web: '<<' can only merge mappings; merge an alias of "
             'a mapping: <<: *name'),
        ],
        id='yaml_oddities',
    ),
    pytest.param(
        """\
app: Shop
gateway: {listen: "127.0.0.1:99999"}
services:
  web:
    image: shop-web:1
    port: 8000
    replicas: 2
    env: {LOG_LEVEL: info, UPSTREAM: "${UPSTREAM_URL}"}
    health: {path: /healthz, interval: 1s, timeout: 2s}
    resources: {cpus: 0.5, memory: 256Q}
    egress: maybe
    routes:
      - {host: shop.localhost, path: /}
    secrets:
      DB_PASSWORD: db-password
    autoscale:
      min: 1
      max: 20
      target: {concurency: 10}
    caches: [sessions]
  worker:
    image: shop-worker:1
    routes:
      - {host: shop.localhost}
caches:
  sessions: {type: redis-cluster, shards: 1}
""",
        [
            ("flotilla.yaml:1:6: app: invalid app name 'Shop'; use lowercase letters, digits and "
             "'-', starting with a letter and not ending with '-', at most 30 characters, e.g. "
             "'shop'"),
            ("flotilla.yaml:2:19: gateway.listen: invalid listen address '127.0.0.1:99999': the "
             'port must be a number from 1 to 65535; write "host:port" with an IPv4 address, '
             'localhost or [IPv6], e.g. "127.0.0.1:8080"'),
            ('flotilla.yaml:8:38: services.web.env.UPSTREAM: ${UPSTREAM_URL} is not set; export '
             'UPSTREAM_URL, add UPSTREAM_URL=... to .env beside the spec, or give a default: '
             '${UPSTREAM_URL:-value}'),
            ('flotilla.yaml:9:53: services.web.health.timeout: timeout (2s) must be shorter than '
             'interval (1s); lower timeout or raise interval'),
            ('flotilla.yaml:10:36: services.web.resources.memory: expected a memory size, got a '
             "string ('256Q'); write a size such as 256M or 1G (binary units; a bare number is "
             'bytes), at least 6 MiB'),
            ('flotilla.yaml:11:13: services.web.egress: expected true or false, got a string '
             "('maybe'); write true or false, unquoted"),
            ('flotilla.yaml:19:16: services.web.autoscale.target.concurency: unknown key '
             "'concurency'; did you mean 'concurrency'?"),
            ('flotilla.yaml:21:3: services.worker.port: port is required because the service has '
             'routes; add port: the port the service listens on inside its container'),
            ('flotilla.yaml:24:9: services.worker.routes.0: route shop.localhost/ is also '
             'defined at services.web.routes.0 (flotilla.yaml:13:9); give each route its own '
             'host or path'),
            ('flotilla.yaml:26:43: caches.sessions.shards: must be between 3 and 16, got 1; a '
             'Redis Cluster needs 3 to 16 shards (masters)'),
        ],
        id='many_problems_at_once',
    ),
    pytest.param(
        """\
app: shop
caches:
  sessions: {type: redis-cluster}
services:
  sessions-0-1: {image: x}
  web:
    image: x
    env: {SESSIONS_REDIS_NODES: "a:1"}
    secrets: {SESSIONS_REDIS_PASSWORD: pw}
    caches: [sessions]
""",
        [
            ("flotilla.yaml:5:3: services.sessions-0-1: service 'sessions-0-1' has the name of a node "
             "of cache 'sessions'; rename the service: the nodes of sessions are called "
             "sessions-SHARD-ORDINAL"),
            ("flotilla.yaml:8:11: services.web.env.SESSIONS_REDIS_NODES: SESSIONS_REDIS_NODES is set by "
             "cache 'sessions', which this service lists; remove SESSIONS_REDIS_NODES from env: "
             "Flotilla sets it"),
            ("flotilla.yaml:9:15: services.web.secrets.SESSIONS_REDIS_PASSWORD: SESSIONS_REDIS_PASSWORD "
             "is set by cache 'sessions', which this service lists; remove SESSIONS_REDIS_PASSWORD "
             "from secrets: Flotilla sets it"),
        ],
        id='cache_names_taken',
    ),
]


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, filename="flotilla.yaml", environ=ENVIRON)
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_spec_reports_exactly(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_there_are_many_cases_and_several_with_many_problems() -> None:
    assert len(CASES) >= 30
    assert sum(len(case.values[1]) >= 3 for case in CASES) >= 10


def _case_text(case_id: str) -> str:
    return next(case.values[0] for case in CASES if case.id == case_id)


def _unpositioned(problems) -> list[tuple[str, str, str]]:
    """Path, message and hint; cross-references lose their ``(file:line:col)`` in the dict form."""
    return sorted((p.path, re.sub(r" \(flotilla\.yaml:\d+:\d+\)", "", p.message), p.hint)
                  for p in problems)


@pytest.mark.parametrize("case_id", [
    "unknown_keys", "image_problems", "port_problems", "replicas_problems", "command_problems",
    "env_problems", "health_problems", "resources_problems", "route_problems",
    "route_path_characters", "route_host_characters", "listen_ipv6_zone",
    "duplicate_routes_name_both_locations", "secret_problems", "autoscale_problems",
    "autoscale_across_keys", "cache_problems", "cache_references", "gateway_problems",
])
def test_the_dict_form_reports_the_same_problems_without_positions(case_id: str) -> None:
    text = _case_text(case_id)
    with pytest.raises(SpecError) as from_yaml:
        parse_spec(text, filename="flotilla.yaml", environ=ENVIRON)
    with pytest.raises(SpecError) as from_dict:
        spec_from_dict(yaml.safe_load(text))
    assert all((p.file, p.line, p.column) == ("<api>", 0, 0) for p in from_dict.value.problems)
    assert _unpositioned(from_dict.value.problems) == _unpositioned(from_yaml.value.problems)


def test_dict_form_cross_references_name_the_path_only() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(yaml.safe_load(_case_text("duplicate_routes_name_both_locations")))
    assert str(caught.value.problems[0]) == (
        "<api>: services.web.routes.1: route shop.localhost/ is also defined at "
        "services.web.routes.0; give each route its own host or path")


def test_spec_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(["app", "shop"])  # type: ignore[arg-type]
    assert [str(p) for p in caught.value.problems] == [
        "<api>: (top): expected a mapping, got a list; give a mapping with the keys app, "
        "gateway, services, caches, pull, acme, jobs"]


def test_every_problem_has_a_hint() -> None:
    for case in CASES:
        for rendered in case.values[1]:
            assert "; " in rendered, rendered
