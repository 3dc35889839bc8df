"""The encrypted connection-information payload a launcher sends to Enterprise Gateway.

EG (2.6 and later, including 3.x) reads a "version 1" payload: base64 of a JSON object
`{"version": 1, "key": ..., "conn_info": ...}` where `conn_info` is base64 of the JSON connection
info encrypted with a random 16-byte AES key (ECB mode, PKCS#7 padding to 16 bytes) and `key` is base64
of that AES key encrypted with EG's RSA public key (PKCS#1 v1.5). The public key arrives as the
base64 body of a PEM "PUBLIC KEY" (DER SubjectPublicKeyInfo) without header, footer or newlines.
ECB is EG's choice, not ours: the server decrypts exactly this.
"""

from __future__ import annotations

import base64
import json

PAYLOAD_VERSION = 1
MISSING_CRYPTO = ("the Enterprise Gateway launcher needs pycryptodomex to encrypt the connection "
                  "information: pip install 'ipymini[gateway]'")


def _crypto():
    try:
        from Cryptodome.Cipher import AES, PKCS1_v1_5
        from Cryptodome.PublicKey import RSA
        from Cryptodome.Random import get_random_bytes
        from Cryptodome.Util.Padding import pad
    except ImportError as e:
        raise RuntimeError(MISSING_CRYPTO) from e
    return AES, PKCS1_v1_5, RSA, get_random_bytes, pad


def check_crypto() -> None:
    """Raise RuntimeError with an install hint if the crypto library is missing."""
    _crypto()


def encrypt_connection_info(info: dict, public_key: str) -> bytes:
    """The bytes to send to EG's response address for connection info `info`."""
    AES, PKCS1_v1_5, RSA, get_random_bytes, pad = _crypto()
    aes_key = get_random_bytes(16)
    plain = json.dumps(info).encode("utf-8")
    conn_info = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(plain, 16))
    rsa_key = RSA.import_key(base64.b64decode(public_key.encode("ascii")))
    encrypted_key = PKCS1_v1_5.new(rsa_key).encrypt(aes_key)
    envelope = {"version": PAYLOAD_VERSION,
                "key": base64.b64encode(encrypted_key).decode("ascii"),
                "conn_info": base64.b64encode(conn_info).decode("ascii")}
    return base64.b64encode(json.dumps(envelope).encode("utf-8"))
