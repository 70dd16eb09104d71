"""A fake vendor shaped like GitHub's REST API, for parent-child sources, on 127.0.0.1:

    GET /user/repos?per_page=N&page=P                   [repo, ...]   Link: <...page=P+1>; rel="next", <...>; rel="last"
    GET /repos/{owner}/{repo}/issues?per_page=N&page=P  [issue, ...]  Link as above

A repo is ``{"id", "name", "full_name": "<owner>/<name>", "owner": {"login", "id"}, "open_issues_count", ...}``, an
issue ``{"id", "number", "title", "state", "user": {"login"}, "repository_url", ...}`` (GitHub's documented shapes,
trimmed). Requests must carry ``Authorization: Bearer <token>`` when a token is set (GitHub's fine-grained
tokens), and ``state=all`` lists every issue (GitHub lists open ones only without it). ``broken`` answers a
request for a path and page with a status, every time (a page that fails for good).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

MAX_PER_PAGE = 100  # GitHub's


@dataclass(frozen=True)
class Repo:
    owner: str
    name: str
    issues: int  # how many issues it has (each open or closed)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class GitHubState:
    repos: list[Repo]
    token: str | None = None
    broken: dict[tuple[str, int], int] = field(default_factory=dict)  # (path, page) -> status, every time
    seen: list[str] = field(default_factory=list)  # the paths and queries asked for, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def repo_record(self, index: int, base: str) -> dict[str, Any]:
        repo = self.repos[index]
        return {
            "id": 1_296_269 + index,
            "node_id": f"R_{index:04d}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": {"login": repo.owner, "id": 583_231 + sum(map(ord, repo.owner)), "type": "User"},
            "private": False,
            "url": f"{base}/repos/{repo.full_name}",
            "open_issues_count": repo.issues,
            "updated_at": f"2026-11-{1 + index % 28:02d}T00:00:00Z",  # what an incremental repos source follows
        }

    def issue_records(self, repo: Repo, base: str) -> list[dict[str, Any]]:
        index = self.repos.index(repo)
        return [
            {
                "id": (index + 1) * 100_000 + number,
                "number": number,
                "title": f"{repo.full_name} issue {number}",
                "state": "open" if number % 3 else "closed",
                "user": {"login": f"user{number % 7}"},
                "repository_url": f"{base}/repos/{repo.full_name}",
            }
            for number in range(repo.issues, 0, -1)  # newest first, as GitHub lists them
        ]

    def issues(self) -> list[tuple[str, int]]:
        """Every issue as (repo full name, number): what a run should land, each once."""
        return [(repo.full_name, number) for repo in self.repos for number in range(repo.issues, 0, -1)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with state.lock:
            state.seen.append(self.path)
        if state.token is not None and self.headers.get("Authorization") != f"Bearer {state.token}":
            return self._json(401, {"message": "Bad credentials"})
        try:
            page, per_page = int(query.get("page", "1")), min(int(query.get("per_page", "30")), MAX_PER_PAGE)
        except ValueError:
            return self._json(400, {"message": "page and per_page are numbers"})
        status = state.broken.get((parts.path, page))
        if status is not None:
            return self._json(status, {"message": "broken on purpose"})
        base = f"http://{self.headers.get('Host')}"
        segments = [unquote(s) for s in parts.path.split("/") if s]  # %2F in a segment stays in it
        if segments == ["user", "repos"]:
            records = [state.repo_record(i, base) for i in range(len(state.repos))]
        elif len(segments) == 4 and segments[0] == "repos" and segments[3] == "issues":
            repo = next((r for r in state.repos if (r.owner, r.name) == (segments[1], segments[2])), None)
            if repo is None:
                return self._json(404, {"message": "Not Found"})
            records = state.issue_records(repo, base)
            if query.get("state") != "all":
                records = [issue for issue in records if issue["state"] == "open"]
        else:
            return self._json(404, {"message": "Not Found"})
        chunk = records[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(records) // per_page))
        links = []
        if page < last:
            links.append(f'<{base}{parts.path}?{urlencode({**query, "page": page + 1})}>; rel="next"')
            links.append(f'<{base}{parts.path}?{urlencode({**query, "page": last})}>; rel="last"')
        return self._json(200, chunk, {"Link": ", ".join(links)} if links else {})

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: GitHubState


class GitHubLikeVendor:
    """Runs the fake GitHub in a background thread; use as a context manager."""

    def __init__(self, repos: list[Repo], token: str | None = None) -> None:
        self.state = GitHubState(repos=list(repos), token=token)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, name="github-like", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> GitHubLikeVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def break_page(self, path: str, page: int, status: int = 404) -> None:
        """Answer ``path``'s ``page`` with ``status`` from now on."""
        with self.state.lock:
            self.state.broken[(path, page)] = status

    def requests_to(self, path: str) -> list[str]:
        """The requests made for ``path`` (each with its query), in order."""
        with self.state.lock:
            return [seen for seen in self.state.seen if urlsplit(seen).path == path]


def sources(
    base_url: str, repos_per_page: int = 5, issues_per_page: int = 10, include: bool = False, incremental: bool = False
) -> list[dict[str, Any]]:
    """The sources file's two sources for it: ``repos`` (the parent; ``incremental``: on ``updated_at``, asked with
    ``since``, which this vendor ignores), ``issues`` (its child; ``include``: each issue with ``_parent_owner`` and
    ``_parent_repo``)."""
    since = {"cursor_path": "updated_at", "param": "since", "initial_value": "2026-01-01T00:00:00Z"}
    auth = {"type": "bearer", "secret_name": "apilake/vendor"}
    retries = {"max_attempts": 2, "base_delay_seconds": 0.01, "max_delay_seconds": 1}
    return [
        {
            "name": "repos",
            "base_url": base_url,
            "path": "/user/repos",
            "params": {"per_page": repos_per_page},
            "headers": {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            "records_path": "",
            "record_id_path": "id",
            "pagination": {"type": "link_header"},
            "auth": auth,
            "retries": retries,
            **({"incremental": since} if incremental else {}),
        },
        {
            "name": "issues",
            "base_url": base_url,
            "path": "/repos/{owner}/{repo}/issues",
            "params": {"state": "all", "per_page": issues_per_page},
            "headers": {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            "records_path": "",
            "record_id_path": "id",
            "pagination": {"type": "link_header"},
            "auth": auth,
            "retries": retries,
            "parent": {"source": "repos", "fields": {"owner": "owner.login", "repo": "name"}, "include": include},
        },
    ]
