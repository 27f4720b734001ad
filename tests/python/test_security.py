"""A token server, a TLS server and a mutual-TLS server, with throwaway certificates."""
import os
import subprocess

import grpc
import numpy as np
import pytest

from conftest import REPO
from scan_service import Client, ScanError, UnauthenticatedError, UnavailableError

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """ca, server, client (same CA) and stranger (another CA), as the C++ tests make them."""
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", os.path.join(REPO, "tests", "integration", "make_test_certs.sh"),
                    str(directory)], check=True)
    return directory


def small_input():
    return np.linspace(0.5, 1.0, 64, dtype=np.float32).reshape(4, 16)


def check_scan(client):
    x = small_input()
    np.testing.assert_allclose(client.cumprod(x, dim=1), np.cumprod(x.astype(np.float64), 1),
                               rtol=1e-5)


def test_token_server(start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = start_server("--auth-token-file", str(token_file))

    with Client(server.target, token=TOKEN, timeout=30) as good:
        check_scan(good)
        assert good.server_info().version  # GetServerInfo needs the token too
    for token in (None, "wrong-token"):
        with Client(server.target, token=token, timeout=30) as bad:
            with pytest.raises(UnauthenticatedError) as caught:
                bad.cumprod(small_input(), dim=1)
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(UnauthenticatedError):
                bad.server_info()
            assert bad.health()  # health checks need no token (for load balancers)


def test_tls_server(start_server, certs):
    server = start_server("--tls-cert", str(certs / "server.crt"),
                          "--tls-key", str(certs / "server.key"))
    localhost = f"localhost:{server.port}"  # the certificate names localhost and 127.0.0.1
    with Client(localhost, root_certificates=str(certs / "ca.crt"), timeout=30) as c:
        check_scan(c)
        assert c.health()
    # PEM bytes work as well as a path, and 127.0.0.1 is in the certificate too.
    with Client(server.target, root_certificates=(certs / "ca.crt").read_bytes(),
                timeout=30) as c:
        check_scan(c)
    # A client trusting another CA, and a plaintext client, do not get through.
    with Client(localhost, root_certificates=str(certs / "other-ca.crt"), timeout=5) as c:
        with pytest.raises(UnavailableError):
            c.cumprod(small_input(), dim=1)
    with Client(localhost, timeout=5) as c:
        with pytest.raises(UnavailableError):
            c.cumprod(small_input(), dim=1)


def test_mutual_tls_server(start_server, certs, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = start_server("--tls-cert", str(certs / "server.crt"),
                          "--tls-key", str(certs / "server.key"),
                          "--tls-client-ca", str(certs / "ca.crt"),
                          "--auth-token-file", str(token_file))
    target = f"localhost:{server.port}"
    ca = str(certs / "ca.crt")
    with Client(target, root_certificates=ca, private_key=str(certs / "client.key"),
                certificate_chain=str(certs / "client.crt"), token=TOKEN, timeout=30) as c:
        check_scan(c)
    for name in (None, "stranger"):  # no client certificate; one from another CA
        keys = ({} if name is None else
                {"private_key": str(certs / f"{name}.key"),
                 "certificate_chain": str(certs / f"{name}.crt")})
        with Client(target, root_certificates=ca, token=TOKEN, timeout=5, **keys) as c:
            with pytest.raises(ScanError) as caught:
                c.cumprod(small_input(), dim=1)
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
