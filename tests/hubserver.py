"""A small Hugging Face Hub-protocol server for the tests (Starlette + uvicorn, repos in memory).

It implements exactly the routes ``huggingface_hub`` 2.x calls for download, repo creation,
branches and commits. Any other route answers 501 and is recorded in ``unimplemented``;
the fixture fails the test when that list is not empty.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str


@dataclass
class HubRepo:
    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.tags:
            return self.commits[self.tags[rev]]
        hits = [c for sha, c in self.commits.items() if len(rev) >= 4 and sha.startswith(rev.lower())]
        return hits[0] if len(hits) == 1 else None


class HubState:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, HubRepo] = {}
        self.unimplemented: list[str] = []
        self.throttle: dict[str, float] = {}  # file name -> seconds to sleep per 64 KiB chunk
        self.granted: set[str] = set()  # gated repos the token may read
        self.page_size = 3  # tree listings come in pages of this many entries
        self._n = 0

    # --- test-side helpers ------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, *, private=False, gated=False) -> HubRepo:
        repo = HubRepo(repo_id, private=private, gated=gated)
        self.repos[repo_id] = repo
        base = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        self.commit(repo_id, "main", {**base, **(files or {})}, "initial commit", replace=True)
        return repo

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], message: str = "update",
               deleted: tuple[str, ...] = (), replace: bool = False) -> str:
        repo = self.repos[repo_id]
        parent = repo.commits[repo.branches[branch]].files if branch in repo.branches and not replace else {}
        new = {**parent, **files}
        for d in deleted:
            new.pop(d, None)
        self._n += 1
        sha = hashlib.sha1(f"{repo_id}:{self._n}:{message}".encode()).hexdigest()
        repo.commits[sha] = Commit(sha, new, message)
        repo.branches[branch] = sha
        return sha

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        c = self.repos[repo_id].resolve(rev)
        assert c is not None
        return dict(c.files)

    # --- access ---------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.token}"


def _err(status: int, code: str | None, message: str) -> Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def build_app(state: HubState, base_url: list[str]) -> Starlette:
    def repo_or_error(request: Request, *, write: bool = False):
        repo_id = f"{request.path_params['org']}/{request.path_params['name']}"
        repo = state.repos.get(repo_id)
        authed = state._authorized(request)
        if repo is None or (repo.private and not authed):
            status = 401 if not authed else 404
            return None, _err(status, "RepoNotFound", "Repository not found")
        if write and not authed:
            return None, _err(401, None, "Invalid credentials in Authorization header")
        return repo, None

    def commit_or_error(repo: HubRepo, rev: str):
        c = repo.resolve(rev)
        if c is None:
            return None, _err(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return c, None

    async def model_info(request: Request) -> Response:
        repo, err = repo_or_error(request)
        if err:
            return err
        c, err = commit_or_error(repo, request.path_params.get("rev", "main"))
        if err:
            return err
        return JSONResponse({
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": c.sha, "private": repo.private,
            "gated": "manual" if repo.gated else False, "disabled": False, "tags": [],
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(c.files.items())],
            "usedStorage": sum(len(d) for d in c.files.values()),
        })

    async def tree(request: Request) -> Response:
        repo, err = repo_or_error(request)
        if err:
            return err
        c, err = commit_or_error(repo, request.path_params["rev"])
        if err:
            return err
        entries = [{"type": "file", "oid": git_blob_sha1(d), "size": len(d), "path": p} for p, d in sorted(c.files.items())]
        # Paged like the Hub: a Link header with rel="next" until the listing is exhausted.
        start = int(request.query_params.get("cursor", "0"))
        page = entries[start:start + state.page_size]
        headers = {}
        if start + state.page_size < len(entries):
            nxt = f"{base_url[0]}{request.url.path}?recursive=true&cursor={start + state.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(page, headers=headers)

    async def resolve(request: Request) -> Response:
        repo, err = repo_or_error(request)
        if err:
            return err
        if repo.gated and not (state._authorized(request) and repo.repo_id in state.granted):
            return _err(403, "GatedRepo", "Access to this model is restricted")
        c, err = commit_or_error(repo, request.path_params["rev"])
        if err:
            return err
        path = request.path_params["path"]
        if path not in c.files:
            return _err(404, "EntryNotFound", f"{path} does not exist")
        data = c.files[path]
        etag = hashlib.sha256(data).hexdigest()
        headers = {"X-Repo-Commit": c.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(b"", headers=headers)
        start = 0
        status = 200
        rng = request.headers.get("range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        delay = state.throttle.get(path)
        if not delay:
            return Response(body, status_code=status, headers=headers)

        async def chunks():
            for i in range(0, len(body), 65536):
                yield body[i:i + 65536]
                await asyncio.sleep(delay)

        return StreamingResponse(chunks(), status_code=status, headers=headers)

    async def create_repo(request: Request) -> Response:
        if not state._authorized(request):
            return _err(401, None, "Invalid credentials in Authorization header")
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"{base_url[0]}/{repo_id}"
        if repo_id in state.repos:
            return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
        state.add_repo(repo_id, private=bool(body.get("private")) or body.get("visibility") == "private")
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def preupload(request: Request) -> Response:
        repo, err = repo_or_error(request, write=True)
        if err:
            return err
        c = repo.resolve(request.path_params["rev"])
        body = await request.json()
        out = []
        for f in body["files"]:
            existing = c.files.get(f["path"]) if c else None
            out.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                        "oid": git_blob_sha1(existing) if existing is not None else None})
        return JSONResponse({"files": out, "commitOid": c.sha if c else None})

    async def commit(request: Request) -> Response:
        repo, err = repo_or_error(request, write=True)
        if err:
            return err
        branch = request.path_params["rev"]
        if branch not in repo.branches:
            return _err(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        message = "commit"
        for line in (await request.body()).decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", message)
            elif key == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                state.unimplemented.append(f"commit operation {key}")
                return _err(501, None, f"unsupported commit operation {key}")
        sha = state.commit(repo.repo_id, branch, added, message, deleted=tuple(deleted))
        return JSONResponse({"commitUrl": f"{base_url[0]}/{repo.repo_id}/commit/{sha}", "commitOid": sha,
                             "pullRequestUrl": None, "success": True})

    async def branch(request: Request) -> Response:
        repo, err = repo_or_error(request, write=True)
        if err:
            return err
        name = request.path_params["branch"]
        if name in repo.branches:
            return _err(409, None, "Reference already exists")
        raw = await request.body()
        start = (json.loads(raw) if raw else {}).get("startingPoint") or "main"
        c, err = commit_or_error(repo, start)
        if err:
            return err
        repo.branches[name] = c.sha
        return JSONResponse({})

    async def validate_yaml(request: Request) -> Response:
        return JSONResponse({"errors": [], "warnings": []})

    async def unimplemented(request: Request) -> Response:
        state.unimplemented.append(f"{request.method} {request.url.path}?{request.url.query}")
        return _err(501, None, f"test hub does not implement {request.method} {request.url.path}")

    R = "/api/models/{org}/{name}"
    routes = [
        Route(R, model_info, methods=["GET"]),
        Route(R + "/revision/{rev:path}", model_info, methods=["GET"]),
        Route(R + "/tree/{rev}", tree, methods=["GET"]),
        Route(R + "/preupload/{rev}", preupload, methods=["POST"]),
        Route(R + "/commit/{rev}", commit, methods=["POST"]),
        Route(R + "/branch/{branch}", branch, methods=["POST"]),
        Route("/api/repos/create", create_repo, methods=["POST"]),
        Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
        Route("/{org}/{name}/resolve/{rev}/{path:path}", resolve, methods=["GET", "HEAD"]),
        Route("/{rest:path}", unimplemented, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)


class HubServer:
    """Runs the app in a thread on 127.0.0.1 with a free port."""

    def __init__(self, state: HubState | None = None) -> None:
        import uvicorn

        self.state = state or HubState()
        self._base: list[str] = [""]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self.url = f"http://127.0.0.1:{self.port}"
        self._base[0] = self.url
        config = uvicorn.Config(build_app(self.state, self._base), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("test hub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
