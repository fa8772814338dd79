"""One error tree (issue 16): every exception class aifi defines derives from
:class:`aifi.errors.AifiError`, so a caller can tell aifi's own failures from everything else,
and every HTTP-mapped one from :class:`aifi.errors.HubError` carries its headers."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import aifi
from aifi.errors import (
    AifiError,
    Forbidden,
    HubError,
    InvalidRequest,
    TooManyRequests,
    Unauthorized,
)


def _skipped(name: str) -> bool:
    # Alembic's env.py and version scripts run only inside Alembic (alembic.context);
    # ``python -m aifi`` runs the CLI when imported.
    return ".migrations." in name or name == "aifi.__main__"


def _modules() -> list[ModuleType]:
    modules: list[ModuleType] = [aifi]
    failures: list[str] = []
    for info in pkgutil.walk_packages(aifi.__path__, "aifi."):
        if _skipped(info.name):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(f"{info.name}: {exc!r}")
    assert not failures, "modules that cannot be imported:\n" + "\n".join(failures)
    return modules


def _exception_classes() -> dict[str, type[Exception]]:
    found: dict[str, type[Exception]] = {}
    for module in _modules():
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == module.__name__
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_aifi_defines_is_in_the_tree() -> None:
    classes = _exception_classes()
    assert len(classes) > 20  # the walk found aifi's exceptions (and would find a new one)
    assert "aifi.errors.HubError" in classes
    assert "aifi.gateway.settings.GatewayNotStartable" in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, AifiError))
    assert outside == [], f"exceptions outside aifi.errors.AifiError: {outside}"


def test_the_built_in_bases_callers_catch_are_kept() -> None:
    from aifi.gateway.config import ConfigError
    from aifi.hub.auth.clients import ClientError
    from aifi.oauth_client import TokenError

    assert issubclass(ConfigError, ValueError)  # pydantic validators and callers catch these
    assert issubclass(ClientError, ValueError)
    assert issubclass(TokenError, RuntimeError)


def test_hub_errors_carry_their_headers() -> None:
    assert HubError("x").headers == {}
    assert InvalidRequest("bad").reason == "bad"
    assert str(InvalidRequest("bad")) == "bad"
    assert Unauthorized("no", challenge='Bearer realm="aifi"').headers == {
        "WWW-Authenticate": 'Bearer realm="aifi"'
    }
    assert TooManyRequests("slow", retry_after=7).headers == {"Retry-After": "7"}
    forbidden = Forbidden("no", headers={"WWW-Authenticate": "Bearer"})
    assert forbidden.headers == {"WWW-Authenticate": "Bearer"}
    assert forbidden.status_code == 403
    assert forbidden.issue_code is None
    assert tuple(forbidden.expressions) == ()
