"""`make serve` on a machine with no provider keys: the banner's token and examples work as
pasted (the README's quickstart)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

LAST_BANNER_LINE = "choices[0].message.content)'"


@pytest.fixture
def banner(tmp_path: Path) -> Iterator[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_", "MESHAGENT_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "meshproxy.adapters.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        cwd=tmp_path,  # the default ledger file is created in the working directory
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    text = ""
    try:
        while LAST_BANNER_LINE not in text:
            text += lines.get(timeout=20)
        yield text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_banner_says_simulated_and_examples_work(banner: str) -> None:
    assert "BUILT-IN SIMULATED" in banner
    export = next(line.strip() for line in banner.splitlines() if "export MESHPROXY_TOKEN=" in line)
    curl_start = banner.index("  curl ")
    curl = banner[curl_start : banner.index("\n\n", curl_start)]
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{export}\n{curl}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    completion = json.loads(result.stdout)
    assert completion["choices"][0]["message"]["content"]
    assert completion["usage"]["total_tokens"] > 0

    sdk_start = banner.index("  OPENAI_BASE_URL=")
    sdk = banner[sdk_start : banner.index(LAST_BANNER_LINE) + len(LAST_BANNER_LINE)]
    sdk = sdk.replace(" python -c", f" {sys.executable} -c", 1)
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{export}\n{sdk}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
