"""Property-based fuzz of everything an attacker controls before authentication (issue 6,
"Bad input"), against one real uvicorn hub in ``auth=builtin`` mode:

- any ``Authorization`` header on a protected endpoint (RFC 6750 §3) is 400, 401 with
  ``WWW-Authenticate: Bearer`` or 403 — never a success, never a server error;
- any request to the token endpoint (RFC 6749 §5.2), to introspection (RFC 7662 §2.2, where
  an unknown token is ``{"active": false}``) and to revocation (RFC 7009 §2.2, where an
  unknown token is 200) is a clean OAuth2 error or that answer — never an access token;
- a valid token of hospital A with any path and query parameters never shows hospital B's
  identifiers, and B's identifiers answer exactly as identifiers nobody has (issue 6 §4:
  no inferring the existence of another hospital's data).

Hypothesis draws inside each test (``st.data()``) because the strategies need the live
hub's tokens and identifiers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey
from pydicom.uid import generate_uid

from aifi.hub.auth.clients import DEFAULT_SCOPES
from aifi.oauth_client import ASSERTION_TYPE, Credentials
from tests.conftest import LiveServer
from tests.support.auth import bearer, register, secured_hub, token_for
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.ups import new_workitem

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    # no "explain" phase: it re-parses this file's source, which adds nothing here
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
}
"""RFC 6749 §5.2 error codes (RFC 7009 §2.2.1 adds ``unsupported_token_type``)."""

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Hospital:
    client: Credentials
    token: str
    study: str
    series: str
    instance: str
    patient_id: str
    workitem: str
    order: str


@dataclass(frozen=True)
class Hub:
    server: LiveServer
    http: httpx.Client
    a: Hospital
    b: Hospital
    gateway: Credentials
    """A client_secret_basic client of A whose correct credentials the fuzz may send."""
    victim: Credentials
    victim_token: str
    """A token of another client of A: nobody else may introspect or revoke it."""
    signer: Credentials
    """A private_key_jwt client of A: the fuzz mangles its assertions."""
    replayed_jti: str
    revoked_token: str
    narrow_token: str
    """A valid token of A with only ``results.review``: no sampled endpoint accepts it."""

    def __repr__(self) -> str:  # keeps hypothesis' reports of failing examples short
        return f"Hub({self.server.url})"


def _seed(http: httpx.Client, server: LiveServer, tenant: str) -> Hospital:
    client = register(server, tenant=tenant)
    token = token_for(client, DEFAULT_SCOPES["hospital"])
    patient_id = f"PID-{tenant}-{uuid.uuid4().hex[:8]}"
    datasets = make_study(1, 1, patient_id=patient_id, accession=f"ACC-{tenant}")
    body, content_type = multipart_related([to_bytes(ds) for ds in datasets])
    stored = http.post(
        "/dicomweb/studies", content=body, headers={**bearer(token), "Content-Type": content_type}
    )
    assert stored.status_code == 200, stored.text
    workitem = str(generate_uid())
    created = http.post(
        f"/dicomweb/workitems?workitem={workitem}",
        json=[new_workitem(study_uid=str(datasets[0].StudyInstanceUID), patient_id=patient_id)],
        headers=bearer(token),
    )
    assert created.status_code == 201, created.headers.get("warning")
    order = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:epd:order", "value": f"ORD-{tenant}"}],
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    ordered = http.post(
        "/fhir/ServiceRequest", json=order, headers={**bearer(token), "Content-Type": FHIR_JSON}
    )
    assert ordered.status_code == 201, ordered.text
    return Hospital(
        client=client,
        token=token,
        study=str(datasets[0].StudyInstanceUID),
        series=str(datasets[0].SeriesInstanceUID),
        instance=str(datasets[0].SOPInstanceUID),
        patient_id=patient_id,
        workitem=workitem,
        order=str(ordered.json()["id"]),
    )


def _assertion(signer: Credentials, **claims: Any) -> str:
    assert signer.private_jwk is not None
    key = ECKey.import_key(signer.private_jwk)
    now = int(time.time())
    body = {
        "iss": signer.client_id,
        "sub": signer.client_id,
        "aud": signer.token_url,
        "exp": now + 240,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    body.update(claims)
    header = {"alg": "ES384", "typ": "JWT", "kid": signer.private_jwk["kid"]}
    return jwt.encode(
        header, {k: v for k, v in body.items() if v is not None}, key, algorithms=["ES384"]
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir: Path = tmp_path_factory.mktemp("auth-fuzz")
    with (
        secured_hub(data_dir, access_token_seconds=3600) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        a = _seed(http, server, "hospital-a")
        b = _seed(http, server, "hospital-b")
        gateway = register(server, tenant="hospital-a")
        victim = register(server, tenant="hospital-a")
        signer = register(server, tenant="hospital-a", method="private_key_jwt")
        replayed = uuid.uuid4().hex
        first = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "dicomweb.read",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": _assertion(signer, jti=replayed),
            },
        )
        assert first.status_code == 200, first.text
        owner = register(server, tenant="hospital-a")
        assert owner.secret is not None
        revoked = token_for(owner, ["dicomweb.read"])
        gone = http.post(
            "/oauth/revoke", data={"token": revoked}, auth=(owner.client_id, owner.secret)
        )
        assert gone.status_code == 200
        assert http.get("/dicomweb/studies", headers=bearer(revoked)).status_code == 401
        yield Hub(
            server=server,
            http=http,
            a=a,
            b=b,
            gateway=gateway,
            victim=victim,
            victim_token=token_for(victim, ["dicomweb.read"]),
            signer=signer,
            replayed_jti=replayed,
            revoked_token=revoked,
            narrow_token=token_for(a.client, ["results.review"]),
        )


# -- strategies -------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    """RFC 7617 Basic credentials (RFC 6749 §2.3.1 form-encodes them first; random ids are
    sent as they are, which is what a sloppy client does)."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
"""What fits in an HTTP header value (RFC 9110 §5.5: visible ASCII, space, obs-text)."""
SCHEMES = ["Bearer", "bearer", "BEARER", "Basic", "Digest", "Negotiate", "DPoP", "MAC", "Token"]
ALGS = ["none", "None", "NONE", "nOnE", "HS256", "HS384", "HS512", "RS256", "RS384", "ES256"]
ALGS += ["ES384", "PS384", "EdDSA", "", "ES384 "]


def jwt_claims(hub: Hub) -> st.SearchStrategy[dict[str, Any]]:
    """Claims shaped like the hub's own access tokens, with A's, B's and strangers' values."""
    clients = [hub.a.client.client_id, hub.b.client.client_id, "admin", "", "*"]
    return st.fixed_dictionaries(
        {},
        optional={
            "iss": st.sampled_from([hub.server.url, hub.server.url + "/", "https://evil.test"])
            | st.text(max_size=30),
            "sub": st.sampled_from(clients) | st.text(max_size=30),
            "aud": st.sampled_from([hub.server.url, [hub.server.url], "aifi-hub"]) | json_values,
            "tenant": st.sampled_from(["hospital-a", "hospital-b", "default", ""]) | json_values,
            "role": st.sampled_from(["hospital", "performer", "admin", "dev", ""]) | json_values,
            "scope": st.lists(
                st.sampled_from(["admin", "dicomweb.read", "system/*.cruds", "worklist.performer"]),
                max_size=4,
            ).map(" ".join)
            | json_values,
            "exp": st.integers(min_value=-(2**40), max_value=2**40) | json_values,
            "nbf": st.integers(min_value=0, max_value=2**40),
            "iat": st.integers(min_value=0, max_value=2**40),
            "jti": st.text(max_size=40) | json_values,
            "products": json_values,
        },
    )


def jwt_shaped(hub: Hub) -> st.SearchStrategy[str]:
    """Three base64url segments: a JOSE header (often plausible), claims, a random signature."""
    kid = json.loads(unb64url(hub.a.token.split(".")[0])).get("kid")
    header = st.fixed_dictionaries(
        {"alg": st.sampled_from(ALGS) | json_values},
        optional={
            "kid": st.sampled_from([kid, "../../etc/passwd", ""]) | json_values,
            "typ": st.sampled_from(["JWT", "at+jwt", "JWE"]),
            "jku": st.just("http://127.0.0.1:1/jwks.json"),
            "crit": st.lists(st.text(max_size=10), max_size=2),
            "zip": st.just("DEF"),
            "enc": st.just("A256GCM"),
        },
    )
    head = header.map(lambda h: b64url(json.dumps(h).encode()))
    body = st.one_of(
        jwt_claims(hub).map(lambda c: b64url(json.dumps(c).encode())),
        json_values.map(lambda v: b64url(json.dumps(v).encode())),
        st.binary(max_size=60).map(b64url),
        st.text(B64URL + "=+/.%", max_size=60),
    )
    signature = st.binary(max_size=130).map(b64url) | st.just("") | st.text(B64URL, max_size=20)
    return st.builds(lambda h, p, s: f"{h}.{p}.{s}", head, body, signature)


def tampered(token: str, public_jwks: dict[str, Any]) -> st.SearchStrategy[str]:
    """A real access token changed in a way its signature no longer covers."""
    head, payload, signature = token.split(".")
    claims = json.loads(unb64url(payload))
    header = json.loads(unb64url(head))

    @st.composite
    def flipped(draw: st.DrawFn) -> str:
        position = draw(st.integers(min_value=0, max_value=len(token) - 1))
        original = token[position]
        replacement = draw(st.sampled_from([c for c in B64URL + ".=~" if c != original]))
        return token[:position] + replacement + token[position + 1 :]

    @st.composite
    def forged_claims(draw: st.DrawFn) -> str:
        changes = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "tenant": st.sampled_from(["hospital-b", "default", "hospital-a "]),
                    "role": st.sampled_from(["admin", "dev", "performer"]),
                    "scope": st.just(claims.get("scope", "") + " admin system/AuditEvent.rs"),
                    "exp": st.just(int(claims.get("exp", 0)) + 10**6),
                    "sub": st.just("hospital-b-hospital-x"),
                    "aud": st.just("https://evil.test"),
                },
            ).filter(bool)
        )
        return f"{head}.{b64url(json.dumps({**claims, **changes}).encode())}.{signature}"

    @st.composite
    def forged_header(draw: st.DrawFn) -> str:
        alg = draw(st.sampled_from(["none", "None", "HS384", "HS256", "ES256", "RS384"]))
        new_head = b64url(json.dumps({**header, "alg": alg}).encode())
        signing_input = f"{new_head}.{payload}".encode()
        new_signature = draw(
            st.sampled_from(
                [
                    "",
                    signature,
                    # the classic key confusion: HMAC keyed with the public key
                    b64url(
                        hmac.new(
                            json.dumps(public_jwks).encode(), signing_input, hashlib.sha384
                        ).digest()
                    ),
                ]
            )
        )
        return f"{new_head}.{payload}.{new_signature}"

    return st.one_of(
        flipped(),
        forged_claims(),
        forged_header(),
        st.integers(min_value=0, max_value=len(token) - 1).map(lambda n: token[:n]),
        st.sampled_from([token + ".", token + ".x.y", "." + token, token[::-1]]),
        st.just(f"{head}.{payload}"),
        st.just(f"{head}..{signature}"),
    )


def not_quite_bearer(hub: Hub, jwks: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Authorization header values that must not authenticate anyone."""
    valid = hub.a.token
    credentials = st.one_of(
        header_text,
        jwt_shaped(hub),
        tampered(valid, jwks),
        st.sampled_from([hub.revoked_token, hub.narrow_token]),
    )
    scheme = st.sampled_from(SCHEMES) | header_text.filter(lambda s: " " not in s)
    separator = st.sampled_from([" ", "  ", "\t", "", ",", " , "])
    composed = st.builds(lambda s, sep, c: f"{s}{sep}{c}", scheme, separator, credentials)
    basic = st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode())
    wrong_scheme = st.sampled_from(["Basic", "Digest", "MAC", "Token", ""]).map(
        lambda s: f"{s} {valid}".strip() if s else f"{valid} x"
    )
    lookalike = st.sampled_from(
        [f"Bearer {valid} {valid}", f"Bearer {valid}, Bearer {valid}", f"Bearer {valid}x"]
    )
    long = st.builds(
        lambda n, c: "Bearer " + c * n,
        st.integers(min_value=4000, max_value=20000),
        st.sampled_from(["A", "a.", "%", "€"]),
    )
    text = st.one_of(composed, basic, wrong_scheme, lookalike, long, header_text)
    return text.map(lambda s: s.encode("utf-8") if max(s or "a") > "\xff" else s.encode("latin-1"))


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None


def protected_endpoints(hub: Hub) -> list[Endpoint]:
    """A sample of protected endpoints: DICOMweb QIDO, WADO, STOW, UPS-RS, FHIR, the API."""
    a = hub.a
    study, content_type = multipart_related([to_bytes(ds) for ds in make_study(1, 1)])
    workitem = json.dumps([new_workitem()]).encode()
    return [
        Endpoint("GET", "/dicomweb/studies"),
        Endpoint("GET", f"/dicomweb/studies?PatientID={a.patient_id}"),
        Endpoint("GET", f"/dicomweb/studies/{a.study}/series"),
        Endpoint("GET", f"/dicomweb/studies/{a.study}"),
        Endpoint("GET", f"/dicomweb/studies/{a.study}/metadata"),
        Endpoint("GET", f"/dicomweb/studies/{a.study}/series/{a.series}/instances/{a.instance}"),
        Endpoint("POST", "/dicomweb/studies", study, content_type),
        Endpoint("GET", "/dicomweb/workitems"),
        Endpoint("GET", f"/dicomweb/workitems/{a.workitem}"),
        Endpoint("POST", "/dicomweb/workitems", workitem, "application/dicom+json"),
        Endpoint("GET", "/fhir/ServiceRequest"),
        Endpoint("GET", f"/fhir/ServiceRequest/{a.order}"),
        Endpoint("GET", "/fhir/AuditEvent"),
        Endpoint("GET", "/api/v1/results"),
        Endpoint("GET", f"/api/v1/studies/{a.study}/routing"),
    ]


def send(
    http: httpx.Client, endpoint: Endpoint, headers: list[tuple[bytes, bytes]]
) -> httpx.Response:
    if endpoint.content_type is not None:
        headers = [*headers, (b"Content-Type", endpoint.content_type.encode())]
    try:
        return http.request(
            endpoint.method, endpoint.path, content=endpoint.body or None, headers=headers
        )
    except httpx.LocalProtocolError:
        # httpx refuses to send it (a header value HTTP/1.1 cannot carry): not a request
        from hypothesis import reject

        reject()


# -- (a) the Authorization header of protected endpoints -------------------------------


@FUZZ
@given(data=st.data())
def test_no_malformed_authorization_header_gets_in(hub: Hub, data: st.DataObject) -> None:
    jwks = hub.http.get("/oauth/jwks").json()
    endpoint = data.draw(st.sampled_from(protected_endpoints(hub)), label="endpoint")
    values = data.draw(
        st.lists(not_quite_bearer(hub, jwks), min_size=1, max_size=1)
        | st.lists(
            st.sampled_from([hub.a.token.encode()]) | not_quite_bearer(hub, jwks),
            min_size=2,
            max_size=3,
        ),
        label="Authorization",
    )
    response = send(hub.http, endpoint, [(b"Authorization", value) for value in values])
    assert response.status_code in (400, 401, 403), (response.status_code, response.text[:300])
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    if response.status_code == 403:
        assert "scope" in response.text or "administrators" in response.text, response.text


def test_the_fuzz_would_notice_a_valid_token(hub: Hub) -> None:
    """The property above is not vacuous: the same endpoints with A's real token work."""
    for endpoint in protected_endpoints(hub):
        if endpoint.method != "GET" or "routing" in endpoint.path or "AuditEvent" in endpoint.path:
            continue
        response = send(hub.http, endpoint, [(b"Authorization", f"Bearer {hub.a.token}".encode())])
        assert response.status_code == 200, (endpoint, response.status_code, response.text[:200])


# -- (b) the token, introspection and revocation endpoints -----------------------------

FORM_FIELDS = [
    "grant_type",
    "scope",
    "client_id",
    "client_secret",
    "client_assertion_type",
    "client_assertion",
    "token",
    "token_type_hint",
    "username",
    "password",
    "code",
    "refresh_token",
    "access_token",
    "redirect_uri",
]
NOT_GRANTABLE_TO_A_HOSPITAL = [
    "admin",
    "worklist.performer",
    "system/AuditEvent.cruds",
    "user/*.read",
    "patient/*.read",
    "launch/patient",
    "openid fhirUser",
    "offline_access",
    "system/Task.x",
    "system/task.rs",
    "",
]


def client_assertions(hub: Hub) -> st.SearchStrategy[str]:
    """Client assertions of the private_key_jwt client, each broken in at least one way
    (RFC 7523 §3, SMART Backend Services): unverifiable, replayed, wrong audience, issuer,
    subject or lifetime, or signed with a key the hub does not know."""
    signer = hub.signer
    now = int(time.time())
    broken: list[dict[str, Any]] = [
        {"aud": hub.server.url},
        {"aud": "https://evil.test/oauth/token"},
        {"aud": None},
        {"exp": now + 3600},
        {"exp": now - 120},
        {"exp": None},
        {"exp": "soon"},
        {"nbf": now + 600},
        {"iat": now + 3600},
        {"sub": hub.a.client.client_id},
        {"iss": hub.a.client.client_id},
        {"jti": None},
        {"jti": ""},
        {"jti": hub.replayed_jti},
        {"jti": "x" * 300},
    ]
    broken_claims = st.sampled_from(broken)
    stranger = dict(ECKey.generate_key("P-384", private=True).as_dict(private=True))

    def sign_with_stranger(claims: dict[str, Any]) -> str:
        key = ECKey.import_key(stranger)
        header = {"alg": "ES384", "kid": signer.private_jwk["kid"] if signer.private_jwk else ""}
        claims = {"iss": signer.client_id, "sub": signer.client_id, **claims}
        return jwt.encode(header, claims, key, algorithms=["ES384"])

    def none_alg(claims: dict[str, Any]) -> str:
        head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        body: dict[str, Any] = {"iss": signer.client_id, "sub": signer.client_id}
        body["aud"] = signer.token_url
        body.update({"exp": now + 200, "jti": uuid.uuid4().hex, **claims})
        return f"{head}.{b64url(json.dumps(body).encode())}."

    fresh = st.builds(lambda: _assertion(signer))
    return st.one_of(
        broken_claims.map(lambda c: _assertion(signer, **c)),
        st.builds(lambda c: sign_with_stranger(c), st.just({"aud": signer.token_url})),
        st.builds(none_alg, st.just({})),
        fresh.flatmap(lambda real: tampered(real, {})).filter(lambda t: t.count(".") == 2),
        jwt_shaped(hub),
        header_text,
    )


@st.composite
def token_requests(draw: st.DrawFn, hub: Hub, path: str) -> tuple[list[Any], bytes, bool]:
    """(headers, body, authenticated with correct Basic credentials)."""
    gateway = hub.gateway
    assert gateway.secret is not None
    auth_kind = draw(
        st.sampled_from(["none", "correct", "wrong secret", "random", "malformed", "bearer"])
    )
    headers: list[Any] = []
    if auth_kind == "correct":
        headers.append(("Authorization", basic(gateway.client_id, gateway.secret)))
    elif auth_kind == "wrong secret":
        secret = draw(st.text(max_size=40).filter(lambda s: s != gateway.secret))
        headers.append(("Authorization", basic(gateway.client_id, secret)))
    elif auth_kind == "random":
        user, password = draw(st.text(max_size=30)), draw(st.text(max_size=30))
        headers.append(("Authorization", basic(user, password)))
    elif auth_kind == "malformed":
        raw = draw(
            st.sampled_from(["Basic", "Basic !!!", "Basic Og==", "Basic " + b64url(b"\xff\xfe:x")])
            | header_text.map(lambda s: "Basic " + s)
            | st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode())
        )
        headers.append(("Authorization", raw.encode("latin-1")))
    elif auth_kind == "bearer":
        headers.append(("Authorization", f"Bearer {hub.a.token}"))
    if draw(st.booleans()):  # a second Authorization header
        headers.append(headers[0] if headers else ("Authorization", "Basic Og=="))

    values = {
        "grant_type": st.sampled_from(
            [
                "client_credentials",
                "password",
                "authorization_code",
                "refresh_token",
                "",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "CLIENT_CREDENTIALS",
            ]
        )
        | st.text(max_size=30),
        "scope": st.lists(
            st.sampled_from([*NOT_GRANTABLE_TO_A_HOSPITAL, "dicomweb.read", "system/*.rs"]),
            max_size=4,
        ).map(" ".join)
        | st.text(max_size=40),
        "client_id": st.sampled_from(
            [gateway.client_id, hub.signer.client_id, hub.b.client.client_id]
        )
        | st.text(max_size=30),
        "client_assertion_type": st.sampled_from([ASSERTION_TYPE, ASSERTION_TYPE.upper(), ""])
        | st.text(max_size=30),
        "client_assertion": client_assertions(hub),
        "token": st.sampled_from([hub.victim_token, hub.revoked_token, hub.b.token, ""])
        | tampered(hub.victim_token, {})
        | jwt_shaped(hub)
        | st.text(max_size=60),
        "token_type_hint": st.sampled_from(["access_token", "refresh_token", ""])
        | st.text(max_size=20),
    }
    form: dict[str, str] = draw(
        st.fixed_dictionaries(
            {},
            optional={name: values.get(name, st.text(max_size=40)) for name in FORM_FIELDS},
        )
    )
    form.update(draw(st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=3)))
    if draw(st.integers(0, 3)) == 0:  # usually a plausible request
        form.setdefault("grant_type", "client_credentials")
        form.setdefault("scope", "dicomweb.read")
    # correct credentials: the request must still be refused (no grantable scope, or a
    # second authentication method, or another grant type)
    if (
        path == "/oauth/token"
        and auth_kind == "correct"
        and form.get("grant_type") == "client_credentials"
        and "client_assertion" not in form
    ):
        form["scope"] = draw(st.sampled_from(NOT_GRANTABLE_TO_A_HOSPITAL))
    pairs = list(form.items())
    if pairs and draw(st.integers(0, 5)) == 0:
        pairs.append(pairs[0])  # a repeated parameter (RFC 6749 §3.2)

    encoding = draw(
        st.sampled_from(["form"] * 6 + ["json", "multipart", "bytes", "oversized", "latin-1"])
    )
    content_type: str | None = "application/x-www-form-urlencoded"
    if encoding == "form":
        body = urlencode(pairs).encode()
    elif encoding == "json":
        body, content_type = json.dumps(dict(pairs)).encode(), "application/json"
    elif encoding == "multipart":
        body = (
            b"--b\r\nContent-Disposition: form-data; name=grant_type\r\n\r\n"
            b"client_credentials\r\n--b--"
        )
        content_type = "multipart/form-data; boundary=b"
    elif encoding == "bytes":
        body = draw(st.binary(max_size=200))
    elif encoding == "latin-1":
        body = urlencode(pairs, encoding="latin-1", errors="replace").encode() + b"&x=%FF%FE\xff"
    else:
        body = urlencode([*pairs, ("padding", "x" * 70_000)]).encode()
    content_type = draw(
        st.sampled_from(
            [content_type] * 5
            + [None, "text/plain", "application/x-www-form-urlencoded; charset=utf-8"]
            + ["APPLICATION/X-WWW-FORM-URLENCODED", "application/x-www-form-urlencoded-x"]
        )
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return headers, body, auth_kind == "correct"


def _is_oauth_error(response: httpx.Response, extra: frozenset[str] = frozenset()) -> None:
    assert response.status_code in (400, 401), (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert body["error"] in OAUTH_ERRORS | extra, body
    assert isinstance(body.get("error_description", ""), str)
    assert response.headers.get("cache-control") == "no-store"
    if response.status_code == 401:
        assert body["error"] == "invalid_client", body
        assert response.headers.get("www-authenticate"), response.headers


@FUZZ
@given(data=st.data())
def test_token_endpoints_answer_garbage_with_rfc_errors(hub: Hub, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(["/oauth/token", "/oauth/introspect", "/oauth/revoke"]))
    headers, body, authenticated = data.draw(token_requests(hub, path), label="request")
    try:
        response = hub.http.post(path, content=body, headers=headers)
    except httpx.LocalProtocolError:
        from hypothesis import reject

        reject()
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code == 200 and path == "/oauth/introspect":
        assert authenticated, response.text
        assert response.json() == {"active": False}
    elif response.status_code == 200 and path == "/oauth/revoke":
        assert authenticated, response.text
        assert response.content == b""
    else:
        _is_oauth_error(
            response,
            frozenset({"unsupported_token_type"}) if path == "/oauth/revoke" else frozenset(),
        )


def test_non_ascii_basic_credentials_are_invalid_client(hub: Hub) -> None:
    response = hub.http.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&scope=dicomweb.read&token=x",
        headers={
            b"Authorization": b"Basic \xe8",
            b"Content-Type": b"application/x-www-form-urlencoded",
        },
    )
    _is_oauth_error(response)
    assert response.status_code == 401


def test_the_victims_token_survived_the_fuzz(hub: Hub) -> None:
    """Revocation attempts by other clients (the fuzz above sends the victim's token to
    /oauth/revoke with the gateway's credentials) left it valid (RFC 7009 §2.1: a client
    revokes only its own tokens). Runs after the fuzz, in file order."""
    assert hub.victim.secret is not None
    response = hub.http.post(
        "/oauth/introspect",
        data={"token": hub.victim_token},
        auth=(hub.victim.client_id, hub.victim.secret),
    )
    assert response.json()["active"] is True
    works = hub.http.get("/dicomweb/studies", headers=bearer(hub.victim_token))
    assert works.status_code == 200


# -- (c) hospital A never sees hospital B ----------------------------------------------


def b_identifiers(hub: Hub) -> list[str]:
    b = hub.b
    return [b.study, b.series, b.instance, b.patient_id, b.workitem, b.order]


PATHS = [
    "/dicomweb/studies/{study}",
    "/dicomweb/studies/{study}/metadata",
    "/dicomweb/studies/{study}/series",
    "/dicomweb/studies/{study}/instances",
    "/dicomweb/studies/{study}/series/{series}",
    "/dicomweb/studies/{study}/series/{series}/metadata",
    "/dicomweb/studies/{study}/series/{series}/instances",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/1",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
    "/dicomweb/studies/{study}/thumbnail",
    "/dicomweb/workitems/{workitem}",
    "/api/v1/results/{workitem}",
    "/api/v1/studies/{study}/routing",
    "/fhir/ServiceRequest/{order}",
    "/fhir/ServiceRequest/{order}/_history/1",
    "/fhir/Task/{workitem}",
    "/fhir/ImagingStudy/{study}",
    "/fhir/Patient/{patient}",
]
SEARCHES = [
    ("/dicomweb/studies", "StudyInstanceUID"),
    ("/dicomweb/studies", "PatientID"),
    ("/dicomweb/studies", "AccessionNumber"),
    ("/dicomweb/series", "SeriesInstanceUID"),
    ("/dicomweb/instances", "SOPInstanceUID"),
    ("/dicomweb/workitems", "PatientID"),
    ("/dicomweb/workitems", "StudyInstanceUID"),
    ("/api/v1/results", "study"),
    ("/fhir/ServiceRequest", "_id"),
    ("/fhir/ServiceRequest", "identifier"),
    ("/fhir/ServiceRequest", "subject"),
    ("/fhir/Task", "_id"),
    ("/fhir/ImagingStudy", "identifier"),
    ("/fhir/Patient", "identifier"),
]


def strangers(hub: Hub) -> dict[str, str]:
    """A never-seen identifier of the same shape for each of B's."""
    return {
        value: str(generate_uid())
        if set(value) <= set("0123456789.")
        else (value[:4] + uuid.uuid4().hex * 2)[: len(value)]
        for value in b_identifiers(hub)
    }


@st.composite
def probes(draw: st.DrawFn, hub: Hub) -> tuple[str, dict[str, str]]:
    """A read or search by hospital A: a path template filled with B's identifiers, A's,
    and noise, or a search on one of them."""
    b = hub.b
    own = {
        "study": b.study,
        "series": b.series,
        "instance": b.instance,
        "workitem": b.workitem,
        "order": b.order,
        "patient": b.patient_id,
    }
    noise = st.one_of(
        st.sampled_from([hub.a.study, hub.a.order, hub.a.workitem, "*", "..", "%2e%2e", "1.2"]),
        st.text(max_size=30),
        st.from_regex(r"\A[12](\.[0-9]{1,6}){1,8}\Z"),
    )
    if draw(st.booleans()):
        template = draw(st.sampled_from(PATHS))
        values = {k: draw(st.sampled_from([v, v, None]) | noise) or v for k, v in own.items()}
        path = template.format(**{k: quote(v, safe="") for k, v in values.items()})
        query = draw(
            st.dictionaries(
                st.sampled_from(["includefield", "_include", "_elements", "limit"]),
                st.text(max_size=10),
                max_size=1,
            )
        )
        return path, query
    path, name = draw(st.sampled_from(SEARCHES))
    value = draw(st.sampled_from(b_identifiers(hub)) | noise)
    if name == "identifier" and draw(st.booleans()):
        value = f"urn:dicom:uid|urn:oid:{value}" if value == b.study else f"|{value}"
    query = {name: value}
    if draw(st.booleans()):
        query["fuzzymatching"] = "true"
    if draw(st.booleans()):
        query[draw(st.sampled_from(["includefield", "_elements", "_include"]))] = "all"
    return path, query


def _shows(response: httpx.Response, values: list[str]) -> list[str]:
    """The values in what the response tells; a FHIR Bundle's links repeat the request
    (FHIR R4 bundle.html#searchset), they tell nothing."""
    text = response.text
    if response.headers.get("content-type", "").startswith(FHIR_JSON):
        body = response.json()
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            text = json.dumps({k: v for k, v in body.items() if k != "link"})
    return [value for value in values if value in text]


@FUZZ
@given(data=st.data())
def test_hospital_a_never_sees_hospital_b(hub: Hub, data: st.DataObject) -> None:
    path, query = data.draw(probes(hub), label="probe")
    response = hub.http.get(path, params=query, headers=bearer(hub.a.token))
    assert response.status_code < 500, (response.status_code, response.text[:300])
    secrets = b_identifiers(hub)
    sent = [s for s in secrets if quote(s, safe="") in path or any(s in v for v in query.values())]
    if response.is_success:
        assert not _shows(response, secrets), (path, query, response.text[:500])
    else:  # an error may quote the request, nothing else of B
        unsent = [s for s in secrets if s not in sent]
        assert not _shows(response, unsent), (path, query, response.text[:500])
    if not sent:
        return
    # B's identifiers answer exactly as identifiers nobody has: no inferring they exist
    swap = strangers(hub)
    twin_path, twin_query = path, dict(query)
    for value in sent:
        twin_path = twin_path.replace(quote(value, safe=""), quote(swap[value], safe=""))
        twin_query = {k: v.replace(value, swap[value]) for k, v in twin_query.items()}
    twin = hub.http.get(twin_path, params=twin_query, headers=bearer(hub.a.token))
    assert response.status_code == twin.status_code, (path, query, response.text, twin.text)
    if not response.is_success:
        unswapped = twin.text
        for value in sent:
            unswapped = unswapped.replace(swap[value], value)
        assert response.text == unswapped, (path, query, response.text, twin.text)
