"""A real HTTP server on 127.0.0.1 for download tests: static files with byte ranges (HEAD, GET,
`Range: bytes=a-b`, `bytes=-n`), JSON documents (a Zenodo-like record), redirects with headers
(the Hugging Face hub's answer for a large file), and a switch that cuts a file's body short while
announcing its full length (an interrupted download)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> bytes sent before the connection is dropped
        self.redirects: dict[str, tuple[str, dict[str, str]]] = {}  # path -> (target path, headers of the 302)
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                path = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                server.requests.append((self.command, path, rng))
                if path in server.redirects:  # as the Hugging Face hub answers for large files
                    target, headers = server.redirects[path]
                    self.send_response(302)
                    self.send_header("Location", server.url + target)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, start, end = 200, 0, len(body) - 1
                if rng:
                    first, last = re.fullmatch(r"bytes=(\d*)-(\d*)", rng).groups()
                    if first == "":
                        start = max(0, len(body) - int(last))
                    else:
                        start, end = int(first), min(int(last) if last else end, end)
                    status = 206
                part = body[start:end + 1]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/json" if path.startswith("/api/") else
                                 "application/octet-stream")
                self.end_headers()
                if head:
                    return
                if path in server.cut:
                    self.wfile.write(part[:server.cut[path]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(part)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RecordServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def add_record(self, record: str, files: dict[str, bytes], md5: dict[str, str] | None = None) -> None:
        """A Zenodo-like record: `/api/records/<id>` lists each file (key, size, md5 checksum,
        download link), served under `/api/records/<id>/files/<key>/content`."""
        entries = []
        for key, data in files.items():
            link = f"/api/records/{record}/files/{key}/content"
            self.files[link] = data
            digest = (md5 or {}).get(key) or hashlib.md5(data).hexdigest()
            entries.append({"key": key, "size": len(data), "checksum": f"md5:{digest}",
                            "links": {"self": self.url + link}})
        self.files[f"/api/records/{record}"] = json.dumps({"id": int(record), "files": entries}).encode()


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()
