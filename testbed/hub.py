"""A FAKE Hugging Face Hub for tests: plain http.server in a thread, model repositories at one commit, each made
of the files of one local directory. Point huggingface_hub at it with HF_ENDPOINT=<hub.url>.

It speaks the part of the Hub's HTTP API that huggingface_hub (1.16) uses to download a model, with the
headers and error codes it reads:

- GET /api/models/<repo id>/revision/<revision> (and /api/models/<repo id>, as main): the repository's id, its
  commit as `sha` and its files as `siblings`; what snapshot_download lists before downloading.
- HEAD and GET /<repo id>/resolve/<revision>/<file>: the file, with X-Repo-Commit, ETag (its git blob id, the
  Hub's ETag of a file kept in git) and Content-Length, straight from this server: no redirect to a CDN, no
  Xet headers, so the client downloads by plain HTTP.
- The revision is the one given (e.g. main) or the commit itself. Errors are 404s carrying X-Error-Code as
  the Hub sends it, which huggingface_hub turns into its own errors: RepoNotFound for another repository,
  RevisionNotFound for another revision, EntryNotFound (with X-Repo-Commit) for a file the commit lacks.
  Anything else is a plain 404.

It does not do: other repository types (datasets, spaces), the tree API (so a directory without files, which
snapshot_download would list through it, is refused), authentication, Range requests (the client then takes
the whole file again), several revisions, compression, or uploads. The directory is read when the server
starts: its files must not change while it serves them.

    with hub_server(files_dir, repo_ids=("Qwen/Qwen3-8B",)) as hub:
        env["HF_ENDPOINT"] = hub.url  # hub.commit is the commit, hub.requests the paths asked for
"""

import contextlib
import dataclasses
import hashlib
import http.server
import json
import pathlib
import re
import socket
import threading
import urllib.parse

REQUEST_TIMEOUT = 10.0  # seconds a connection may stay silent
STOP_TIMEOUT = 5.0

REVISION_API = re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<revision>[^/]+))?")
RESOLVE = re.compile(r"/(?P<repo>.+?)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")


def git_blob_id(data):
    """The id git gives a file's content (the Hub's ETag of a file kept in git)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclasses.dataclass
class Hub:
    url: str  # the HF_ENDPOINT value
    repo_ids: tuple
    revision: str
    commit: str  # 40 hex digits, derived from the files' names and content
    files: dict  # repository path -> (local path, size, git blob id)
    requests: list = dataclasses.field(default_factory=list)  # paths asked for, unquoted, in order
    downloaded: list = dataclasses.field(default_factory=list)  # repository paths whose content was sent

    def revision_info(self, repo_id):
        return {"id": repo_id, "modelId": repo_id, "sha": self.commit, "private": False, "gated": False,
                "disabled": False, "siblings": [{"rfilename": name} for name in self.files]}


def read_files(directory):
    """{repository path: (local path, size, git blob id)} of every file under `directory`, sorted."""
    directory = pathlib.Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files[path.relative_to(directory).as_posix()] = (path, len(data), git_blob_id(data))
    return files


def commit_of(files):
    listing = "".join(f"{name}\0{blob}\n" for name, (_, _, blob) in files.items())
    return hashlib.sha1(listing.encode()).hexdigest()


def _handler(hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT

        def do_HEAD(self):
            self.answer(send_body=False)

        def do_GET(self):
            self.answer(send_body=True)

        def answer(self, send_body):
            raw_path = urllib.parse.urlsplit(self.path).path
            hub.requests.append(urllib.parse.unquote(raw_path))
            # Match the quoted path: a revision such as refs/pr/1 comes as one segment, refs%2Fpr%2F1.
            if match := REVISION_API.fullmatch(raw_path):
                self.revision_api(match, send_body)
            elif match := RESOLVE.fullmatch(raw_path):
                self.resolve(match, send_body)
            else:
                self.error(404, None, "Not found", send_body)

        def known(self, repo, revision, send_body):
            """Whether the repository and revision are the hub's; answers the error otherwise."""
            if repo not in hub.repo_ids:
                self.error(404, "RepoNotFound", "Repository not found", send_body)
            elif revision not in (hub.revision, hub.commit):
                self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", send_body)
            else:
                return True
            return False

        def revision_api(self, match, send_body):
            repo, revision = urllib.parse.unquote(match["repo"]), urllib.parse.unquote(match["revision"] or "main")
            if self.known(repo, revision, send_body):
                body = json.dumps(hub.revision_info(repo)).encode()
                self.send(200, {"Content-Type": "application/json"}, body, send_body)

        def resolve(self, match, send_body):
            revision, name = urllib.parse.unquote(match["revision"]), urllib.parse.unquote(match["file"])
            if not self.known(urllib.parse.unquote(match["repo"]), revision, send_body):
                return
            if name not in hub.files:
                self.error(404, "EntryNotFound", "Entry not found", send_body, {"X-Repo-Commit": hub.commit})
                return
            path, size, blob = hub.files[name]
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                       "ETag": f'"{blob}"', "X-Repo-Commit": hub.commit, "Accept-Ranges": "none"}
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                with open(path, "rb") as source:
                    while chunk := source.read(1 << 20):
                        self.wfile.write(chunk)
                hub.downloaded.append(name)

        def error(self, status, code, message, send_body, extra=None):
            headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self.send(status, headers, json.dumps({"error": message}).encode(), send_body)

        def send(self, status, headers, body, send_body):
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def hub_server(files_dir, repo_ids=("Qwen/Qwen3-8B",), revision="main", host="127.0.0.1", port=0):
    """Serve the files of `files_dir` as each of `repo_ids` at `revision` on host:port (0: a free port); yields a Hub,
    and stops the server on exit."""
    files = read_files(files_dir)
    if not files:
        raise ValueError(f"{files_dir} holds no files")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("HubServer", (http.server.ThreadingHTTPServer,), {"address_family": family})
    hub = Hub("", tuple(repo_ids), revision, commit_of(files), files)
    server = server_class((host, port), _handler(hub))
    server.daemon_threads = True
    bound = server.server_address[1]
    hub.url = f"http://[{host}]:{bound}" if family == socket.AF_INET6 else f"http://{host}:{bound}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT)
