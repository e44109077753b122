"""A Hugging Face Hub stand-in on loopback, speaking what huggingface_hub 2.4 sends.

Part of the rig (tests and hack/bench-weights.py use it; the product never does).

Why: tests here cannot reach the Hub, yet the weights layer must be tested with the real
`huggingface_hub` client (`snapshot_download`, `hf_hub_download`) against Hub-shaped answers,
with `HF_ENDPOINT` pointing here. The protocol below was read from the pinned client
(huggingface_hub 2.4.0: hf_api.model_info / list_repo_tree, file_download.get_hf_file_metadata
/ http_get, utils._http.hf_raise_for_status):

- `GET /api/models/{org}/{name}[/revision/{rev}]`: model info (`id`, `sha`, `siblings`,
  `gated`, `private`); `snapshot_download` skips it when the revision is a commit hash.
- `GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=..`: the file list
  (`type`, `path`, `size`, `oid` = git blob sha1, and for LFS files `lfs` {oid = sha256,
  size, pointerSize}).
- `HEAD|GET /{org}/{name}/resolve/{rev}/{path}`: a small file answers 200 with `ETag` (its
  git blob sha1), `X-Repo-Commit` and `Content-Length`; an LFS file (weights) answers 302 to
  a signed URL on another origin (`localhost` instead of `127.0.0.1`), carrying
  `X-Linked-Etag` (sha256), `X-Linked-Size` and `X-Repo-Commit` as the real Hub does, so the
  client takes the metadata from the redirect and drops the token for the blob GET. `Range`
  requests answer 206.
- Errors carry `X-Error-Code`: `RepoNotFound` (401, as the Hub answers for unknown or
  private repos without a token), `RevisionNotFound` (404), `EntryNotFound` (404), and
  `GatedRepo` for a gated repo's files: 401 without a token, 403 with a token that is not
  on the repo's list.

Every request is logged (method, host, path, status, whether a token was sent), so tests can
show that a second start downloads nothing. It binds 127.0.0.1, or an address the rig made
itself that pods can reach (the control plane's bridge address, handed in as `host`); there
the "other origin" of the blobs is a second port of the same address, since `localhost`
would be the pod itself. It must not bind anything else nor read files outside the folders
handed to `add_repo`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack")
LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub stores big files in LFS whatever their name
CHUNK = 1 << 20
DEFAULT_BRANCH = "main"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with these bytes (what the Hub sends as a small file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    spec = "version https://git-lfs.github.com/spec/v1"
    return f"{spec}\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True, slots=True)
class HubFile:
    path: str  # "/"-separated, relative to the repo root
    source: Path
    size: int
    blob_sha1: str  # git blob id of the file (small) or of its LFS pointer (LFS)
    sha256: str | None  # set for LFS files only

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def etag(self) -> str:
        return self.sha256 if self.sha256 is not None else self.blob_sha1


@dataclass(slots=True)
class HubRepo:
    repo_id: str
    commit: str
    files: dict[str, HubFile]
    gated: bool = False
    private: bool = False
    tokens: frozenset[str] = frozenset()
    branches: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubRequest:
    method: str
    host: str
    path: str
    status: int
    token: bool  # an Authorization header was sent
    client: str = ""  # the address the request came from (a pod's, on the rig's bridge)

    @property
    def is_download(self) -> bool:
        """A GET that transferred file bytes (a small file's resolve, or an LFS blob)."""
        return self.method == "GET" and self.status in (200, 206) and (
            "/resolve/" in self.path or self.path.startswith("/_cdn/")
        )


def _hash_file(path: Path) -> tuple[bytes | None, str, int]:
    """(bytes when small, sha256, size) of a file, reading it in chunks."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    small = path.read_bytes() if size < LFS_MIN_BYTES else None
    return small, digest.hexdigest(), size


def _hub_file(root: Path, path: Path) -> HubFile:
    rel = path.relative_to(root).as_posix()
    small, sha256, size = _hash_file(path)
    if small is not None and not rel.endswith(LFS_SUFFIXES):
        return HubFile(rel, path, size, git_blob_sha1(small), None)
    return HubFile(rel, path, size, git_blob_sha1(lfs_pointer(sha256, size)), sha256)


class HubStub:
    """The server; `with running_hub() as hub:` starts it on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[HubRequest] = []
        self.corrupt: set[str] = set()  # sha256 of LFS blobs served with a flipped first byte
        self.blob_delay_s = 0.0  # a slow CDN: wait this long before sending an LFS blob
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(16)
        self.host = host
        self._servers = [ThreadingHTTPServer((host, 0), _handler_for(self))]
        if host != "127.0.0.1":  # the blobs' origin: a second port (see the docstring)
            self._servers.append(ThreadingHTTPServer((host, 0), _handler_for(self)))
        for server in self._servers:
            server.daemon_threads = True
        self._threads = [threading.Thread(target=server.serve_forever, daemon=True)
                         for server in self._servers]
        self.port = int(self._servers[0].server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for HF_ENDPOINT."""
        return f"http://{self.host}:{self.port}"

    @property
    def cdn(self) -> str:
        """Another origin of the same hub (the client treats it as a CDN: no token)."""
        if len(self._servers) == 1:
            return f"http://localhost:{self.port}"
        return f"http://{self.host}:{self._servers[1].server_address[1]}"

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        commit: str | None = None,
        gated: bool = False,
        private: bool = False,
        tokens: tuple[str, ...] = (),
    ) -> HubRepo:
        """Serve every file under `folder` as `repo_id` at `commit` (also branch `main`)."""
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo id {repo_id!r} must be org/name")
        sha = commit or secrets.token_hex(20)
        if len(sha) != 40 or any(ch not in "0123456789abcdef" for ch in sha):
            raise ValueError(f"commit {sha!r} must be 40 lowercase hex characters")
        files = {
            f.path: f
            for f in (_hub_file(folder, p) for p in sorted(folder.rglob("*")) if p.is_file())
        }
        repo = HubRepo(repo_id, sha, files, gated, private, frozenset(tokens),
                       {DEFAULT_BRANCH: sha})
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def log(self, request: HubRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def downloads(self) -> list[HubRequest]:
        with self._lock:
            return [r for r in self.requests if r.is_download]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def sign(self, sha256: str) -> str:
        return hmac.new(self._secret, sha256.encode(), hashlib.sha256).hexdigest()


@contextmanager
def running_hub() -> Iterator[HubStub]:
    hub = HubStub()
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


class _Answer(Exception):
    """An error answer: status, X-Error-Code, message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler_for(hub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    return Handler


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return  # the hub's own request log is the record

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # -- dispatch ---------------------------------------------------------------------------

    def _serve(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = url.path
        try:
            if path.startswith("/api/models/"):
                self._api(path[len("/api/models/") :], parse_qs(url.query), head)
            elif path.startswith("/_cdn/"):
                self._cdn(path[len("/_cdn/") :], parse_qs(url.query), head)
            else:
                self._resolve(path.lstrip("/"), head)
        except _Answer as answer:
            self._error(answer, head)

    def _repo(self, org: str, name: str) -> HubRepo:
        repo = self.hub.repos.get(f"{org}/{name}")
        if repo is None or (repo.private and self._token() not in repo.tokens):
            raise _Answer(401, "RepoNotFound", "Repository not found")
        return repo

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def _commit(self, repo: HubRepo, revision: str) -> str:
        revision = unquote(revision)
        if revision == repo.commit:
            return repo.commit
        if revision in repo.branches:
            return repo.branches[revision]
        raise _Answer(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    # -- /api/models/... -----------------------------------------------------------------------

    def _api(self, rest: str, query: dict[str, list[str]], head: bool) -> int:
        parts = rest.split("/")
        if len(parts) < 2:
            raise _Answer(404, None, "Not Found")
        repo = self._repo(parts[0], parts[1])
        tail = parts[2:]
        if not tail:
            return self._json(self._info(repo, repo.commit), head)
        if tail[0] == "revision" and len(tail) == 2:
            return self._json(self._info(repo, self._commit(repo, tail[1])), head)
        if tail[0] == "tree" and len(tail) >= 2:
            self._commit(repo, tail[1])
            prefix = "/".join(unquote(p) for p in tail[2:]).strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            return self._json(self._tree(repo, prefix, recursive), head)
        raise _Answer(404, None, "Not Found")

    def _info(self, repo: HubRepo, commit: str) -> dict[str, object]:
        return {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["transformers", "safetensors"],
            "library_name": "transformers",
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        }

    def _tree(self, repo: HubRepo, prefix: str, recursive: bool) -> list[dict[str, object]]:
        base = f"{prefix}/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in repo.files):
            raise _Answer(404, "EntryNotFound", f"{prefix} does not exist")
        out: list[dict[str, object]] = []
        folders: set[str] = set()
        for path in sorted(repo.files):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            if "/" in rest:
                dirs = rest.split("/")[:-1]
                for depth in range(1, len(dirs) + 1 if recursive else 2):
                    folders.add(base + "/".join(dirs[:depth]))
                if not recursive:
                    continue
            f = repo.files[path]
            entry: dict[str, object] = {"type": "file", "oid": f.blob_sha1, "size": f.size,
                                        "path": f.path}
            if f.sha256 is not None:
                pointer = lfs_pointer(f.sha256, f.size)
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(pointer)}
            out.append(entry)
        for folder in sorted(folders):
            oid = hashlib.sha1(folder.encode(), usedforsecurity=False).hexdigest()
            out.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
        return out

    # -- /{org}/{name}/resolve/{rev}/{path} ------------------------------------------------------

    def _resolve(self, rest: str, head: bool) -> int:
        parts = rest.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            raise _Answer(404, None, "Not Found")
        repo = self._repo(parts[0], parts[1])
        commit = self._commit(repo, parts[3])
        filename = "/".join(unquote(p) for p in parts[4:])
        hub_file = repo.files.get(filename)
        if hub_file is None:
            raise _Answer(404, "EntryNotFound", f"Entry not found: {filename}")
        if repo.gated:
            token = self._token()
            if token is None:
                raise _Answer(401, "GatedRepo", (
                    f"Access to model {repo.repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."))
            if token not in repo.tokens:
                raise _Answer(403, "GatedRepo", (
                    f"Access to model {repo.repo_id} is restricted and you are not in the "
                    "authorized list. Visit the model page to ask for access."))
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if hub_file.sha256 is not None:
            location = f"{self.hub.cdn}/_cdn/{hub_file.sha256}?sig={self.hub.sign(hub_file.sha256)}"
            headers = {**common, "Location": location, "X-Linked-Etag": f'"{hub_file.sha256}"',
                       "X-Linked-Size": str(hub_file.size), "ETag": f'"{hub_file.blob_sha1}"',
                       "Content-Length": "0"}
            self._head(302, headers)
            return 302
        return self._send_file(hub_file, {**common, "ETag": f'"{hub_file.blob_sha1}"'}, head)

    def _cdn(self, sha256: str, query: dict[str, list[str]], head: bool) -> int:
        signature = query.get("sig", [""])[0]
        if not hmac.compare_digest(signature, self.hub.sign(sha256)):
            raise _Answer(403, None, "signature does not match")
        for repo in list(self.hub.repos.values()):
            for hub_file in repo.files.values():
                if hub_file.sha256 == sha256:
                    if not head and self.hub.blob_delay_s:
                        time.sleep(self.hub.blob_delay_s)
                    flip = sha256 in self.hub.corrupt
                    return self._send_file(hub_file, {"ETag": f'"{sha256}"'}, head, flip=flip)
        raise _Answer(404, None, "no such blob")

    # -- writing answers -------------------------------------------------------------------------

    def _send_file(self, hub_file: HubFile, headers: dict[str, str], head: bool, *,
                   flip: bool = False) -> int:
        start, end = 0, hub_file.size - 1
        status = 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            if first.isdigit():
                start = int(first)
                end = min(int(last), end) if last.isdigit() else end
            elif last.isdigit():  # a suffix: the last N bytes
                start = max(0, hub_file.size - int(last))
            if start > end and hub_file.size:
                raise _Answer(416, None, "Range Not Satisfiable")
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{hub_file.size}"}
        length = max(0, end - start + 1)
        self._head(status, {**headers, "Content-Length": str(length),
                            "Content-Type": "application/octet-stream"})
        if not head:
            with open(hub_file.source, "rb") as fh:
                fh.seek(start)
                left = length
                while left > 0 and (chunk := fh.read(min(CHUNK, left))):
                    if flip and fh.tell() - len(chunk) == 0:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    self.wfile.write(chunk)
                    left -= len(chunk)
        return status

    def _json(self, body: object, head: bool) -> int:
        data = json.dumps(body).encode()
        self._head(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        if not head:
            self.wfile.write(data)
        return 200

    def _error(self, answer: _Answer, head: bool) -> None:
        data = json.dumps({"error": answer.message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)),
                   "X-Error-Message": answer.message}
        if answer.code:
            headers["X-Error-Code"] = answer.code
        self._head(answer.status, headers)
        if not head:
            self.wfile.write(data)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        # Logged before the answer leaves: a client that has its answer finds it in the log.
        self.hub.log(HubRequest(self.command, self.headers.get("Host", ""),
                                urlsplit(self.path).path, status,
                                bool(self.headers.get("Authorization")),
                                str(self.client_address[0])))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
