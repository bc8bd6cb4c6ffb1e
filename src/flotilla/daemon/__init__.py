"""The long-running controller: reconcile loop, health, store and API."""
