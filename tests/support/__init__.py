"""Helpers that tests share but that are not fixtures; no test module imports another.

* ``waiting``: ``wait_for``, the poll loop that replaces sleeps before assertions;
* ``ports``: ``free_port``, so nothing a test starts needs a fixed host port;
* ``specs``: the shop demo's spec on a free port, and the check that keeps test gateways off 8080;
* ``cli``: what a test reads about its app (``ps``, status, ``in_container``);
* ``load``: a bounded HTTP load generator; ``netns``: an "outside machine" in a network namespace;
* ``sessions``: a Redis Cluster session client and workload; ``gateway_specs``: spec builders
  for gateway configuration tests.

They live in a package of their own so that integration tests, unit tests and
the benchmarks drive traffic, reachability and waiting the same way, and so
that the helpers themselves are tested (tests/integration/test_support_load.py).
"""
