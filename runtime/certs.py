"""The development CA and one certificate per mesh workload (DESIGN §13).

    python -m runtime.certs [--dir var/tls]            # make what is missing or expiring
    python -m runtime.certs [--dir var/tls] --rotate   # a new CA and new certificates

Each certificate's URI SAN is the workload's identity,
`spiffe://ticketing.local/<workload>`; the services' certificates also name
the hosts clients dial (`localhost`, 127.0.0.1 and the service's DNS name).
A real deployment brings its own CA, or a mesh that issues the same SPIFFE
ids, and points TLS_DIR (or TLS_CA_FILE / TLS_CERT_FILE / TLS_KEY_FILE) at it.
Running services keep the certificates they started with: restart them after
`--rotate`.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.config import SERVICES
from runtime.tls import WORKLOADS, default_tls_dir, spiffe_id

CA_DAYS = 365
LEAF_DAYS = 30
# `make up` / `make test` renew a certificate this close to its expiry.
RENEW_DAYS = 7
CLOCK_SKEW = datetime.timedelta(minutes=5)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _expiring(path: Path, issuer: x509.Certificate | None = None) -> bool:
    """True if the certificate is missing, expires soon or was not issued by `issuer`."""
    if not path.exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if issuer is not None and cert.issuer != issuer.subject:
        return True
    return cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS)


def make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ticketing development CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", key)
    _write_cert(directory / "ca.pem", cert)
    return cert, key


def make_leaf(
    directory: Path,
    workload: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(workload))]
    if workload in SERVICES:
        # The hosts a client dials: the service name (docker-compose), localhost
        # and the loopback address the local mesh listens on.
        names += [
            x509.DNSName(workload),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, workload)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / f"{workload}.key", key)
    _write_cert(directory / f"{workload}.pem", cert)


def ensure(directory: Path, rotate: bool = False) -> list[str]:
    """Makes the CA and every workload's certificate that is missing or expiring
    (all of them with `rotate`); returns what was made."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    ca_file, ca_key_file = directory / "ca.pem", directory / "ca.key"
    if rotate or not ca_key_file.exists() or _expiring(ca_file):
        ca_cert, ca_key = make_ca(directory)
        made.append("ca")
    else:
        ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    for workload in WORKLOADS:
        if "ca" in made or _expiring(directory / f"{workload}.pem", ca_cert):
            make_leaf(directory, workload, ca_cert, ca_key)
            made.append(workload)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_tls_dir())
    parser.add_argument("--rotate", action="store_true", help="a new CA and new certificates")
    args = parser.parse_args()
    made = ensure(args.dir, args.rotate)
    if made:
        print(f"issued {', '.join(made)} in {args.dir}")
    if args.rotate:
        print("restart the mesh (make down up) so every workload presents its new certificate")


if __name__ == "__main__":
    main()
