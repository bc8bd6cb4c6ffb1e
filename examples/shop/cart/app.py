"""cart: each user's shopping cart.

GET    /cart/<user>  the cart
POST   /cart/<user>  add {"item": id, "qty": n}; the item is checked with catalog first
DELETE /cart/<user>  empty the cart

Carts live in this process's memory, so each replica has its own and a
restart forgets them. All storage goes through a CartStore, so moving carts
to the Redis Cluster add-on means writing one more store, nothing else.
"""

from __future__ import annotations

import re
import threading
from typing import Protocol
from urllib.parse import quote

from shopkit import HttpError, ServiceHandler, call_upstream, identity, serve, upstream_url

SERVICE = "cart"
CATALOG_URL = upstream_url("CATALOG_URL", "http://catalog:8000")
USER_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
ITEM_PATTERN = USER_PATTERN
MAX_QTY = 100


class CartStore(Protocol):
    def get(self, user: str) -> dict[str, int]: ...
    def add(self, user: str, item: str, qty: int) -> dict[str, int]: ...
    def clear(self, user: str) -> None: ...


class MemoryCartStore:
    """Carts in a dict: item id -> quantity, per user."""

    def __init__(self) -> None:
        self._carts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def get(self, user: str) -> dict[str, int]:
        with self._lock:
            return dict(self._carts.get(user, {}))

    def add(self, user: str, item: str, qty: int) -> dict[str, int]:
        with self._lock:
            cart = self._carts.setdefault(user, {})
            cart[item] = min(cart.get(item, 0) + qty, MAX_QTY)
            return dict(cart)

    def clear(self, user: str) -> None:
        with self._lock:
            self._carts.pop(user, None)


STORE: CartStore = MemoryCartStore()


def parse_line(body: dict) -> tuple[str, int]:
    """Check a POSTed {"item": id, "qty": n}: an id and a whole number 1..MAX_QTY."""
    item, qty = body.get("item"), body.get("qty", 1)
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or not re.fullmatch(ITEM_PATTERN, item):
        raise HttpError(400, '"item" must be an item id such as "mug"')
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        raise HttpError(400, f'"qty" must be a whole number from 1 to {MAX_QTY}')
    return item, qty


def check_item_exists(item: str) -> None:
    status, _ = call_upstream("catalog", f"{CATALOG_URL}/items/{quote(item)}")
    if status == 404:
        raise HttpError(404, "no such item", item=item)
    if status != 200:
        raise HttpError(502, f"catalog answered {status}", upstream="catalog")


class CartHandler(ServiceHandler):
    service = SERVICE
    routes = [
        ("GET", rf"/cart/(?P<user>{USER_PATTERN})", "get_cart"),
        ("POST", rf"/cart/(?P<user>{USER_PATTERN})", "add_to_cart"),
        ("DELETE", rf"/cart/(?P<user>{USER_PATTERN})", "clear_cart"),
    ]

    def reply(self, user: str, cart: dict[str, int]) -> None:
        lines = [{"item": item, "qty": qty} for item, qty in sorted(cart.items())]
        self.send_json(200, {"user": user, "items": lines, "served_by": identity(SERVICE)})

    def get_cart(self, match) -> None:
        self.reply(match["user"], STORE.get(match["user"]))

    def add_to_cart(self, match) -> None:
        item, qty = parse_line(self.json_body())
        check_item_exists(item)
        self.reply(match["user"], STORE.add(match["user"], item, qty))

    def clear_cart(self, match) -> None:
        STORE.clear(match["user"])
        self.reply(match["user"], {})


if __name__ == "__main__":
    serve(CartHandler)
