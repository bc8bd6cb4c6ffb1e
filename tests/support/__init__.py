"""Helpers that tests share but that are not fixtures: a bounded HTTP load
generator (`load`) and an "outside machine" in a network namespace (`netns`).

They live in a package of their own so that integration tests of the gateway,
the autoscaler and network separation, and the benchmarks, drive traffic and
reachability the same way, and so that the helpers themselves are unit-tested
(tests/unit/test_support_load.py).
"""
