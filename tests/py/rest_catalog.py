#!/usr/bin/env python3
"""An Iceberg REST catalog server for the integration tests: the REST spec's endpoints that
Tributary and pyiceberg's RestCatalog use, served over HTTP by a separate process, backed by
pyiceberg's SqlCatalog (SQLite) — commits are checked and applied by pyiceberg's own
requirement validation and metadata update code, and pyiceberg writes the new metadata files.

usage: rest_catalog.py --port PORT --db PATH [--token TOKEN]

With --token, every request must carry `Authorization: Bearer TOKEN`.
"""

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.table import CommitTableRequest

# pyiceberg's SqlCatalog on SQLite is not safe for concurrent commits from threads: serialise.
LOCK = Lock()


def namespace_of(text: str) -> tuple:
    return tuple(urllib.parse.unquote(text).split("\x1f"))


class Handler(BaseHTTPRequestHandler):
    catalog: SqlCatalog = None
    token: str = None

    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, status: int, body=None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, kind: str, message: str) -> None:
        self.reply(status, {"error": {"message": message, "type": kind, "code": status}})

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def authorised(self) -> bool:
        if self.token is None or self.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        self.error(401, "NotAuthorizedException", "missing or wrong bearer token")
        return False

    def route(self, method: str) -> None:
        if not self.authorised():
            return
        path = urllib.parse.urlparse(self.path).path.rstrip("/")
        parts = path.split("/")[1:]  # v1, ...
        if parts[:1] != ["v1"]:
            return self.error(404, "NotFound", path)
        parts = parts[1:]
        try:
            with LOCK:
                self.dispatch(method, parts)
        except (NoSuchTableError, NoSuchNamespaceError) as e:
            self.error(404, type(e).__name__, str(e))
        except (TableAlreadyExistsError, NamespaceAlreadyExistsError) as e:
            self.error(409, "AlreadyExistsException", str(e))
        except CommitFailedException as e:
            self.error(409, "CommitFailedException", str(e))
        except Exception as e:  # the client shows the message
            self.error(500, type(e).__name__, str(e))

    def dispatch(self, method: str, parts: list) -> None:
        catalog = self.catalog
        if parts == ["config"] and method == "GET":
            return self.reply(200, {"defaults": {}, "overrides": {}})
        if parts == ["namespaces"] and method == "POST":
            request = json.loads(self.body())
            catalog.create_namespace(tuple(request["namespace"]), request.get("properties", {}))
            return self.reply(200, {"namespace": request["namespace"], "properties": {}})
        if parts == ["namespaces"] and method == "GET":
            return self.reply(200, {"namespaces": [list(n) for n in catalog.list_namespaces()]})
        if len(parts) == 2 and parts[0] == "namespaces" and method in ("GET", "HEAD"):
            namespace = namespace_of(parts[1])
            properties = catalog.load_namespace_properties(namespace)
            return self.reply(200, {"namespace": list(namespace), "properties": properties})
        if len(parts) == 3 and parts[2] == "register" and method == "POST":
            request = json.loads(self.body())
            table = catalog.register_table(
                namespace_of(parts[1]) + (request["name"],), request["metadata-location"]
            )
            return self.reply(200, self.loaded(table))
        if len(parts) == 3 and parts[2] == "tables" and method == "GET":
            tables = catalog.list_tables(namespace_of(parts[1]))
            return self.reply(
                200,
                {"identifiers": [{"namespace": list(t[:-1]), "name": t[-1]} for t in tables]},
            )
        if len(parts) == 4 and parts[2] == "tables":
            identifier = namespace_of(parts[1]) + (urllib.parse.unquote(parts[3]),)
            table = catalog.load_table(identifier)
            if method in ("GET", "HEAD"):
                return self.reply(200, self.loaded(table))
            if method == "POST":
                request = CommitTableRequest.model_validate_json(self.body())
                response = catalog.commit_table(table, request.requirements, request.updates)
                return self.reply(
                    200,
                    {
                        "metadata-location": response.metadata_location,
                        "metadata": json.loads(response.metadata.model_dump_json()),
                    },
                )
        self.error(404, "NotFound", f"{method} /v1/{'/'.join(parts)}")

    @staticmethod
    def loaded(table) -> dict:
        return {
            "metadata-location": table.metadata_location,
            "metadata": json.loads(table.metadata.model_dump_json()),
            "config": {},
        }

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_HEAD(self) -> None:
        self.route("HEAD")

    def do_DELETE(self) -> None:
        self.route("DELETE")


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    db = args[args.index("--db") + 1]
    Handler.token = args[args.index("--token") + 1] if "--token" in args else None
    Handler.catalog = SqlCatalog("rest", uri=f"sqlite:///{db}", warehouse="file:///nonexistent")
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
