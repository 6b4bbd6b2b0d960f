"""Log output: JSON lines on a stream, journald's native protocol on a real datagram socket."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from fondation_agent.host import logs
from fondation_agent.host.logs import (
    configure_logging,
    encode_journal_entry,
    get_logger,
    journal_field_name,
    stream_is_journal,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logs, "_sink", logs._sink)  # put the previous sink back afterwards
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logs._StdlibHandler):
            root.removeHandler(handler)


@pytest.fixture
def journald(short_dir: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(short_dir / "journal.sock"))
    server.settimeout(5)
    try:
        yield server
    finally:
        server.close()


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def parse_entry(data: bytes) -> dict[str, bytes]:
    """journald's native format, both the KEY=value and the KEY\\n<u64 length><bytes>\\n forms."""
    fields: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        newline = data.index(b"\n", position)
        line = data[position:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            position = newline + 1
        else:
            key = line
            (length,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            value = data[newline + 9 : newline + 9 + length]
            assert data[newline + 9 + length : newline + 10 + length] == b"\n"
            position = newline + 10 + length
        assert key.decode() not in fields, f"duplicate field {key!r}"
        fields[key.decode()] = value
    return fields


def to_journal(server: socket.socket, **options: Any) -> None:
    configure_logging(worker_id="w", stream=io.StringIO(), journal=True, journal_socket=server.getsockname(),
                      **options)


def receive_entry(server: socket.socket) -> dict[str, bytes]:
    return parse_entry(server.recv(1 << 20))


# -- stream output ------------------------------------------------------------------------------------


def test_json_lines_carry_timestamp_level_event_worker_and_context() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", worker_id="host-1", stream=stream, journal=False)
    log = get_logger(component="loop")
    log.info("job claimed", job_id="j1", attempt=2)
    log.bind(stage="clone").warning("slow clone", seconds=12.5)

    first, second = lines_of(stream)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["event"] == "job claimed"
    assert first["level"] == "info"
    assert first["worker_id"] == "host-1"
    assert (first["job_id"], first["attempt"], first["component"]) == ("j1", 2, "loop")
    assert first["timestamp"].endswith("Z")
    stamp = time.strptime(first["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
    assert abs(time.mktime(stamp) - time.mktime(time.gmtime())) < 120
    assert second["level"] == "warning"
    assert (second["stage"], second["seconds"]) == ("clone", 12.5)


def test_logger_made_before_configuration_follows_it() -> None:
    early = get_logger(job_id="early")
    stream = io.StringIO()
    configure_logging(worker_id="w", stream=stream, journal=False)
    early.info("hello")
    assert lines_of(stream)[0]["job_id"] == "early"


def test_level_filter() -> None:
    stream = io.StringIO()
    configure_logging(worker_id="w", stream=stream, journal=False)
    get_logger().debug("hidden")
    assert stream.getvalue() == ""
    configure_logging(worker_id="w", stream=stream, journal=False, level="debug")
    get_logger().debug("shown")
    assert lines_of(stream)[0]["level"] == "debug"


def test_secrets_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging(worker_id="w", stream=stream, journal=False)
    get_logger(worker_token="abc").info(
        "request",
        password="hunter2",
        Authorization="Bearer xyz",
        API_KEY="k",
        client_secret="s",
        headers={"X-Api-Key": "k2", "accept": "json", "nested": [{"git_token": "t"}]},
        repository="https://example.com/r.git",
    )
    (line,) = lines_of(stream)
    for key in ("worker_token", "password", "Authorization", "API_KEY", "client_secret"):
        assert line[key] == "[redacted]"
    assert line["headers"] == {
        "X-Api-Key": "[redacted]", "accept": "json", "nested": [{"git_token": "[redacted]"}]
    }
    assert line["repository"] == "https://example.com/r.git"
    assert "hunter2" not in stream.getvalue()


def test_exception_is_rendered_as_text() -> None:
    stream = io.StringIO()
    configure_logging(worker_id="w", stream=stream, journal=False)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger(job_id="j").exception("internal error")
    (line,) = lines_of(stream)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "RuntimeError: boom" in line["exception"]


def test_console_format() -> None:
    stream = io.StringIO()
    configure_logging(log_format="console", worker_id="host-1", stream=stream, journal=False)
    get_logger(job_id="j1").info("job claimed", attempt=1)
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "job claimed" in text
    assert "job_id=j1" in text
    assert "worker_id=host-1" in text
    assert "info" in text


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        configure_logging(log_format="xml", worker_id="w", stream=io.StringIO())


def test_stdlib_records_at_warning_and_above() -> None:
    stream = io.StringIO()
    configure_logging(worker_id="w", stream=stream, journal=False)
    library = logging.getLogger("some.library")
    library.info("chatter")
    library.warning("disk %s", "full")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        library.exception("failed")
    warning, error = lines_of(stream)
    assert (warning["event"], warning["level"], warning["logger"], warning["worker_id"]) == (
        "disk full", "warning", "some.library", "w")
    assert error["level"] == "error"
    assert "ZeroDivisionError" in error["exception"]
    # Configuring again does not add a second handler.
    configure_logging(worker_id="w", stream=stream, journal=False)
    library.warning("once")
    assert [line["event"] for line in lines_of(stream)].count("once") == 1


def test_never_raises_when_the_stream_fails() -> None:
    class Broken(io.StringIO):
        def write(self, _text: str) -> int:
            raise OSError("disk full")

    configure_logging(worker_id="w", stream=Broken(), journal=False)
    get_logger().info("lost", value=object())
    get_logger().error("lost too")


def test_concurrent_threads_write_whole_lines() -> None:
    class SlowStream(io.StringIO):
        """Writes each string in small pieces, yielding the GIL in between, to invite interleaving."""

        def write(self, text: str) -> int:
            for start in range(0, len(text), 16):
                super().write(text[start : start + 16])
                time.sleep(0)
            return len(text)

    stream = SlowStream()
    configure_logging(worker_id="w", stream=stream, journal=False)
    per_thread = 100
    start = threading.Barrier(8)

    def work(number: int) -> None:
        log = get_logger(job_id=f"job-{number}")
        start.wait()
        for index in range(per_thread):
            log.info("progress line with some padding to make it longer", index=index, text="x" * 50)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = lines_of(stream)  # any torn line would fail to parse
    assert len(lines) == 8 * per_thread
    for number in range(8):
        indexes = [line["index"] for line in lines if line["job_id"] == f"job-{number}"]
        assert indexes == list(range(per_thread))


# -- journald -------------------------------------------------------------------------------------


def test_journal_entry_fields(journald: socket.socket) -> None:
    stream = io.StringIO()
    configure_logging(worker_id="host-1", stream=stream, journal=True, journal_socket=journald.getsockname())
    get_logger(job_id="j1", attempt=2).bind(repository="https://x/r.git", stage="clone").warning(
        "clone slow", seconds=3, stream="stderr", token="secret-value",
        **{"weird-key.name": "v", "_private": 1},
    )
    fields = receive_entry(journald)
    assert fields["PRIORITY"] == b"4"
    assert fields["SYSLOG_IDENTIFIER"] == b"fondation-agent"
    assert fields["JOB_ID"] == b"j1"
    assert fields["WORKER_ID"] == b"host-1"
    assert fields["ATTEMPT"] == b"2"
    assert fields["REPOSITORY"] == b"https://x/r.git"
    assert fields["STAGE"] == b"clone"
    assert fields["STREAM"] == b"stderr"
    assert fields["SECONDS"] == b"3"
    assert fields["TOKEN"] == b"[redacted]"
    assert fields["WEIRD_KEY_NAME"] == b"v"
    assert fields["PRIVATE"] == b"1"
    assert not any(name.startswith("_") for name in fields)
    message = fields["MESSAGE"].decode()
    assert message.startswith("clone slow ")
    assert "job_id=j1" in message and "attempt=2" in message and "seconds=3" in message
    assert "secret-value" not in message
    assert stream.getvalue() == ""  # the journal replaced the stream


@pytest.mark.parametrize(("method", "priority"), [("debug", b"7"), ("info", b"6"), ("warning", b"4"),
                                                  ("error", b"3"), ("critical", b"2")])
def test_journal_priorities(journald: socket.socket, method: str, priority: bytes) -> None:
    to_journal(journald, level="debug")
    getattr(get_logger(), method)("event")
    assert receive_entry(journald)["PRIORITY"] == priority


def test_multi_line_message_uses_the_binary_form(journald: socket.socket) -> None:
    to_journal(journald)
    try:
        raise ValueError("bad value\nsecond line")
    except ValueError:
        get_logger(job_id="j2").exception("job crashed", detail="a=b\nc")
    data = journald.recv(1 << 20)
    assert b"MESSAGE\n" in data  # binary form, not MESSAGE=
    fields = parse_entry(data)
    message = fields["MESSAGE"].decode()
    first_line, _, rest = message.partition("\n")
    assert first_line.startswith("job crashed ")
    assert "job_id=j2" in first_line
    assert "Traceback" in rest and "ValueError: bad value\nsecond line" in rest
    assert fields["DETAIL"] == b"a=b\nc"
    assert fields["JOB_ID"] == b"j2"
    assert fields["PRIORITY"] == b"3"


def test_encode_round_trip() -> None:
    entry = [("MESSAGE", "héllo\nwörld".encode()), ("JOB_ID", b"j"), ("EMPTY", b""), ("EQ", b"a=b")]
    assert parse_entry(encode_journal_entry(entry)) == dict(entry)


def test_large_entry_is_passed_as_a_memfd(journald: socket.socket) -> None:
    to_journal(journald)
    sender = logs._sink._socket
    assert sender is not None
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # the kernel may double it
    size = sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + 64 * 1024
    get_logger(job_id="big").info("x" * size)
    data, fds, _flags, _address = socket.recv_fds(journald, size + (1 << 20), 4)
    if fds:
        assert data == b""
        (fd,) = fds
        try:
            chunks = []
            os.lseek(fd, 0, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
    fields = parse_entry(data)
    assert fields["JOB_ID"] == b"big"
    assert fields["MESSAGE"].startswith(b"x" * size)
    assert fds, "expected the memfd path for an entry larger than the send buffer"


def test_oversized_message_is_truncated(journald: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_MESSAGE_BYTES", 1000)
    to_journal(journald)
    get_logger().info("é" * 2000)  # two bytes each: the cut must not split one
    message = receive_entry(journald)["MESSAGE"]
    assert len(message) <= 1000
    text = message.decode("utf-8")  # still valid UTF-8
    assert text.startswith("é" * 400)
    assert text.endswith("[truncated from 4012 bytes]")  # 4000 + len(" worker_id=w")


def test_falls_back_to_the_stream_without_journald(tmp_path: Path) -> None:
    stream = io.StringIO()
    missing = str(tmp_path / "missing.sock")
    configure_logging(worker_id="w", stream=stream, journal=True, journal_socket=missing)
    get_logger(job_id="j3").info("still logged")
    (line,) = lines_of(stream)
    assert (line["event"], line["job_id"], line["worker_id"]) == ("still logged", "j3", "w")


def test_journal_detected_from_journal_stream(
    journald: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        status = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        configure_logging(worker_id="w", stream=stream, journal_socket=journald.getsockname())
        get_logger(job_id="auto").info("to the journal")
        assert receive_entry(journald)["JOB_ID"] == b"auto"
    assert (tmp_path / "stderr").read_text() == ""


def test_stream_is_journal(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as first, open(tmp_path / "b", "w") as second:
        status = os.fstat(first.fileno())
        environ = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert stream_is_journal(first, environ)
        assert not stream_is_journal(second, environ)  # inherited variable, another file
        assert not stream_is_journal(first, {})
        assert not stream_is_journal(first, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(io.StringIO(), environ)  # no file descriptor


def test_journal_field_names() -> None:
    assert journal_field_name("job_id") == "JOB_ID"
    assert journal_field_name("weird-key.name") == "WEIRD_KEY_NAME"
    assert journal_field_name("__x") == "X"
    assert journal_field_name("2fa") == "FA"
    assert journal_field_name("___") is None
    assert len(journal_field_name("k" * 100) or "") == 64
