"""The README's main job, as a user runs it: ``aichat up``, then ``aichat ask``, then Ctrl-C.

Uses the running local stack (``up`` finds it and leaves it running) with its own topic
prefix, collection, index prefix and ports, so the sample corpus is ingested fresh.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from infra import catalogue, stack
from infra.config import StackSettings
from streams.config import WorkerSettings
from tests.support import drop_isolated_state, isolated_env

AICHAT = [sys.executable, "-m", "streams.cli"]


def test_up_answers_a_question_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in isolated_env(uuid.uuid4().hex[:10], tmp_path).items() if "JWT" not in k}
    env.pop("AICHAT_GATEWAY_AUTH")  # `up` turns JWT on with its own local secret
    full_env = {**os.environ, **env}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([*AICHAT, "up"], env=full_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "4/4 ready" not in log.read_text(errors="replace"):
            assert up.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "aichat up not ready in 240 s"
            time.sleep(1)
        assert "ingested 7 sample documents" in log.read_text()
        # answering and ingesting run apart (issue 10): an answer and an ingest worker, no pipeline
        started = log.read_text()
        assert all(f"    {name:<14} ready" in started for name in ("answer", "ingest", "shipper", "gateway"))
        assert "    pipeline " not in started

        url = f"ws://127.0.0.1:{env['AICHAT_GATEWAY_PORT']}/ws"
        asked = subprocess.run([*AICHAT, "ask", "--url", url, "How many vacation days do employees get?"],
                               env=full_env, capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        assert "25 days of paid vacation" in asked.stdout
        assert "[1] sample/vacation-policy.md" in asked.stdout
        # a paraphrase: 비밀번호 (password) and 바꾸다 (change) are not the document's words
        # (암호, 변경), so keyword search alone would miss it; the model reads Korean
        asked = subprocess.run([*AICHAT, "ask", "--url", url, "비밀번호는 얼마나 자주 바꿔야 하나요?"],
                               env=full_env, capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        assert "[1] sample/security-ko.md" in asked.stdout
        assert "90일마다" in asked.stdout

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=60) == 0
        assert "stopping workers and gateway" in log.read_text()
        # it found the stack running, so it leaves the stack running (the tests after this use it)
        assert "stopping the stack" not in log.read_text()
        # the core services it found; an optional one (Redis) it was not asked for is not its
        # business (CI once found a stale Redis pid file from an earlier run of the machine)
        core = [s for s in stack.status(StackSettings()) if s.name not in catalogue.OPTIONAL_SERVICES]
        assert core and all(s.healthy for s in core), core
    finally:
        if up.poll() is None:
            up.kill()
        asyncio.run(drop_isolated_state(WorkerSettings(
            topic_prefix=env["AICHAT_TOPIC_PREFIX"], weaviate_collection=env["AICHAT_WEAVIATE_COLLECTION"],
            elastic_index_prefix=env["AICHAT_ELASTIC_INDEX_PREFIX"])))
