"""A whole-response deadline (apilake.response_deadline): at its time the socket of the response is shut down, plain
or TLS, whatever the read in progress; a deadline left before its time does nothing; one watchdog thread keeps every
deadline of the process, and the deadlines left early are not kept.

The sockets are real (a socket pair, a TLS connection on 127.0.0.1); each test waits for a deadline to pass by
blocking on a read that only its shutdown ends (a later deadline has passed once an earlier one has: one thread
expires them in time order)."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apilake import response_deadline
from apilake.response_deadline import ResponseDeadline

SAFETY_NET_SECONDS = 10.0  # a read that no shutdown ends fails the test instead of hanging it


def connection(sock: socket.socket) -> Any:
    """What a deadline watches: a connection with its socket (urllib3's, in use)."""
    return SimpleNamespace(sock=sock)


def read_ended(sock: socket.socket) -> bool:
    """True when a blocking read of ``sock`` ends by an end of stream or an error, not by the safety net."""
    sock.settimeout(SAFETY_NET_SECONDS)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # ssl.SSLError too: a TLS stream cut under it
        return True


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def wait_past(seconds: float) -> None:
    """Returns once a deadline of ``seconds`` entered now has passed (and so every earlier one)."""
    ours, theirs = socket.socketpair()
    with ours, theirs, ResponseDeadline(seconds) as later:
        later.watch(connection(ours))
        assert read_ended(ours) and later.expired


@pytest.mark.parametrize("watched", ["before", "after"], ids=["watched before its time", "watched after its time"])
def test_at_its_time_a_deadline_shuts_down_the_socket_of_the_response(
    pair: tuple[socket.socket, socket.socket], watched: str
) -> None:
    ours, _ = pair
    # Given a deadline of 50 ms on a response whose socket sends nothing
    with ResponseDeadline(0.05) as deadline:
        if watched == "before":
            deadline.watch(connection(ours))
        else:
            wait_past(0.1)
            deadline.watch(connection(ours))  # When the connection hands itself over late (the deadline had passed)
        # Then the read in progress ends, and the deadline says why
        assert read_ended(ours)
    assert deadline.expired


def test_a_deadline_left_before_its_time_neither_expires_nor_shuts_the_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    # Given a deadline of 50 ms on a response that arrived within it
    with ResponseDeadline(0.05) as deadline:
        deadline.watch(connection(ours))
    # When its time has passed
    wait_past(0.1)
    # Then it did not expire, and the connection still works
    theirs.sendall(b"x")
    assert (deadline.expired, ours.recv(1)) == (False, b"x")


def test_a_deadline_cuts_a_tls_response_off(tls_server: tuple[str, int], certificate: Path) -> None:
    # Given a TLS connection to a server that answers nothing
    context = ssl.create_default_context(cafile=str(certificate))
    with (
        socket.create_connection(tls_server) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
        ResponseDeadline(0.05) as deadline,
    ):
        # When its deadline passes while the response is read
        deadline.watch(connection(tls))
        # Then the read ends, and the deadline says why
        assert read_ended(tls)
    assert deadline.expired


def test_the_deadlines_of_a_process_are_kept_by_one_thread() -> None:
    # Given the threads of the process, its watchdog started
    wait_past(0.01)
    before = set(threading.enumerate())
    # When 200 requests are under a deadline at once
    with contextlib.ExitStack() as requests:
        deadlines = [requests.enter_context(ResponseDeadline(60.0)) for _ in range(200)]
        during = set(threading.enumerate())
    # Then no thread was started for them
    assert during - before == set() and not any(deadline.expired for deadline in deadlines)


def test_the_deadlines_left_early_are_not_kept() -> None:
    # Given a request whose deadline is pending
    with ResponseDeadline(60.0) as pending:
        # When 8 threads make 500 requests each, each left before its deadline
        def requests() -> None:
            for _ in range(500):
                with ResponseDeadline(60.0):
                    pass

        threads = [threading.Thread(target=requests) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then the watchdog keeps the pending deadline, and of the 4,000 others no more than its bound
        kept = [entry[2] for entry in response_deadline._WATCHDOG._heap]
        assert pending in kept and len(kept) <= response_deadline._COMPACT_ABOVE + 1


# -- a TLS server on 127.0.0.1 that completes the handshake, then says nothing --------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for localhost, its key beside it (``.key``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem"


@pytest.fixture
def tls_server(certificate: Path) -> Iterator[tuple[str, int]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, certificate.with_suffix(".key"))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        accepted, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(accepted, server_side=True) as tls:
            tls.settimeout(SAFETY_NET_SECONDS)
            tls.recv(1)  # until the client's socket is shut down

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with listener:
        yield listener.getsockname()
        server.join(SAFETY_NET_SECONDS)
