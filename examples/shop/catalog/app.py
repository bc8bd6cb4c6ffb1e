"""catalog: the shop's product list, read-only and held in code.

GET /items       every product, plus which replica answered
GET /items/<id>  one product, or 404
Other services (cart, web) call it by its service name: http://catalog:8000.
"""

from __future__ import annotations

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


class CatalogHandler(ServiceHandler):
    service = SERVICE
    routes = [
        ("GET", r"/items/?", "list_items"),
        ("GET", r"/items/(?P<item>[^/]+)", "get_item"),
    ]

    def list_items(self, match) -> None:
        self.send_json(200, {"items": PRODUCTS, "served_by": identity(SERVICE)})

    def get_item(self, match) -> None:
        item = BY_ID.get(match["item"])
        if item is None:
            raise HttpError(404, "no such item", item=match["item"])
        self.send_json(200, {"item": item, "served_by": identity(SERVICE)})


if __name__ == "__main__":
    serve(CatalogHandler)
