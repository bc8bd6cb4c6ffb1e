"""catalog: the shop's product list, read-only and held in code.

GET /items       every product, plus which replica answered
GET /items/<id>  one product, or 404
POST /debug/hang only with CATALOG_DEBUG_HANG=1: from then on this replica answers
                 nothing (health checks included) while its process stays alive,
                 a deadlock for the liveness tests (tests/integration/test_deploys.py)
Other services (cart, web) call it by its service name: http://catalog:8000.
"""

from __future__ import annotations

import os
import threading

from shopkit import HttpError, ServiceHandler, identity, serve

SERVICE = "catalog"

PRODUCTS = [
    {"id": "espresso", "name": "Espresso beans, 250 g", "price_cents": 890},
    {"id": "filter", "name": "Filter coffee, 500 g", "price_cents": 1190},
    {"id": "mug", "name": "Enamel mug", "price_cents": 1450},
    {"id": "grinder", "name": "Hand grinder", "price_cents": 4900},
    {"id": "kettle", "name": "Gooseneck kettle", "price_cents": 3900},
]
BY_ID = {product["id"]: product for product in PRODUCTS}
HANG_ALLOWED = os.environ.get("CATALOG_DEBUG_HANG") == "1"
HUNG = threading.Event()


class CatalogHandler(ServiceHandler):
    service = SERVICE
    routes = [
        ("GET", r"/items/?", "list_items"),
        ("GET", r"/items/(?P<item>[^/]+)", "get_item"),
    ] + ([("POST", r"/debug/hang", "hang")] if HANG_ALLOWED else [])

    def _dispatch(self, method: str) -> None:
        if HUNG.is_set():
            threading.Event().wait()  # hung: the request is never answered, the process lives on
        super()._dispatch(method)

    def hang(self, match) -> None:
        HUNG.set()
        self.send_json(202, {"hanging": identity(SERVICE)})

    def list_items(self, match) -> None:
        self.send_json(200, {"items": PRODUCTS, "served_by": identity(SERVICE)})

    def get_item(self, match) -> None:
        item = BY_ID.get(match["item"])
        if item is None:
            raise HttpError(404, "no such item", item=match["item"])
        self.send_json(200, {"item": item, "served_by": identity(SERVICE)})


if __name__ == "__main__":
    serve(CatalogHandler)
