"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for tests (stdlib only; runs in a daemon thread).

Tests talk to it with the real `openai` client (through `llm.make_llm(..., backend="openai")`), so requests,
retries, timeouts and errors go over real HTTP.

    from loopback_server import LoopbackServer, reply, status, delay, raw, drop, drip
    with LoopbackServer() as srv:                  # srv.base_url == "http://127.0.0.1:<port>/v1"
        srv.push(status(429), status(500), reply("ok"))   # one action per chat request, in order
        llm = make_llm({"backend": "openai", "base_url": srv.base_url, "model": "m", ...}, run_dir)
        ...
        srv.count                                  # chat requests received (every attempt counts)
        srv.requests[-1]["body"]                   # parsed JSON body; also "headers" (lower-case keys), "path"

Importing it from another test folder (tests/ has no packages; `llm` is the src package):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "llm")); from loopback_server import ...

Actions (what the server does with one POST /v1/chat/completions):
    reply(*texts, usage=None, finish_reason="stop", model=None)
        200 with one choice per text (a server that ignores `n` is `reply("one text")` for an n=3 request).
        usage: None = counted from the texts (4 chars/token), False = no usage field, or a dict to send.
    status(code, message=None, headers=None, retry_after=None)   an OpenAI-style error body with that status
    delay(seconds, then=None)      wait (a client timeout shorter than this fires), then do `then` (default: auto)
    raw(body, code=200, content_type="application/json", headers=None)   send these bytes as they are (malformed
                                   JSON; headers: extra ones, e.g. {"Content-Encoding": "gzip"} for gzipped bytes)
    drop()                         close the connection without an answer (a connection error for the client)
    drip(*texts, interval=0.05, headers=False)   a valid reply, its body sent one byte per `interval` seconds (its
                                   status line and headers too with headers=True): each read is quick, the whole slow
    a callable f(body) -> action | str | list[str]                decide from the request (e.g. by prompt)
When the queue is empty the server uses `responder` (constructor argument; same forms as a callable action);
the default, `auto`, answers every request with distinct texts "reply <k>" (k = request number), one per
requested sample when `support_n=True` (default) and a single choice otherwise, like llama.cpp.
`tls=(certfile, keyfile)`: serve https (base_url "https://127.0.0.1:<port>/v1"; the client must trust certfile, e.g.
SSL_CERT_FILE=certfile); `self_signed_cert(folder)` makes such a pair for 127.0.0.1.
`require_key="sk-..."`: requests without "Authorization: Bearer <that key>" get 401 (the queue is not used).
GET /v1/models lists `model_id`; GET /health answers {"status": "ok"}.
"""
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Action:
    def __init__(self, kind, **kw):
        self.kind, self.kw = kind, kw

    def __repr__(self):
        return f"{self.kind}({self.kw})"


def reply(*texts, usage=None, finish_reason="stop", model=None):
    return _Action("reply", texts=list(texts), usage=usage, finish_reason=finish_reason, model=model)


def status(code, message=None, headers=None, retry_after=None):
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return _Action("status", code=code, message=message or f"scripted HTTP {code}", headers=headers)


def delay(seconds, then=None):
    return _Action("delay", seconds=seconds, then=then)


def raw(body, code=200, content_type="application/json", headers=None):
    return _Action("raw", body=body.encode() if isinstance(body, str) else body, code=code,
                   content_type=content_type, headers=headers)


def drop():
    return _Action("drop")


def drip(*texts, interval=0.05, headers=False):
    return _Action("drip", texts=list(texts), interval=interval, headers=headers)


def kill_after(cmd, srv, n, cwd, timeout_s=120.0):
    """Start the process `cmd` (a labeling run asking `srv`, whose responder hangs after n answers) and kill -9 it
    while its (n+1)-th request waits; asserts the kill came then (the run's stderr tail in the message)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while srv.count <= n and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        err = proc.communicate()[1]
    assert srv.count == n + 1, err[-3000:]


def self_signed_cert(folder):
    """(certfile, keyfile): a self-signed certificate for 127.0.0.1 in `folder`, made with the `cryptography` package
    when installed, else the openssl command; None when neither is there."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            return None
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        return cert, key
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
           .not_valid_after(now + datetime.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
           .sign(pk, hashes.SHA256()))
    with open(cert, "wb") as f:
        f.write(crt.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    return cert, key


def _tokens(text):
    return max(1, (len(text) + 3) // 4)


KEY_ENV = "LLM_PYMARL_TEST_KEY"  # set to SECRET for every LLM-layer test (tests/llm/conftest.py)
SECRET = "sk-test-secret-4f9c2b7e0d1a"


def client_config(srv, tmp_path, **kw):
    """An `llm:` block for the real client talking to `srv`, caching under tmp_path/cache; `kw` overrides."""
    return {"backend": "openai", "base_url": srv.base_url, "model": "test-model", "api_key_env": KEY_ENV,
            "cache_dir": str(tmp_path / "cache"), "timeout_s": 5.0, "connect_timeout_s": 2.0, "max_retries": 3,
            "backoff_s": 0.02, "backoff_max_s": 0.2, "temperature": 0.5, "max_tokens": 32, **kw}


class LoopbackServer:
    def __init__(self, responder=None, support_n=True, require_key=None, model_id="loopback-model", tls=None):
        self.responder = responder or self.auto
        self.tls = tls
        self.support_n = support_n
        self.require_key = require_key
        self.model_id = model_id
        self.requests = []
        self.count = 0
        self._queue = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = None
        self._thread = None

    # --- scripting ---
    def push(self, *actions):
        with self._lock:
            self._queue.extend(actions)
        return self

    @property
    def pending(self):
        with self._lock:
            return len(self._queue)

    def auto(self, body):
        k = self.count
        n = int(body.get("n") or 1) if self.support_n else 1
        return reply(*[f"reply {k}" if n == 1 else f"reply {k}.{j}" for j in range(n)])

    # --- lifecycle ---
    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [
                        {"id": server.model_id, "object": "model", "created": 0, "owned_by": "loopback"}]})
                elif self.path.rstrip("/").endswith("/health"):
                    self._json(200, {"status": "ok"})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                try:
                    body = json.loads(data or b"{}")
                except ValueError:
                    return self._json(400, {"error": {"message": "request body is not JSON"}})
                with server._lock:
                    server.count += 1
                    server.requests.append({"path": self.path, "body": body,
                                            "headers": {k.lower(): v for k, v in self.headers.items()}})
                    action = server._queue.pop(0) if server._queue else None
                if server.require_key is not None and \
                        self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    if action is not None:
                        with server._lock:
                            server._queue.insert(0, action)
                    return self._error(401, "Incorrect API key provided", {})
                self._do(action if action is not None else server.responder, body)

            def _do(self, action, body):
                while callable(action) and not isinstance(action, _Action):
                    action = action(body)
                if isinstance(action, str):
                    action = reply(action)
                elif isinstance(action, list):
                    action = reply(*action)
                kind, kw = action.kind, action.kw
                if kind == "reply":
                    return self._reply(body, **kw)
                if kind == "status":
                    return self._error(kw["code"], kw["message"], kw["headers"])
                if kind == "delay":
                    server._stop.wait(kw["seconds"])
                    return self._do(kw["then"] if kw["then"] is not None else server.responder, body)
                if kind == "raw":
                    return self._send(kw["code"], kw["body"], kw["content_type"], kw["headers"])
                if kind == "drop":
                    self.close_connection = True
                    return None
                if kind == "drip":
                    return self._drip(body, **kw)
                raise ValueError(f"unknown action {action!r}")

            def _completion(self, body, texts, usage=None, finish_reason="stop", model=None):
                choices = [{"index": j, "message": {"role": "assistant", "content": t},
                            "finish_reason": finish_reason, "logprobs": None} for j, t in enumerate(texts)]
                out = {"id": f"chatcmpl-loopback-{server.count}", "object": "chat.completion",
                       "created": int(time.time()), "model": model or body.get("model") or server.model_id,
                       "choices": choices}
                if usage is None:
                    prompt = sum(_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
                    completion = sum(_tokens(t) for t in texts)
                    out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}
                elif usage:
                    out["usage"] = usage
                return out

            def _reply(self, body, texts, usage, finish_reason, model):
                self._json(200, self._completion(body, texts, usage, finish_reason, model))

            def _drip(self, body, texts, interval, headers):
                data = json.dumps(self._completion(body, texts)).encode()
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                        f"\r\n").encode()
                self.close_connection = True
                try:
                    if not headers:
                        self.wfile.write(head)
                        self.wfile.flush()
                    for byte in (head + data if headers else data):
                        if server._stop.wait(interval):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:  # the client gave up
                    return

            def _error(self, code, message, headers):
                self._json(code, {"error": {"message": message, "type": "scripted", "code": code}}, headers)

            def _json(self, code, obj, headers=None):
                self._send(code, json.dumps(obj).encode(), "application/json", headers)

            def _send(self, code, data, content_type, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.close_connection = True

        ctx = None
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):  # https: the handshake happens in the handler's thread (on its first read)
                sock, addr = super().get_request()
                if ctx is not None:
                    sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return sock, addr

            def handle_error(self, request, client_address):  # a client that gave up (a deadline, a cancel)
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
                    super().handle_error(request, client_address)

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.base_url = f"{'https' if ctx is not None else 'http'}://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
