#!/usr/bin/env python3
"""A stock relying party — Python's authlib — signs a member in through a partner's app.

Starts `coalition serve` on a fresh SQLite file (the development mailer writes the
sign-in code to the log, where this script reads it), creates a programme, a partner, a
member and the partner's app (a client with a redirect URI), then runs the whole
OAuth 2.0 authorization code + PKCE (S256) / OpenID Connect flow with authlib:
discovery, the authorization URL with state, nonce and code challenge, the portal's
one-time-code sign-in, the code exchange, the ID token verified against the JWKS, the
userinfo endpoint, a refresh, and a replayed refresh token refused.

    pip install authlib requests
    cargo build -p coalition-server
    python3 scripts/oidc_authlib_check.py        # COALITION_BIN=… to use another binary

Exits non-zero on the first thing that does not hold.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("COALITION_BIN", os.path.join(ROOT, "target", "debug", "coalition"))
EMAIL = "ana@example.org"
REDIRECT_URI = "http://127.0.0.1:9/callback"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)
    print(f"ok: {message}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    workdir = tempfile.mkdtemp(prefix="coalition-authlib-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite://{workdir}/coalition.db?mode=rwc",
        COALITION_ADDR=f"127.0.0.1:{port}",
        COALITION_JOBS_INTERVAL_SECONDS="0",
        COALITION_WEBHOOKS_INTERVAL_MS="0",
    )
    env.pop("COALITION_SMTP_URL", None)
    created = subprocess.run(
        [BIN, "programme", "create", "--name", "Authlib", "--currency", "EUR", "--point-value", "0.01"],
        env=env, capture_output=True, text=True, check=True,
    )
    operator = json.loads(created.stdout)
    log_path = os.path.join(workdir, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=log)
    try:
        run(base, operator, log_path)
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_until_live(base):
    for _ in range(100):
        try:
            if requests.get(f"{base}/health/live", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def client_token(base, client_id, secret):
    r = requests.post(f"{base}/oauth/token", auth=(client_id, secret),
                      data={"grant_type": "client_credentials"})
    r.raise_for_status()
    return r.json()["access_token"]


def mails_to(log_path, email):
    """The development mailer's log records to `email` (each from its header line on;
    the message's text spans several lines)."""
    with open(log_path) as f:
        text = f.read()
    marker = f"to={email} "
    return text.split(marker)[1:] if marker in text else []


def code_from_log(log_path, email, seen):
    """The 6-digit code of the first mail to `email` after the `seen` earlier ones."""
    for _ in range(100):
        mails = mails_to(log_path, email)
        if len(mails) > seen:
            found = re.findall(r"(?<!\d)\d{6}(?!\d)", mails[seen].split("\n20", 1)[0])
            if found:
                return found[0]
        time.sleep(0.1)
    raise SystemExit("no sign-in code in the log")


def csrf_field(html):
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    return found.group(1) if found else None


def run(base, operator, log_path):
    wait_until_live(base)
    admin = {"Authorization": "Bearer " + client_token(base, operator["client_id"], operator["client_secret"])}
    partner = requests.post(f"{base}/v1/partners", headers=admin, json={
        "name": "Iron Gym", "kind": "merchant", "category": "fitness",
        "earn_points_per_unit": "1", "issue_price_per_point": "0.01",
        "redemption_value_per_point": "0.01"}).json()
    pos = requests.post(f"{base}/v1/clients", headers=admin,
                        json={"name": "Gym POS", "partner_id": partner["id"]}).json()
    pos_token = {"Authorization": "Bearer " + client_token(base, pos["client_id"], pos["client_secret"])}
    member = requests.post(f"{base}/v1/members", headers=pos_token,
                           json={"name": "Ana", "email": EMAIL}).json()
    app = requests.post(f"{base}/v1/clients", headers=admin, json={
        "name": "Iron Gym app", "partner_id": partner["id"], "redirect_uris": [REDIRECT_URI]}).json()
    check(app.get("redirect_uris") == [REDIRECT_URI], "the app's client is registered with its redirect URI")

    discovery = requests.get(f"{base}/.well-known/openid-configuration").json()
    check(discovery["issuer"] == base, f"discovery names the issuer {base}")
    check("S256" in discovery["code_challenge_methods_supported"], "discovery offers PKCE S256")

    oauth = OAuth2Session(
        client_id=app["client_id"], client_secret=app["client_secret"],
        scope="openid member", redirect_uri=REDIRECT_URI,
        code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic")
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = oauth.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce=nonce)

    browser = requests.Session()
    r = browser.get(url, allow_redirects=False)
    check(r.status_code == 303 and r.headers["location"].startswith("/portal/sign-in"),
          "not signed in: the authorization endpoint sends the member to the portal's sign-in")
    sign_in = r.headers["location"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(sign_in).query))
    page = browser.get(base + sign_in)
    seen = len(mails_to(log_path, EMAIL))
    r = browser.post(f"{base}/portal/sign-in", allow_redirects=False, data={
        "email": EMAIL, "csrf": csrf_field(page.text), "next": query["next"], "partner": query["partner"]})
    check(r.status_code == 200, "the portal asks for the mailed code")
    code = code_from_log(log_path, EMAIL, seen)
    r = browser.post(f"{base}/portal/sign-in/code", allow_redirects=False, data={
        "email": EMAIL, "code": code, "csrf": browser.cookies.get("coalition_csrf"),
        "next": query["next"], "partner": query["partner"]})
    check(r.status_code == 303 and r.headers["location"] == query["next"],
          "signed in with the code, back to the authorization request")
    r = browser.get(base + r.headers["location"], allow_redirects=False)
    location = r.headers.get("location", "")
    check(r.status_code == 303 and location.startswith(REDIRECT_URI),
          "signed in: the app gets a code at its redirect URI")

    token = oauth.fetch_token(discovery["token_endpoint"], authorization_response=location,
                              code_verifier=verifier, state=state)
    check("id_token" in token and "refresh_token" in token, "the code exchange answers an ID token and a refresh token")
    jwks = JsonWebKey.import_key_set(requests.get(discovery["jwks_uri"]).json())
    claims = jwt.decode(token["id_token"], jwks, claims_options={
        "iss": {"essential": True, "value": discovery["issuer"]},
        "aud": {"essential": True, "value": app["client_id"]},
        "nonce": {"essential": True, "value": nonce},
    })
    claims.validate()
    check(claims["sub"] == member["id"], "the ID token verifies with the JWKS and names the member")
    me = requests.get(discovery["userinfo_endpoint"],
                      headers={"Authorization": "Bearer " + token["access_token"]}).json()
    check(me.get("sub") == member["id"], "userinfo answers the member for the access token")
    first_refresh = token["refresh_token"]
    refreshed = oauth.refresh_token(discovery["token_endpoint"], refresh_token=first_refresh)
    check(refreshed["refresh_token"] != first_refresh, "a refresh rotates the refresh token")
    replay = requests.post(discovery["token_endpoint"], auth=(app["client_id"], app["client_secret"]),
                           data={"grant_type": "refresh_token", "refresh_token": first_refresh})
    check(replay.status_code == 400 and replay.json()["error"] == "invalid_grant",
          "a replayed refresh token is refused (and the sign-in revoked)")
    after = requests.get(discovery["userinfo_endpoint"],
                         headers={"Authorization": "Bearer " + refreshed["access_token"]})
    check(after.status_code == 401, "the revoked sign-in's access token is refused")
    print("authlib completed the flow")


if __name__ == "__main__":
    main()
