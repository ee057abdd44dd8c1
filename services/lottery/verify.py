"""`loyalty verify-campaign URL-or-FILE`: recompute every outcome of a revealed campaign.

Exit status: 0 the campaign checks out, 1 it does not, 2 the reveal could not be read.
The checks themselves are services.lottery.domain.reveal.verify, the same code the
service draws with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from services.lottery.domain.reveal import Reveal, RevealFormatError, Verification, verify


class CannotRead(Exception):
    pass


def verify_campaign_command(target: str) -> int:
    try:
        reveal = Reveal.from_json(load_reveal(target))
    except (CannotRead, RevealFormatError) as exc:
        print(f"verify-campaign: cannot read a reveal from {target}: {exc}", file=sys.stderr)
        return 2
    result = verify(reveal)
    print(describe(reveal))
    for finding in result.findings:
        print(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.text}")
    print(verdict(result))
    return 0 if result.fair else 1


def load_reveal(target: str) -> Any:
    """The reveal JSON from a URL (GET /v1/campaigns/{id}/reveal) or from a file."""
    if target.startswith(("http://", "https://")):
        try:
            response = httpx.get(target, timeout=60, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise CannotRead(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise CannotRead(f"HTTP {response.status_code}: {response.text[:300]}")
        text = response.text
    else:
        try:
            text = Path(target).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CannotRead(str(exc)) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CannotRead(f"not JSON: {exc}") from None


def describe(reveal: Reveal) -> str:
    if reveal.kind == "instant":
        what = f"{len(reveal.draws)} draws, {len(reveal.prizes)} prizes"
    else:
        what = (f"{len(reveal.entries)} entries for {reveal.seats} seats, "
                f"public entropy {reveal.public_entropy!r}")  # fmt: skip
    return f"campaign {reveal.campaign_id} ({reveal.kind}): {what}, commitment {reveal.seed_commitment}"


def verdict(result: Verification) -> str:
    failed = sum(not f.ok for f in result.findings)
    if result.fair:
        return f"verified: fair ({len(result.findings)} checks passed)"
    return f"verified: NOT FAIR ({failed} of {len(result.findings)} checks failed)"
