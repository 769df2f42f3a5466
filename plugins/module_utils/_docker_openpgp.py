# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fingerprints of the primary keys in an ASCII-armored OpenPGP public key block (RFC 4880/9580).

Used by the docker role to check the apt repository signing key against a pinned fingerprint
before the key is trusted, without needing gpg on the controller or the target. Standard
library only. This reads key packets; it does not verify signatures (apt does that with the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"

TAG_PUBLIC_KEY = 6
TAG_PUBLIC_SUBKEY = 14

_FINGERPRINT_RE = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")


class OpenPGPError(ValueError):
    """The input is not a usable OpenPGP public key block; the message says why."""


def crc24(data):
    """CRC-24 of the armor checksum line (RFC 4880, section 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _bit in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text):
    """Return the binary packets of every public key block in text (blocks are concatenated).

    Checks the optional CRC-24 line of each block. Raises OpenPGPError when there is no block,
    a block is not terminated, its base64 is broken or its checksum does not match.
    """
    if not isinstance(text, str):
        raise OpenPGPError(f"expected the key as text, got {type(text).__name__}")
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    data = b""
    blocks = 0
    i = 0
    while i < len(lines):
        if lines[i] != ARMOR_BEGIN:
            i += 1
            continue
        i += 1
        # Armor headers (Version:, Comment:) end at the first empty line.
        while i < len(lines) and lines[i] != "" and ":" in lines[i] and lines[i] != ARMOR_END:
            i += 1
        body = []
        checksum = None
        while i < len(lines) and lines[i] != ARMOR_END:
            line = lines[i]
            if line.startswith("=") and len(line) == 5:
                checksum = line[1:]
            elif line:
                body.append(line)
            i += 1
        if i >= len(lines):
            raise OpenPGPError(f"the key block has no '{ARMOR_END}' line")
        try:
            packets = base64.b64decode("".join(body), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise OpenPGPError(f"the key block is not valid base64: {exc}") from exc
        if checksum is not None:
            try:
                expected = int.from_bytes(base64.b64decode(checksum, validate=True), "big")
            except (binascii.Error, ValueError) as exc:
                raise OpenPGPError(f"the key block's checksum line is not valid base64: {exc}") from exc
            if crc24(packets) != expected:
                raise OpenPGPError("the key block's CRC-24 checksum does not match: the key is damaged")
        data += packets
        blocks += 1
        i += 1
    if not blocks:
        raise OpenPGPError(f"no ASCII-armored OpenPGP public key found (expected a '{ARMOR_BEGIN}' line)")
    return data


def packets(data):
    """Yield (tag, body) for each OpenPGP packet in data (old and new packet formats)."""
    pos = 0
    size = len(data)
    while pos < size:
        ctb = data[pos]
        if not ctb & 0x80:
            raise OpenPGPError(f"byte {pos} is not an OpenPGP packet header")
        pos += 1
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            if pos >= size:
                raise OpenPGPError("truncated packet header")
            first = data[pos]
            if first < 192:
                length, pos = first, pos + 1
            elif first < 224:
                if pos + 1 >= size:
                    raise OpenPGPError("truncated packet header")
                length, pos = ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif first == 255:
                if pos + 5 > size:
                    raise OpenPGPError("truncated packet header")
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise OpenPGPError("partial body lengths are not allowed in a public key block")
        else:  # old format
            tag = (ctb >> 2) & 0x0F
            length_type = ctb & 0x03
            if length_type == 3:
                raise OpenPGPError("packets of indeterminate length are not allowed in a public key block")
            octets = (1, 2, 4)[length_type]
            if pos + octets > size:
                raise OpenPGPError("truncated packet header")
            length, pos = int.from_bytes(data[pos : pos + octets], "big"), pos + octets
        if pos + length > size:
            raise OpenPGPError(f"packet with tag {tag} is truncated")
        yield tag, data[pos : pos + length]
        pos += length


def key_fingerprint(body):
    """Fingerprint (upper-case hex) of a public key or subkey packet body, by key version."""
    if not body:
        raise OpenPGPError("empty key packet")
    version = body[0]
    if version == 4:
        # RFC 4880 defines v4 fingerprints as SHA-1: the algorithm is the format's, not a choice here.
        digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False)
        return digest.hexdigest().upper()
    if version == 5:
        return hashlib.sha256(b"\x9a" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    if version == 6:
        return hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise OpenPGPError(f"OpenPGP key version {version} is not supported (only 4, 5 and 6)")


def primary_fingerprints(text):
    """Fingerprints of the primary keys (not subkeys) in an ASCII-armored key block, in order."""
    result = [key_fingerprint(body) for tag, body in packets(dearmor(text)) if tag == TAG_PUBLIC_KEY]
    if not result:
        raise OpenPGPError("the key block contains no public key packet")
    return result


def normalize_fingerprint(value):
    """Upper-case hex without spaces or a 0x prefix; raises OpenPGPError when it is not 40 or 64 hex digits."""
    if not isinstance(value, str):
        raise OpenPGPError(f"a fingerprint must be a string, got {type(value).__name__}")
    text = "".join(value.split()).upper()
    if text.startswith("0X"):
        text = text[2:]
    if not _FINGERPRINT_RE.match(text):
        raise OpenPGPError(f"{value!r} is not a full OpenPGP fingerprint (40 or 64 hex digits)")
    return text
