"""Unit tests for the OpenPGP key parsing behind apes.infra.docker_key_fingerprints.

The fixtures are real keys made with GnuPG; their fingerprints are the ones gpg printed
(fixtures/docker_openpgp/README.md), so the parser is checked against an independent implementation.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from ansible_collections.apes.infra.plugins.module_utils._docker_openpgp import (
    ARMOR_BEGIN,
    ARMOR_END,
    TAG_PUBLIC_KEY,
    TAG_PUBLIC_SUBKEY,
    OpenPGPError,
    crc24,
    dearmor,
    key_fingerprint,
    normalize_fingerprint,
    packets,
    primary_fingerprints,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "docker_openpgp"
ED25519 = (FIXTURES / "ed25519-with-subkey.asc").read_text()
RSA2048 = (FIXTURES / "rsa2048.asc").read_text()
ED25519_FPR = "3F6724E39736F43128894BD0C625D42F56891FBE"
ED25519_SUBKEY_FPR = "59DF0B0B69CCB4F547C0DD92AFE79827F9D8ED3C"
RSA2048_FPR = "BABF68B476C4506A8E6AAEA7B58A1BFCAAD2C0DB"


def armor(data: bytes, checksum: bool = True, headers: tuple[str, ...] = ()) -> str:
    body = base64.b64encode(data).decode()
    lines = [ARMOR_BEGIN, *headers, ""]
    lines += [body[i : i + 64] for i in range(0, len(body), 64)]
    if checksum:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode())
    lines.append(ARMOR_END)
    return "\n".join(lines) + "\n"


def new_format(tag: int, body: bytes, width: int) -> bytes:
    """Encode a packet with a new-format header using a 1-, 2- or 5-octet length."""
    size = len(body)
    if width == 1:
        assert size < 192
        length = bytes([size])
    elif width == 2:
        assert 192 <= size < 8384
        length = bytes([((size - 192) >> 8) + 192, (size - 192) & 0xFF])
    else:
        length = b"\xff" + size.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def test_crc24_known_values():
    assert crc24(b"") == 0xB704CE
    # The CRC-24/OPENPGP check value from the CRC catalogue.
    assert crc24(b"123456789") == 0x21CF02


def test_fingerprints_match_gpg():
    assert primary_fingerprints(ED25519) == [ED25519_FPR]
    assert primary_fingerprints(RSA2048) == [RSA2048_FPR]


def test_subkeys_are_not_listed_but_parsed():
    tags = [(tag, key_fingerprint(body)) for tag, body in packets(dearmor(ED25519)) if tag in (6, 14)]
    assert tags == [(TAG_PUBLIC_KEY, ED25519_FPR), (TAG_PUBLIC_SUBKEY, ED25519_SUBKEY_FPR)]


def test_several_blocks_in_one_file():
    assert primary_fingerprints(ED25519 + "\n" + RSA2048) == [ED25519_FPR, RSA2048_FPR]


def test_armor_headers_crlf_and_surrounding_text_are_accepted():
    data = dearmor(RSA2048)
    text = "Docker's key, fetched today\r\n" + armor(data, headers=("Version: GnuPG v1", "Comment: test")).replace(
        "\n", "\r\n"
    )
    assert primary_fingerprints(text) == [RSA2048_FPR]


def test_checksum_line_is_optional():
    assert primary_fingerprints(armor(dearmor(RSA2048), checksum=False)) == [RSA2048_FPR]


def test_new_format_headers_give_the_same_fingerprints():
    rebuilt = b""
    for tag, body in packets(dearmor(RSA2048)):
        width = 1 if len(body) < 192 else 2
        rebuilt += new_format(tag, body, width)
    assert primary_fingerprints(armor(rebuilt)) == [RSA2048_FPR]
    five = b"".join(new_format(tag, body, 5) for tag, body in packets(dearmor(ED25519)))
    assert primary_fingerprints(armor(five)) == [ED25519_FPR]


@pytest.mark.parametrize(("version", "prefix", "octets"), [(5, b"\x9a", 4), (6, b"\x9b", 4)])
def test_v5_and_v6_fingerprints_are_sha256(version, prefix, octets):
    body = bytes([version]) + b"\x00" * 40
    expected = hashlib.sha256(prefix + len(body).to_bytes(octets, "big") + body).hexdigest().upper()
    assert key_fingerprint(body) == expected
    assert primary_fingerprints(armor(new_format(TAG_PUBLIC_KEY, body, 1))) == [expected]


def test_damaged_checksum_is_refused():
    lines = ED25519.strip().splitlines()
    crc_index = next(i for i, line in enumerate(lines) if line.startswith("="))
    lines[crc_index] = "=AAAA"
    with pytest.raises(OpenPGPError, match="CRC-24 checksum does not match"):
        primary_fingerprints("\n".join(lines))


def test_flipped_bit_in_body_is_refused_by_the_checksum():
    data = bytearray(dearmor(ED25519))
    data[20] ^= 0x01
    text = armor(bytes(data))
    good_crc = "=" + base64.b64encode(crc24(dearmor(ED25519)).to_bytes(3, "big")).decode()
    lines = text.splitlines()
    lines[-2] = good_crc
    with pytest.raises(OpenPGPError, match="checksum"):
        primary_fingerprints("\n".join(lines))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no ASCII-armored OpenPGP public key"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n", "no ASCII-armored"),
        (f"{ARMOR_BEGIN}\n\nmDMEawwa\n", "has no '-----END PGP PUBLIC KEY BLOCK-----' line"),
        (f"{ARMOR_BEGIN}\n\n!!!notbase64!!!\n{ARMOR_END}\n", "not valid base64"),
        (armor(b"\x01\x02"), "not an OpenPGP packet header"),
        (armor(b"\x99\x01\x00\x04"), "truncated"),
        (armor(b"\x9b\x04"), "indeterminate length"),
        (armor(b"\xc6\xe0\x04"), "partial body lengths"),
        (armor(new_format(13, b"user id only", 1)), "contains no public key packet"),
        (armor(new_format(TAG_PUBLIC_KEY, b"\x03" + b"\x00" * 10, 1)), "version 3 is not supported"),
        (armor(new_format(TAG_PUBLIC_KEY, b"", 1)), "empty key packet"),
    ],
)
def test_bad_input_is_refused_with_a_reason(text, message):
    with pytest.raises(OpenPGPError, match=message):
        primary_fingerprints(text)


def test_binary_input_is_refused():
    with pytest.raises(OpenPGPError, match="expected the key as text"):
        primary_fingerprints(dearmor(RSA2048))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9DC8 5822 9FC7 DD38 854A  E2D8 8D81 803C 0EBF CD88", "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"),
        ("0x9dc858229fc7dd38854ae2d88d81803c0ebfcd88", "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"),
        ("a" * 64, "A" * 64),
    ],
)
def test_normalize_fingerprint(value, expected):
    assert normalize_fingerprint(value) == expected


@pytest.mark.parametrize("value", ["0EBFCD88", "8D81803C0EBFCD88", "Z" * 40, "", "9DC8" * 11])
def test_short_ids_and_garbage_are_not_fingerprints(value):
    with pytest.raises(OpenPGPError, match="not a full OpenPGP fingerprint"):
        normalize_fingerprint(value)


def test_fingerprint_must_be_text():
    with pytest.raises(OpenPGPError, match="must be a string"):
        normalize_fingerprint(0x0EBFCD88)
