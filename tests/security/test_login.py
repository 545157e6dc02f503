"""UI login with roles (a viewer cannot write), CSRF on cookie sessions, proxy identity headers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from .conftest import PASSWORDS, users
from .test_gate import SILENCE

OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def login(base: str, name: str, password: str | None = None, *, next_: str = "/dashboards") -> httpx.Client:
    client = httpx.Client(base_url=base)
    OPEN.append(client)
    form = client.get("/login", params={"next": next_})
    assert form.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    r = client.post(
        "/login",
        data={
            "username": name,
            "password": password or PASSWORDS[name],
            "csrf_token": token.group(1),
            "next": next_,
        },
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == (next_ if not next_.startswith("//") else "/")  # never off-site
    return client


def csrf(client: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies["wk_csrf"]}


def test_the_session_cookie_is_httponly_samesite_and_signed(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"users": users()})
    client = login(base, "vera")
    set_cookie = [v for k, v in client.get("/login").request.headers.items() if k == "cookie"]
    assert set_cookie  # the browser sends it back
    with httpx.Client(base_url=base) as raw:
        form = raw.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        r = raw.post(
            "/login", data={"username": "vera", "password": PASSWORDS["vera"], "csrf_token": token.group(1)}
        )
        cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("wk_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session  # plain http
    assert client.get("/dashboards").status_code == 200
    with httpx.Client(
        base_url=base, cookies={"wk_session": client.cookies["wk_session"][:-2] + "xx"}
    ) as forged:
        assert forged.get("/api/v1/labels").status_code == 401


def test_a_viewer_cannot_write_an_editor_can_and_only_an_admin_reloads(
    serve_with: Callable[..., str],
) -> None:
    base = serve_with(security={"users": users()})
    viewer, editor, admin = login(base, "vera"), login(base, "ed"), login(base, "ada")
    for client in (viewer, editor, admin):
        assert client.get("/dashboards").status_code == 200
        assert client.get("/api/v1/query", params={"query": "1"}).status_code == 200

    refused = viewer.post("/api/v2/silences", json=SILENCE, headers=csrf(viewer))
    assert refused.status_code == 403
    assert refused.json()["error"] == "user 'vera' (viewer) lacks the 'write' scope"
    assert viewer.post("/-/reload", headers=csrf(viewer)).status_code == 403

    assert editor.post("/api/v2/silences", json=SILENCE, headers=csrf(editor)).status_code == 200
    assert editor.post("/-/reload", headers=csrf(editor)).status_code == 403
    assert admin.post("/-/reload", headers=csrf(admin)).status_code == 200


def test_a_cookie_session_must_echo_its_csrf_token(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"users": users()})
    editor = login(base, "ed")
    missing = editor.post("/api/v2/silences", json=SILENCE)
    assert missing.status_code == 403 and "CSRF" in missing.json()["error"]
    wrong = editor.post("/api/v2/silences", json=SILENCE, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    # an HTML form post carries it as a field instead (this one then fails as a silence: not JSON)
    form = editor.post("/api/v2/silences", data={"csrf_token": editor.cookies["wk_csrf"]})
    assert form.status_code not in (403, 413) and form.status_code >= 400
    no_field = editor.post("/api/v2/silences", data={"other": "x"})
    assert no_field.status_code == 403 and "CSRF" in no_field.text


def test_login_refuses_bad_passwords_forged_forms_and_outside_redirects(
    serve_with: Callable[..., str],
) -> None:
    base = serve_with(security={"users": users()})
    with httpx.Client(base_url=base) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        wrong = client.post(
            "/login", data={"username": "vera", "password": "nope", "csrf_token": token.group(1)}
        )
        assert wrong.status_code == 401 and "Invalid user name or password" in wrong.text
        assert "wk_session" not in client.cookies
        token = re.search(r'name="csrf_token" value="([^"]+)"', wrong.text)  # each form has its own
        assert token is not None
        nobody = client.post(
            "/login", data={"username": "mallory", "password": "x", "csrf_token": token.group(1)}
        )
        assert nobody.status_code == 401
    with httpx.Client(base_url=base) as fresh:  # no form first: no CSRF cookie
        forged = fresh.post(
            "/login", data={"username": "vera", "password": PASSWORDS["vera"], "csrf_token": "x"}
        )
        assert forged.status_code == 403 and "wk_session" not in fresh.cookies
    outside = login(base, "vera", next_="//evil.example/")
    assert outside.cookies.get("wk_session")
    with httpx.Client(base_url=base) as client:
        form = client.get("/login", params={"next": "https://evil.example/"})
        assert 'name="next" value="/"' in form.text


def test_a_browser_without_a_session_is_sent_to_the_login_page(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"users": users()})
    r = httpx.get(base + "/d/watchkeeper?from=now-1h", headers={"Accept": "text/html"})
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fd%2Fwatchkeeper%3Ffrom%3Dnow-1h"
    assert httpx.get(base + "/api/v1/labels").status_code == 401  # an API client is told, not redirected
    client = login(base, "vera")
    assert client.get("/logout").status_code == 303
    assert client.get("/api/v1/labels").status_code == 401


def test_trusted_proxy_identity_headers(serve_with: Callable[..., str]) -> None:
    proxy = {"trusted_proxies": ["127.0.0.1/32"], "default_role": "viewer"}
    base = serve_with(security={"proxy_auth": proxy})
    pat = {"X-Forwarded-User": "pat"}
    assert httpx.get(base + "/api/v1/labels", headers=pat).status_code == 200
    viewer = httpx.post(base + "/api/v2/silences", json=SILENCE, headers=pat)
    assert viewer.status_code == 403 and "proxy 'pat' (viewer)" in viewer.json()["error"]
    editor = {**pat, "X-Forwarded-Role": "editor"}
    assert httpx.post(base + "/api/v2/silences", json=SILENCE, headers=editor).status_code == 200
    assert (
        httpx.post(
            base + "/api/v2/silences", json=SILENCE, headers={**editor, "Origin": "http://evil.example"}
        ).status_code
        == 403
    )
    assert httpx.get(base + "/api/v1/labels").status_code == 401  # no header: nobody


def test_identity_headers_from_an_untrusted_address_are_ignored(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"proxy_auth": {"trusted_proxies": ["192.0.2.10/32"]}})
    r = httpx.get(base + "/api/v1/labels", headers={"X-Forwarded-User": "admin", "X-Forwarded-Role": "admin"})
    assert r.status_code == 401


def test_repeated_wrong_passwords_lock_the_name_for_a_while(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"users": users()})

    def attempt(client: httpx.Client, name: str, password: str) -> httpx.Response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        return client.post(
            "/login", data={"username": name, "password": password, "csrf_token": token.group(1)}
        )

    with httpx.Client(base_url=base) as client:
        assert [attempt(client, "ed", f"guess-{i}").status_code for i in range(5)] == [401] * 5
        locked = attempt(client, "ed", PASSWORDS["ed"])  # even the right password, for now
        assert locked.status_code == 429 and "Too many failed logins" in locked.text
        assert 1 <= int(locked.headers["retry-after"]) <= 900
        assert "wk_session" not in client.cookies
        assert attempt(client, "vera", PASSWORDS["vera"]).status_code == 303  # other names are not
