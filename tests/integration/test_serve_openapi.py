"""schemathesis against the OpenAPI spec ``cmrag serve`` serves: generated requests to every
route (valid and invalid bodies, odd names, multipart uploads) never get a 5xx, and responses
match the spec. A real server process with the tiny GGUF and its own store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, cmrag_serve

schemathesis = pytest.importorskip("schemathesis", reason="needs the test extra")
pytest.importorskip("fastapi", reason="needs the serve extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

KEY = "schema-key-42"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> Iterator[str]:
    base = tmp_path_factory.mktemp("serve-openapi")
    env = {
        "CMR_PERSIST_DIR": str(base / "store"),
        "CMR_EMBEDDING_MODEL": str(tiny_embedder),
        "CMR_MODEL_PATH": str(tiny_model.gguf_path),
        "CMR_N_CTX": str(SERVER_N_CTX),
        "CMR_MAX_TOKENS": "8",
        "CMR_INGEST_WORKERS": "0",
    }
    with cmrag_serve("--api-key", KEY, env=env, log_dir=base) as url:
        import httpx

        seeded = httpx.post(
            f"{url}/v1/knowledge_bases/docs/files",
            headers=AUTH,
            files=[("files", ("笔记.txt", "居住权不得转让、继承。表面码保护逻辑比特。".encode()))],
            timeout=300,
        )
        assert seeded.status_code == 200, seeded.text
        yield url


def test_no_request_gets_a_server_error(served: str) -> None:
    """Every operation of the served spec, fuzzed; the failures of all of them reported."""
    api = schemathesis.openapi.from_url(f"{served}/openapi.json", headers=AUTH)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 9  # the routes of the OpenAI and knowledge-base APIs

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(base_url=served, headers=AUTH, checks=checks, timeout=120)

        try:
            fuzz()
        except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            failures.append(f"{operation.label}: {exc}")  # every operation's, not the first
    assert not failures, "\n\n".join(failures)
