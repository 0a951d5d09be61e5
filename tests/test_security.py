"""Transport and caller security: mutual TLS, bearer tokens (constant-time, rotated live)."""

import shutil
import subprocess
import time

import grpc
import pytest

from jaxrec_server.client import Client
from jaxrec_server.main import ServeConfig, ThreadedServer, TokenAuth

SMALL = dict(max_batch_size=2, length_buckets=[50], k_buckets=[10], diversity_pool=0)


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(d, name, ca_key, ca_cert, san=None):
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName=DNS:{san}\n" if san else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return key, cert


def _ca(d, name):
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", f"/CN={name}")
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_mutual_tls_requires_a_client_certificate_from_the_ca(run_dir, tmp_path):
    ca_key, ca = _ca(tmp_path, "ca")
    srv_key, srv_cert = _signed(tmp_path, "server", ca_key, ca, san="localhost")
    cli_key, cli_cert = _signed(tmp_path, "client", ca_key, ca)
    rogue_ca_key, rogue_ca = _ca(tmp_path, "rogue")
    rogue_key, rogue_cert = _signed(tmp_path, "rogue-client", rogue_ca_key, rogue_ca)
    srv = ThreadedServer(ServeConfig(str(run_dir), port=0, tls_cert=str(srv_cert), tls_key=str(srv_key),
                                     tls_client_ca=str(ca), **SMALL))
    target = f"localhost:{srv.port}"
    try:
        with Client(target, tls_ca=ca.read_bytes(), tls_cert=cli_cert.read_bytes(),
                    tls_key=cli_key.read_bytes()) as c:
            assert len(c.recommend(["1"], k=3).items) == 3
        for cert, key in ((None, None), (rogue_cert, rogue_key)):  # no certificate; another CA's
            with Client(target, tls_ca=ca.read_bytes(), retries=0, timeout=3,
                        tls_cert=cert and cert.read_bytes(), tls_key=key and key.read_bytes()) as c:
                with pytest.raises(grpc.RpcError) as e:
                    c.recommend(["1"], k=3)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


def test_tokens_rotate_without_a_restart(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(TokenAuth, "CHECK_EVERY_S", 0.0)
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    srv = ThreadedServer(ServeConfig(str(run_dir), port=0, auth_token_file=str(tokens), **SMALL))
    target = f"127.0.0.1:{srv.port}"

    def code(token):
        with Client(target, token=token, retries=0, timeout=5) as c:
            try:
                c.recommend(["1"], k=3)
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                return e.code()
    try:
        assert code("old-token") == grpc.StatusCode.OK and code("new-token") == grpc.StatusCode.UNAUTHENTICATED
        tokens.write_text("old-token\nnew-token\n")  # rotation: both accepted for a while
        time.sleep(0.05)
        assert code("old-token") == code("new-token") == grpc.StatusCode.OK
        tokens.write_text("new-token\n")
        time.sleep(0.05)
        assert code("old-token") == grpc.StatusCode.UNAUTHENTICATED and code("new-token") == grpc.StatusCode.OK
        tokens.write_text("")  # an emptied file keeps the last good tokens (and logs an error)
        time.sleep(0.05)
        assert code("new-token") == grpc.StatusCode.OK
        assert code(None) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop()


def test_token_check_compares_whole_tokens():
    auth = TokenAuth.__new__(TokenAuth)
    auth.tokens, auth._checked, auth.CHECK_EVERY_S = (b"s3cret",), time.monotonic(), 1e9
    assert auth.allowed("Bearer s3cret")
    for bad in ("Bearer s3cre", "Bearer s3cret2", "s3cret", "bearer s3cret", "", None):
        assert not auth.allowed(bad), bad
