"""A tiny HTTP proxy in front of the GCS emulator that can lose one reply.

Armed, it forwards the next conditional create (``ifGenerationMatch=0``) to the emulator,
which performs it, and then answers the client 503 as if the reply had been lost. gcsfs
retries the request, and the retry meets a 412 for the object it itself just created: the
situation the nonce in ``GCSBackend.create`` exists for.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class LosingProxy:
    """``with LosingProxy(emulator_url) as proxy: ... proxy.url ...; proxy.arm()``."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._armed = threading.Event()
        self.lost = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                conn = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    status, resp_headers = resp.status, resp.getheaders()
                finally:
                    conn.close()
                if "ifGenerationMatch=0" in self.path and proxy._armed.is_set():
                    proxy._armed.clear()
                    proxy.lost += 1
                    status, data, resp_headers = 503, b'{"error": {"code": 503, "message": "lost"}}', [
                        ("Content-Type", "application/json")]
                self.send_response(status)
                for k, v in resp_headers:
                    if k.lower() not in _HOP_HEADERS:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def arm(self) -> None:
        """Lose the reply of the next conditional create."""
        self._armed.set()

    def __enter__(self) -> "LosingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
