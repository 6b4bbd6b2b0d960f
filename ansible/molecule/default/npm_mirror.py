#!/usr/bin/env python3
"""A local npm registry for the Molecule scenario: the real packages of one lock file, served on
127.0.0.1 (the VM reaches it as 10.0.2.2). Stand-in for the registry, or the mirror of an air-gapped
fleet, that an operator's hosts install a CLI's dependencies from (the VM has no Internet).

    npm_mirror.py start STATE_DIR PACKAGE_DIR   # prints {"pid", "port", "url"}; also STATE_DIR/npm_mirror.json
    npm_mirror.py stop STATE_DIR
    npm_mirror.py serve STATE_DIR               # what start runs, detached

PACKAGE_DIR holds a package-lock.json (v3) whose packages this machine's npm cache holds (an `npm ci`
there fetched them). Each package's tarball is the cached one, checked against the lock's integrity;
its packument lists the versions the lock has, with the lock's fields and `dist`. Optional packages
that are not cached (other platforms') are left out: an `npm ci --omit=optional` never asks for them.
Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

READY = re.compile(r"^npm mirror ready on (http://127\.0\.0\.1:(\d+))$", re.MULTILINE)
SCRIPT = str(Path(__file__).resolve())
TARBALLS = "/-/tarballs/"
MANIFEST_FIELDS = ("dependencies", "optionalDependencies", "peerDependencies", "peerDependenciesMeta",
                   "bin", "engines", "os", "cpu", "license")


def npm_cache() -> Path:
    out = subprocess.run(["npm", "config", "get", "cache"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "_cacache"


def cached_tarball(cache: Path, integrity: str) -> Path:
    algorithm, _, digest = integrity.split()[0].partition("-")
    hexdigest = base64.b64decode(digest).hex()
    return cache / "content-v2" / algorithm / hexdigest[:2] / hexdigest[2:4] / hexdigest[4:]


def build(state_dir: Path, package_dir: Path) -> None:
    """state_dir/mirror: packuments/<quoted name>.json and tarballs/<sha512 hex>.tgz."""
    lock = json.loads((package_dir / "package-lock.json").read_text())
    mirror, cache = state_dir / "mirror", npm_cache()
    shutil.rmtree(mirror, ignore_errors=True)
    (mirror / "tarballs").mkdir(parents=True)
    packuments: dict[str, dict] = {}
    for path, entry in lock["packages"].items():
        if not path or entry.get("link") or "integrity" not in entry:
            continue
        name = entry.get("name") or path.rpartition("node_modules/")[2]
        cached = cached_tarball(cache, entry["integrity"])
        if not cached.exists():
            if entry.get("optional"):
                continue
            sys.exit(f"{name}@{entry['version']} is not in the npm cache {cache}: run npm ci in {package_dir}")
        algorithm, _, digest = entry["integrity"].split()[0].partition("-")
        if hashlib.new(algorithm, cached.read_bytes()).digest() != base64.b64decode(digest):
            sys.exit(f"{cached}: does not match the integrity of {name}@{entry['version']}")
        tarball = f"{hashlib.sha256(entry['integrity'].encode()).hexdigest()}.tgz"
        shutil.copyfile(cached, mirror / "tarballs" / tarball)
        packument = packuments.setdefault(name, {"name": name, "dist-tags": {}, "versions": {}})
        packument["versions"][entry["version"]] = {
            "name": name, "version": entry["version"],
            **{field: entry[field] for field in MANIFEST_FIELDS if field in entry},
            "dist": {"tarball": TARBALLS + tarball, "integrity": entry["integrity"]},
        }
        packument["dist-tags"]["latest"] = entry["version"]
    (mirror / "packuments.json").write_text(json.dumps(packuments))


class Registry(http.server.BaseHTTPRequestHandler):
    """GET /<name> (a scoped name's / as %2f): its packument, tarball addresses on the Host asked;
    GET /-/tarballs/<file>: a tarball."""

    mirror: Path
    packuments: dict[str, dict]

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith(TARBALLS) and "/" not in path[len(TARBALLS):]:
            file = self.mirror / "tarballs" / path[len(TARBALLS):]
            if file.is_file():
                return self.answer(200, file.read_bytes(), "application/octet-stream")
        elif (packument := self.packuments.get(urllib.parse.unquote(path[1:]))) is not None:
            base = f"http://{self.headers.get('Host', '')}"
            body = json.dumps(packument).replace(f'"{TARBALLS}', f'"{base}{TARBALLS}')
            return self.answer(200, body.encode(), "application/json")
        self.answer(404, b'{"error":"not found"}', "application/json")

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(state_dir: Path) -> None:
    Registry.mirror = state_dir / "mirror"
    Registry.packuments = json.loads((Registry.mirror / "packuments.json").read_text())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    print(f"npm mirror ready on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def start(state_dir: Path, package_dir: Path) -> dict:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    build(state_dir, package_dir)
    log = state_dir / "npm_mirror.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, SCRIPT, "serve", str(state_dir)], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,  # outlives Molecule's ansible-playbook runs
        )
    deadline = time.monotonic() + 30
    while not (match := READY.search(log.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"the npm mirror did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    info = {"pid": proc.pid, "url": match.group(1), "port": int(match.group(2))}
    (state_dir / "npm_mirror.json").write_text(json.dumps(info) + "\n")
    return info


def stop(state_dir: Path) -> None:
    info_file = state_dir / "npm_mirror.json"
    if not info_file.exists():
        return
    pid = json.loads(info_file.read_text())["pid"]
    try:
        if SCRIPT.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():  # never a reused pid
            os.kill(pid, 15)
    except (FileNotFoundError, ProcessLookupError):
        pass
    info_file.unlink()


def main() -> int:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if (command, len(args)) == ("start", 2):
        print(json.dumps(start(Path(args[0]), Path(args[1]))))
    elif (command, len(args)) == ("stop", 1):
        stop(Path(args[0]))
    elif (command, len(args)) == ("serve", 1):
        serve(Path(args[0]))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
