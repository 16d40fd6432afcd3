"""The docs' serverless and task-queue examples, run as written: a Lambda-shaped handler
in a process frozen the moment it returns, and a Celery task in a real worker killed once the
task is done. Both clients hold events for a minute, so only `flushing` can have sent them."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from tests.support import docs_examples
from tests.support.capture import CaptureServer

PAGE = "guides/serverless-and-task-queues.md"
HOLD = 'trackline.init("YOUR_WRITE_KEY", flush_interval=60.0, flush_at=2500)\n'


def example(marker: str) -> str:
    return docs_examples.python_block(PAGE, marker)


def environment(capture: CaptureServer) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACKLINE_")}
    return {**env, "TRACKLINE_HOST": capture.url}


def test_the_lambda_handler_delivers_before_its_process_is_frozen(
    capture: CaptureServer,
) -> None:
    """The handler's event is at the API when its return value is; the process is frozen
    right after (as Lambda does) and never gets to exit."""
    script = example('return {"statusCode": 200}') + HOLD
    script += textwrap.dedent(
        """
        import os, signal, sys
        print(handler({"user_id": "019mr8mf4r"}, None), flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=environment(capture),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "{'statusCode': 200}"
        events = capture.delivered()
        assert [(e["userId"], e["event"]) for e in events] == [("019mr8mf4r", "Report Generated")]
    finally:
        process.kill()
        process.communicate(timeout=10)


def test_the_celery_task_delivers_before_its_worker_is_killed(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """A real Celery worker runs the task; its event reaches the API when the task ends, and
    the worker is then killed without a chance to exit."""
    (tmp_path / "tasks.py").write_text(example("@app.task"))
    broker = tmp_path / "broker"
    broker.mkdir()
    (tmp_path / "worker_app.py").write_text(
        textwrap.dedent(
            f"""
            import trackline
            from tasks import app, send_invoice

            app.conf.update(
                broker_url="filesystem://",
                broker_transport_options={{
                    "data_folder_in": {str(broker)!r},
                    "data_folder_out": {str(broker)!r},
                    "polling_interval": 0.1,
                }},
                worker_hijack_root_logger=False,
            )
            """
        )
        + HOLD
    )
    env = {
        **environment(capture),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    command = [sys.executable, "-m", "celery", "-A", "worker_app", "worker", "--pool=solo"]
    command += ["--concurrency=1", "--loglevel=WARNING", "--without-heartbeat", "--without-gossip"]
    worker = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        subprocess.run(
            [sys.executable, "-c", "import worker_app\nworker_app.send_invoice.delay(42)"],
            cwd=tmp_path,
            env=env,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while not capture.delivered():
            assert worker.poll() is None, "the worker stopped"
            assert time.monotonic() < deadline, "the task's event never arrived"
            time.sleep(0.05)
        [event] = capture.delivered()
        assert (event["userId"], event["event"]) == ("order-42", "Invoice Sent")
    finally:
        worker.send_signal(signal.SIGKILL)
        output, _ = worker.communicate(timeout=10)
    assert "Traceback" not in output, output
