"""Add-ons: optional capabilities a spec can ask for (a Redis Cluster cache, so far).

Each add-on is its own package; add-ons do not import each other.
"""
