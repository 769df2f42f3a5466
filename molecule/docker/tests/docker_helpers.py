"""Helpers shared by the docker scenario's tests and fixtures."""

from __future__ import annotations

import base64
import subprocess

IMAGE = "apes-test/busybox:1"
# busybox applets the tests use; the image is /bin/busybox plus these links and a web root.
APPLETS = "sh echo cat sleep grep head tail seq ls ping wc httpd true"


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    counters = {}
    tail = result.stdout.split("PLAY RECAP", 1)[-1]
    for line in tail.splitlines():
        name, sep, rest = line.partition(" : ")
        if not sep:
            continue
        counters[name.strip()] = {k: int(v) for k, v in (item.split("=") for item in rest.split())}
    return counters


def ensure_image(host, name: str = IMAGE, marker: str = "apes") -> str:
    """Import a tiny image from Debian's busybox-static (no registry needed); idempotent."""
    if host.run(f"docker image inspect {name}").rc != 0:
        host.check_output(
            "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/www; cp /bin/busybox $d/bin/busybox;"
            f" for a in {APPLETS}; do ln -s busybox $d/bin/$a; done; echo {marker} > $d/www/index.html;"
            f" tar -C $d -c . | docker import -c 'CMD [\"/bin/sh\"]' - {name} >/dev/null; rm -rf $d"
        )
    return name


def write_file(host, path: str, content: str, mode: str = "0600") -> None:
    """Write a text file on the instance, byte for byte."""
    encoded = base64.b64encode(content.encode()).decode()
    host.check_output(f"install -m {mode} /dev/null {path} && echo {encoded} | base64 -d > {path}")
