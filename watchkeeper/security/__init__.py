"""Who may do what, and what a response tells the browser.

One token concept for every API (ingest, query, admin); users with roles for the web UI (or a
trusted reverse proxy's identity headers); security headers with a CSP that runs only self-served
scripts; CSRF protection for cookie-authenticated requests; request size limits; an allow-list for
outbound URLs (webhooks, probes).

```
config.py      the ``security:`` section of watchkeeper.yml
scopes.py      scopes (read, write, admin), roles, and the scope each request needs
tokens.py      API tokens: hashed at rest, from the config and the database
passwords.py   scrypt password hashes for UI users
sessions.py    signed session cookies (user, role, CSRF token, expiry)
gate.py        the ASGI middleware: authenticate, authorize, CSRF, size limit
headers.py     the ASGI middleware adding CSP, HSTS and friends
login.py       /login and /logout
throttle.py    wrong-password throttling per user name
outbound.py    the outbound allow-list
cli.py         ``watchkeeper tokens create|list|revoke`` and ``watchkeeper users hash-password``
```

With nothing configured and a loopback bind, everything stays open (a laptop install works);
on any other bind, anonymous requests may only read.
"""
