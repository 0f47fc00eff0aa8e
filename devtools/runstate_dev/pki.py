"""The dev cluster's PKI: its CA and every certificate and key signed by it, made with openssl.

Owns the files of ``<state>/pki``: the CA (``ca.crt``/``ca.key``), the API server's serving
certificate, the service-account key pair, the process kubelet's serving certificate
(``kubelet.crt``, for 127.0.0.1 and the node's name) and the API server's client certificate
towards kubelets (``apiserver-kubelet-client.crt``, CN `KUBELET_CLIENT_CN`). Each file is made
once and kept across restarts; one that is missing is made afresh (a state dir of an older
checkout gains the kubelet's two). `issue` signs one more certificate (tests make a stranger's).
Must not start processes other than openssl or know about the components that use the files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from runstate_dev._proc import ComponentError

#: The CN of the API server's client certificate: the only client the process kubelet serves.
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"

_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's address (first of the service CIDR)
_DAYS = "3650"


def openssl(pki: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=pki, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise ComponentError(
            f"pki: openssl {' '.join(args)} failed: "
            f"{result.stderr.decode(errors='replace')[-2000:]}"
        )


def ensure(pki: Path, *, node_name: str) -> Path:
    """Every file the cluster needs in ``pki``, made where missing; returns ``pki``."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists() or not (pki / "ca.key").exists():
        _make_ca(pki)
    sans = [
        "IP:127.0.0.1",
        "DNS:localhost",
        f"IP:{_SERVICE_IP}",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    if not (pki / "apiserver.crt").exists():
        issue(pki, "apiserver", subject="/CN=kube-apiserver", server_names=sans)
    if not (pki / "sa.key").exists() or not (pki / "sa.pub").exists():
        openssl(pki, "genrsa", "-out", "sa.key", "2048")
        openssl(pki, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    if not (pki / "kubelet.crt").exists():
        issue(
            pki,
            "kubelet",
            subject=f"/CN={node_name}",
            server_names=["IP:127.0.0.1", "DNS:localhost", f"DNS:{node_name}"],
        )
    if not (pki / "apiserver-kubelet-client.crt").exists():
        issue(
            pki,
            "apiserver-kubelet-client",
            subject=f"/O=system:masters/CN={KUBELET_CLIENT_CN}",
        )
    return pki


def _make_ca(pki: Path) -> None:
    openssl(
        pki,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        _DAYS,
        "-subj",
        "/CN=runstate-devcluster-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )


def issue(pki: Path, name: str, *, subject: str, server_names: list[str] | None = None) -> Path:
    """``<name>.crt``/``<name>.key`` signed by the CA in ``pki``: a serving certificate for
    ``server_names`` (``IP:…``/``DNS:…``), else a client certificate. Returns the cert."""
    usage = "serverAuth" if server_names else "clientAuth"
    extensions = (
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
    )
    if server_names:
        extensions += f"subjectAltName={','.join(server_names)}\n"
    (pki / f"{name}.ext").write_text(extensions)
    openssl(
        pki,
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
    )
    openssl(
        pki,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        _DAYS,
        "-extfile",
        f"{name}.ext",
    )
    (pki / f"{name}.key").chmod(0o600)
    return pki / f"{name}.crt"
