"""The event log (chatbot/bucket/events.py): batches, background flushes, failures, shutdown."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime

import pytest

from chatbot.bucket.events import EventLog, install_shutdown_flush
from chatbot.bucket.gcs import GCSStorage
from chatbot.bucket.storage import LocalStorage, Storage
from chatbot.errors import PreconditionFailed, StorageError
from harness.processes import FunctionProcess, child_env, request

NOW = datetime(2026, 1, 4, 10, 30, 15, 123000, tzinfo=UTC)
KEY = re.compile(r"events/2026/01/04/(?P<instance>[A-Za-z0-9_.-]+)-(?P<seq>\d{16})\.jsonl")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def events_in(storage: Storage) -> dict[str, list[dict]]:
    """Every events object in the store, parsed line by line."""
    out = {}
    for key in storage.list("events"):
        raw = storage.read(key)[0].decode()
        assert raw.endswith("\n")
        out[key] = [json.loads(line) for line in raw.splitlines()]
    return out


def make_log(storage: Storage, **options) -> EventLog:
    options.setdefault("flush_seconds", 30)
    options.setdefault("now", lambda: NOW)
    return EventLog(storage, options.pop("instance_id", "inst-1"), **options)


class FailingStorage(LocalStorage):
    """A folder whose writes fail while ``failing`` is set."""

    failing = True

    def write(self, key, data, *, if_generation_match=None):
        if self.failing:
            raise StorageError(f"{self.uri}/{key}: 503 Service Unavailable")
        return super().write(key, data, if_generation_match=if_generation_match)


class BlockingStorage(LocalStorage):
    """A folder whose first write waits until ``release`` is set."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def write(self, key, data, *, if_generation_match=None):
        if not self.started.is_set():
            self.started.set()
            self.release.wait(timeout=10)
        try:
            return super().write(key, data, if_generation_match=if_generation_match)
        finally:
            self.finished.set()


class LostAnswerStorage(LocalStorage):
    """The first write lands but is reported as a conflict (a retry after a lost answer)."""

    lost = 0

    def write(self, key, data, *, if_generation_match=None):
        generation = super().write(key, data, if_generation_match=if_generation_match)
        if not self.lost:
            self.lost += 1
            raise PreconditionFailed(f"{self.uri}/{key} was changed by another writer")
        return generation


# -- unit -----------------------------------------------------------------------------------


def test_a_flush_writes_the_batch_as_one_jsonl_object(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    log = make_log(storage, instance_id="pod/7 x")
    log.record("answer", answer_id="a1", question="Q?", sources=[{"source": "s.md", "score": 0.8}])
    log.record("dont_know", question="What?")
    log.record("feedback", answer_id="a1", rating="up", comment=None)
    assert storage.list("events") == []
    assert log.flush() == 3
    (key, lines), *rest = events_in(storage).items()
    assert not rest
    match = KEY.fullmatch(key)
    assert match and match["instance"] == "pod-7-x"
    assert [e["type"] for e in lines] == ["answer", "dont_know", "feedback"]
    assert lines[0] == {
        "type": "answer",
        "time": "2026-01-04T10:30:15.123+00:00",
        "answer_id": "a1",
        "question": "Q?",
        "sources": [{"source": "s.md", "score": 0.8}],
    }
    assert lines[2]["rating"] == "up" and lines[2]["comment"] is None

    assert log.flush() == 0  # nothing buffered: no empty object
    log.record("dont_know", question="Again?")
    assert log.flush() == 1
    keys = storage.list("events")
    assert len(keys) == 2 and keys[0] == key  # names sort in the order written
    assert (log.written, log.objects, log.pending) == (4, 2, 0)


def test_nothing_is_written_before_flush_seconds_then_a_background_flush(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    clock = FakeClock()
    log = make_log(storage, clock=clock, flush_seconds=30)
    for second in range(30):
        clock.t = 1000.0 + second
        log.record("dont_know", question=f"q{second}")
    assert log._flusher is None and storage.list("events") == []
    clock.t = 1030.0
    log.record("dont_know", question="q30")
    assert log._flusher is not None
    log._flusher.join(timeout=10)
    (lines,) = events_in(storage).values()
    assert [e["question"] for e in lines] == [f"q{n}" for n in range(31)]
    # The next background flush waits another flush_seconds.
    clock.t = 1059.0
    log.record("dont_know", question="later")
    log._flusher.join(timeout=10)
    assert len(storage.list("events")) == 1 and log.pending == 1


def test_a_failing_storage_never_raises_and_the_next_flush_writes_everything(tmp_path, caplog):
    storage = FailingStorage(tmp_path / "bucket")
    clock = FakeClock()
    log = make_log(storage, clock=clock, flush_seconds=30)
    log.record("dont_know", question="one")
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.events"):
        assert log.flush() == 0
        clock.t += 30
        log.record("dont_know", question="two")  # starts a background flush, which fails
        log._flusher.join(timeout=10)
    assert log.failed_flushes == 2 and log.pending == 2
    assert "503 Service Unavailable" in caplog.text
    assert storage.list("events") == []
    log.record("dont_know", question="three")
    storage.failing = False
    assert log.flush() == 3
    (lines,) = events_in(storage).values()
    assert [e["question"] for e in lines] == ["one", "two", "three"]


def test_a_full_buffer_drops_the_oldest_and_counts(tmp_path, caplog):
    storage = FailingStorage(tmp_path / "bucket")
    log = make_log(storage, max_buffered=3)
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.events"):
        for n in range(5):
            log.record("dont_know", question=f"q{n}")
        assert (log.dropped, log.pending) == (2, 3)
        assert log.flush() == 0  # put back, still bounded
        log.record("dont_know", question="q5")
        assert (log.dropped, log.pending) == (3, 3)
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1  # one warning per overflow episode
    storage.failing = False
    assert log.flush() == 3
    (lines,) = events_in(storage).values()
    assert [e["question"] for e in lines] == ["q3", "q4", "q5"]


def test_record_returns_while_the_write_is_still_blocked(tmp_path):
    storage = BlockingStorage(tmp_path / "bucket")
    log = make_log(storage, flush_seconds=0)
    try:
        log.record("dont_know", question="first")  # starts the background flush
        assert storage.started.wait(timeout=10)
        log.record("dont_know", question="second")  # a flush is running: only buffered
        assert not storage.finished.is_set()  # both records returned before the write ended
        first_flusher = log._flusher
    finally:
        storage.release.set()
    first_flusher.join(timeout=10)
    assert storage.finished.is_set()
    assert log.close() == 1 and log.close() == 0  # the rest, once
    lines = [e for batch in events_in(storage).values() for e in batch]
    assert sorted(e["question"] for e in lines) == ["first", "second"]


def test_close_waits_for_a_flush_in_progress(tmp_path):
    storage = BlockingStorage(tmp_path / "bucket")
    log = make_log(storage, flush_seconds=0)
    log.record("dont_know", question="in flight")
    assert storage.started.wait(timeout=10)
    log.record("dont_know", question="buffered")
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join(timeout=0.2)
    assert closer.is_alive()  # close() is waiting for the running write
    storage.release.set()
    closer.join(timeout=10)
    assert log.written == 2 and len(storage.list("events")) == 2


def test_two_logs_with_one_instance_id_never_overwrite_each_other(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    first, second = make_log(storage), make_log(storage)  # same id, same start time
    first.record("dont_know", question="from the first")
    second.record("dont_know", question="from the second")
    assert first.flush() == 1 and second.flush() == 1
    batches = events_in(storage)
    assert len(batches) == 2
    assert sorted(e["question"] for b in batches.values() for e in b) == [
        "from the first",
        "from the second",
    ]


def test_a_write_that_landed_but_reported_a_conflict_is_not_repeated(tmp_path):
    storage = LostAnswerStorage(tmp_path / "bucket")
    log = make_log(storage)
    log.record("dont_know", question="once")
    assert log.flush() == 1
    assert len(storage.list("events")) == 1 and log.pending == 0


def test_fields_that_could_identify_a_visitor_are_never_recorded(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    log = make_log(storage)
    log.record(
        "feedback",
        answer_id="a1",
        rating="down",
        client_ip="192.0.2.55",
        remoteAddr="192.0.2.56",
        api_key="AIzaFAKE",
        Authorization="Bearer x",
        admin_token="t0k3n",
    )
    assert log.flush() == 1
    raw = storage.read(storage.list("events")[0])[0].decode()
    assert json.loads(raw) == {
        "type": "feedback",
        "time": "2026-01-04T10:30:15.123+00:00",
        "answer_id": "a1",
        "rating": "down",
    }
    for secret in ("192.0.2.5", "AIzaFAKE", "Bearer", "t0k3n"):
        assert secret not in raw


def test_an_event_that_cannot_be_serialised_is_dropped_without_raising(tmp_path, caplog):
    storage = LocalStorage(tmp_path / "bucket")
    log = make_log(storage)
    loop: list = []
    loop.append(loop)
    log.record("answer", sources=loop)  # circular: json refuses it
    log.record("answer", when=NOW, path=tmp_path)  # not JSON types: written as strings
    assert "Could not record" in caplog.text
    assert log.flush() == 1
    (lines,) = events_in(storage).values()
    assert lines[0]["when"] == str(NOW) and lines[0]["path"] == str(tmp_path)


# -- Cloud Storage --------------------------------------------------------------------------


def test_flush_to_cloud_storage(gcs_bucket):
    storage = GCSStorage.from_uri(f"gs://{gcs_bucket}/romega/test")
    first, second = make_log(storage), make_log(storage)  # one id, one start time
    first.record("answer", answer_id="a1", question="Q?", cached=False, latency_ms=12.5)
    first.record("feedback", answer_id="a1", rating="up")
    second.record("dont_know", question="What?")
    assert first.flush() == 2 and second.flush() == 1
    batches = events_in(storage)
    assert len(batches) == 2 and all(KEY.fullmatch(key) for key in batches)
    lines = [e for batch in batches.values() for e in batch]
    assert sorted(e["type"] for e in lines) == ["answer", "dont_know", "feedback"]


# -- real processes -------------------------------------------------------------------------

FUNCTION_SOURCE = """
    import os

    import functions_framework

    from chatbot.bucket.events import EventLog, install_shutdown_flush
    from chatbot.bucket.storage import LocalStorage

    log = EventLog(LocalStorage(os.environ["EVENTS_DIR"]), "inst/1", flush_seconds=3600)
    install_shutdown_flush(log)


    @functions_framework.http
    def main(request):
        log.record("dont_know", question=request.args.get("q", ""))
        return {"pid": os.getpid()}
"""


@pytest.mark.parametrize("how", ["arbiter", "process group"])
def test_sigterm_leaves_every_event_in_the_bucket(tmp_path, how):
    """Cloud Run sends SIGTERM to the container's main process: the gunicorn arbiter."""
    source = tmp_path / "main.py"
    source.write_text(textwrap.dedent(FUNCTION_SOURCE))
    folder = tmp_path / "bucket"
    proc = FunctionProcess(
        "main", source, {"EVENTS_DIR": str(folder)}, tmp_path / "fn.log", cwd=tmp_path
    )
    with proc:
        pids = set()
        for n in range(5):
            status, body, _ = request("GET", f"{proc.url}/?q=q{n}")
            assert status == 200, body
            pids.add(body["pid"])
        assert pids and proc.proc.pid not in pids  # served by a forked worker
        assert LocalStorage(folder).list("events") == []  # all still buffered
        if how == "arbiter":
            proc.proc.send_signal(signal.SIGTERM)
        else:
            proc.stop()
        assert proc.proc.wait(timeout=30) == 0, proc.log()
    batches = events_in(LocalStorage(folder))
    assert len(batches) == 1, proc.log()
    (key, lines), *_ = batches.items()
    assert re.fullmatch(r"events/\d{4}/\d\d/\d\d/inst-1-\d{16}\.jsonl", key)
    assert [e["question"] for e in lines] == [f"q{n}" for n in range(5)]


PLAIN_SCRIPT = """
    import sys, time

    from chatbot.bucket.events import EventLog, install_shutdown_flush
    from chatbot.bucket.storage import LocalStorage

    log = EventLog(LocalStorage(sys.argv[1]), "plain", flush_seconds=3600)
    install_shutdown_flush(log)
    log.record("dont_know", question="before the signal")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_sigterm_to_a_plain_process_flushes_and_still_kills_it(tmp_path):
    folder = tmp_path / "bucket"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PLAIN_SCRIPT), str(folder)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM  # the default action still happens
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    (lines,) = events_in(LocalStorage(folder)).values()
    assert [e["question"] for e in lines] == ["before the signal"]


def test_install_shutdown_flush_outside_the_main_thread_relies_on_atexit(tmp_path):
    log = make_log(LocalStorage(tmp_path / "bucket"))
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def install() -> None:
        try:
            install_shutdown_flush(log)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    callbacks = atexit._ncallbacks()
    worker = threading.Thread(target=install)
    worker.start()
    worker.join()
    assert not errors and signal.getsignal(signal.SIGTERM) is before
    assert atexit._ncallbacks() == callbacks + 1  # the final flush still runs at exit


def test_events_objects_sort_by_sequence(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    log = make_log(storage)
    seqs = []
    for n in range(3):
        log.record("dont_know", question=str(n))
        log.flush()
    for key in storage.list("events"):
        seqs.append(int(KEY.fullmatch(key)["seq"]))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert seqs[0] == int(NOW.timestamp() * 1000)


def test_a_forked_child_starts_with_an_empty_buffer(tmp_path):
    """gunicorn forks its workers from the arbiter, where the app (and its log) was built."""
    log = make_log(LocalStorage(tmp_path / "bucket"))
    log.record("dont_know", question="the parent's")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        os.write(write, str(log.pending).encode())
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"0"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert log.pending == 1
