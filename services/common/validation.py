"""Field types for request bodies that Postgres can store as they are."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, StringConstraints


def _storable(text: str) -> str:
    # NUL and lone surrogates (from JSON "\ud800") cannot go into Postgres text: a 422, not a 500.
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


# Idempotency keys and other ids chosen by clients.
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
# The same ids when they come in a URL path.
ClientIdPath = Annotated[str, Path(pattern=r"^[\x21-\x7e]{1,128}$", description="1-128 printable ASCII")]
MemberIdField = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
Text = Annotated[str, StringConstraints(max_length=500), AfterValidator(_storable)]
