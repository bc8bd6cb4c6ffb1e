"""web: the shop's front door, the one service with a public route.

GET  /              a page composed from catalog (products) and cart (the
                    user's cart): HTML for browsers, JSON for everyone else
                    (or ?format=html|json). The user comes from ?user=, then
                    the "user" cookie, else "guest".
POST /cart          an HTML form's "add to cart"; redirects back to /
/api/items[/<id>]   proxied to catalog's /items
/api/cart/<user>    proxied to cart's /cart/<user> (GET, POST, DELETE)

Upstream calls time out after 2 s; a failed upstream gives a 502 JSON error
that names it.
"""

from __future__ import annotations

import html
import re
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote

from shopkit import HttpError, ServiceHandler, call_upstream, identity, serve, upstream_url

SERVICE = "web"
CATALOG_URL = upstream_url("CATALOG_URL", "http://catalog:8000")
CART_URL = upstream_url("CART_URL", "http://cart:8000")
USER_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
# /api/<prefix>... -> (upstream name, its base URL, the path prefix it serves)
API_UPSTREAMS = {"items": ("catalog", CATALOG_URL), "cart": ("cart", CART_URL)}


def fetch_page_data(user: str) -> dict:
    """Everything the front page shows, from both upstreams."""
    _, catalog = call_upstream("catalog", f"{CATALOG_URL}/items")
    status, cart = call_upstream("cart", f"{CART_URL}/cart/{quote(user)}")
    if status != 200:
        raise HttpError(502, f"cart answered {status}", upstream="cart")
    return {
        "user": user,
        "products": catalog["items"],
        "cart": cart["items"],
        "served_by": {"web": identity(SERVICE), "catalog": catalog["served_by"], "cart": cart["served_by"]},
    }


def render_html(page: dict) -> bytes:
    esc = html.escape
    products = "".join(
        f"<tr><td>{esc(p['name'])}</td><td>{p['price_cents'] / 100:.2f}</td>"
        f"<td><form method=post action=/cart><input type=hidden name=item value='{esc(p['id'])}'>"
        f"<button>add</button></form></td></tr>"
        for p in page["products"]
    )
    cart = "".join(f"<li>{line['qty']} × {esc(line['item'])}</li>" for line in page["cart"]) or "<li>empty</li>"
    served = ", ".join(
        f"{esc(name)} replica {esc(who['replica'] or '?')} ({esc(who['hostname'])})"
        for name, who in page["served_by"].items()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Flotilla shop</title>"
        f"<h1>Flotilla shop</h1><p>Hello, {esc(page['user'])}.</p>"
        f"<table><tr><th>product</th><th>price</th><th></th></tr>{products}</table>"
        f"<h2>Your cart</h2><ul>{cart}</ul><p><small>served by {served}</small></p>\n"
    ).encode()


class WebHandler(ServiceHandler):
    service = SERVICE
    routes = [
        ("GET", r"/", "front_page"),
        ("POST", r"/cart", "form_add"),
        ("GET", r"/api/(?P<upstream>items|cart)(?P<rest>/.*)?", "proxy"),
        ("POST", r"/api/(?P<upstream>cart)(?P<rest>/.*)", "proxy"),
        ("DELETE", r"/api/(?P<upstream>cart)(?P<rest>/.*)", "proxy"),
    ]

    def user(self) -> tuple[str, bool]:
        """The user, and whether it came from the query (so it should be remembered)."""
        if "user" in self.query:
            user, from_query = self.query["user"], True
        else:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            user, from_query = (cookie["user"].value if "user" in cookie else "guest"), False
        if not re.fullmatch(USER_PATTERN, user):
            raise HttpError(400, "user names are 1-64 letters, digits, '.', '_' or '-'")
        return user, from_query

    def wants_html(self) -> bool:
        fmt = self.query.get("format")
        if fmt in ("html", "json"):
            return fmt == "html"
        return "text/html" in self.headers.get("Accept", "")

    def front_page(self, match) -> None:
        user, from_query = self.user()
        page = fetch_page_data(user)
        headers = {"Set-Cookie": f"user={user}; Path=/; SameSite=Lax"} if from_query else {}
        if self.wants_html():
            self.send_body(200, render_html(page), "text/html; charset=utf-8", headers)
        else:
            self.send_json(200, page, headers)

    def form_add(self, match) -> None:
        user, _ = self.user()
        form = {k: v[-1] for k, v in parse_qs(self.body.decode(errors="replace")).items()}
        try:
            payload = {"item": form.get("item", ""), "qty": int(form.get("qty") or 1)}
        except ValueError as exc:
            raise HttpError(400, "qty must be a whole number") from exc
        status, body = call_upstream("cart", f"{CART_URL}/cart/{quote(user)}", method="POST", payload=payload)
        if status != 200:
            self.send_json(status, body)
            return
        self.send_body(303, b"", "text/plain", {"Location": "/"})

    def proxy(self, match) -> None:
        name, base = API_UPSTREAMS[match["upstream"]]
        url = f"{base}/{match['upstream']}{match['rest'] or ''}"
        if self.query:
            url += "?" + self.path.split("?", 1)[1]
        payload = self.json_body() if self.command == "POST" else None
        status, body = call_upstream(name, url, method=self.command, payload=payload)
        self.send_json(status, body)


if __name__ == "__main__":
    serve(WebHandler)
