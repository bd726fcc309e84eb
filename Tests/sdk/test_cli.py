"""The portcullis executable itself: config validation, refusing bad configs, graceful shutdown."""
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ["PORTCULLIS_BIN"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(text):
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


BAD = """server: { port: 4000 }
models:
  - name: gpt
    deployments:
      - { provider: opnai, model: gpt-4o, api_key: "${PORTCULLIS_TEST_UNSET_KEY}" }
    fallbacks: [claude]
"""


def test_config_check_names_every_error_with_its_line():
    path = write_config(BAD)
    result = subprocess.run([BIN, "config", "check", path], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "line 5, column 21: models[0].deployments[0].provider: unknown provider 'opnai'" in result.stdout
    assert "did you mean 'openai'" in result.stdout
    assert "PORTCULLIS_TEST_UNSET_KEY is not set" in result.stdout
    assert "line 6" in result.stdout and "unknown model 'claude'" in result.stdout


def test_serve_refuses_an_invalid_config():
    path = write_config(BAD)
    result = subprocess.run([BIN, "serve", "--config", path], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr


def wait_for(port):
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


def test_sigterm_lets_an_open_stream_finish_and_refuses_new_connections():
    port = free_port()
    path = write_config("models:\n  - name: slow\n    deployments: [{ provider: demo, tokens_per_second: 10 }]\n")
    gateway = subprocess.Popen([BIN, "serve", "--config", path, "--port", str(port), "--log-level", "warning"])
    try:
        wait_for(port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=b'{"model":"slow","stream":true,"messages":[{"role":"user","content":"a b c d e f"}]}',
            headers={"content-type": "application/json"})
        response = urllib.request.urlopen(request, timeout=30)
        first = response.readline()
        assert first.startswith(b"data: ")
        gateway.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            refused = False
        except OSError:
            refused = True
        assert refused, "new connections are refused while draining"
        rest = response.read()
        assert rest.rstrip().endswith(b"data: [DONE]"), "the in-flight stream completed"
        assert gateway.wait(timeout=30) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()


def test_keys_cli_creates_lists_rotates_and_revokes_against_a_running_gateway():
    base = os.environ["PORTCULLIS_SDK_BASE"]
    master = os.environ["PORTCULLIS_SDK_KEY"]
    common = ["--url", base, "--key", master]

    def keys(*args):
        result = subprocess.run([BIN, "keys", *args, *common], capture_output=True, text=True, timeout=30)
        return result

    def chat(key):
        request = urllib.request.Request(
            base + "/v1/chat/completions",
            data=b'{"model":"demo","messages":[{"role":"user","content":"hi"}]}',
            headers={"authorization": "Bearer " + key, "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    import json
    created = keys("create", "--name", "cli-test", "--user", "cli-user", "--rpm", "100")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["key"].startswith("pck_") and record["user_id"] == "cli-user" and record["rpm"] == 100
    assert chat(record["key"]) == 200

    listed = keys("list", "--user", "cli-user")
    assert listed.returncode == 0
    assert record["key_id"] in [json.loads(line)["key_id"] for line in listed.stdout.splitlines()]

    rotated = json.loads(keys("rotate", record["key_id"], "--grace", "0").stdout)
    assert chat(rotated["key"]) == 200
    assert chat(record["key"]) == 401

    assert keys("revoke", record["key_id"]).returncode == 0
    assert chat(rotated["key"]) == 401

    refused = subprocess.run([BIN, "keys", "list", "--url", base, "--key", "wrong"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "not valid" in refused.stderr


def test_audit_verify_passes_an_intact_log_and_names_a_modified_record():
    import json
    import sqlite3
    folder = tempfile.mkdtemp()
    database = os.path.join(folder, "gateway.db")
    port = free_port()
    path = write_config(f"""auth: {{ master_key: audit-master }}
storage: {{ database: "sqlite:{database}" }}
models:
  - name: demo
    deployments: [{{ provider: demo }}]
""")
    gateway = subprocess.Popen([BIN, "serve", "--config", path, "--port", str(port), "--log-level", "warning"])
    try:
        wait_for(port)
        for name in ["first", "second"]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/admin/keys", data=json.dumps({"name": name}).encode(),
                headers={"authorization": "Bearer audit-master", "content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()

    intact = subprocess.run([BIN, "audit", "verify", "--config", path], capture_output=True, text=True, timeout=30)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    # The start, each admin call's two records (the action, the request's outcome), the stop.
    assert "intact: 6 records in 1 chain(s); 1 signed checkpoint(s) hold" in intact.stdout, intact.stdout

    # The checkpoint written at shutdown is beside the database, signed by the key printed here.
    public_key = subprocess.run([BIN, "audit", "public-key", "--config", path], capture_output=True, text=True, timeout=30)
    assert public_key.returncode == 0 and public_key.stdout.startswith("portcullis.audit+"), public_key.stdout + public_key.stderr
    assert oct(os.stat(database + ".audit-key").st_mode & 0o777) == "0o600"
    chains = os.listdir(database + ".checkpoints")
    assert len(chains) == 1
    with open(os.path.join(database + ".checkpoints", chains[0], "latest")) as note:
        lines = note.read().split("\n")
    assert lines[0].startswith("portcullis.audit/") and lines[1] == "6" and lines[3] == "" and lines[4].startswith("\u2014 portcullis.audit ")

    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT category, action FROM audit_logs ORDER BY seq").fetchall()
        assert rows == [("lifecycle", "gateway.start")] + [("admin", "key.create"), ("request", "request.complete")] * 2 \
            + [("lifecycle", "gateway.stop")], rows
        last = connection.execute("SELECT * FROM audit_logs WHERE seq = 6").fetchone()
        assert connection.execute("DELETE FROM audit_logs WHERE seq = 6").rowcount == 1
    truncated = subprocess.run([BIN, "audit", "verify", "--config", path], capture_output=True, text=True, timeout=30)
    assert truncated.returncode == 1 and "truncated" in truncated.stdout and "record 6" in truncated.stdout, truncated.stdout

    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO audit_logs VALUES (" + ", ".join("?" * len(last)) + ")", last)
        changed = connection.execute("UPDATE audit_logs SET record = replace(record, '\"key.create\"', '\"key.revoke\"') WHERE seq = 2")
        assert changed.rowcount == 1
    damaged = subprocess.run([BIN, "audit", "verify", "--config", path], capture_output=True, text=True, timeout=30)
    assert damaged.returncode == 1
    assert "record 2" in damaged.stdout and "modified" in damaged.stdout, damaged.stdout


def test_ip_block_refuses_an_address_for_the_time_asked():
    import json
    port = free_port()
    database = os.path.join(tempfile.mkdtemp(), "gateway.db")
    path = write_config(f"""auth: {{ master_key: ip-master }}
storage: {{ database: "sqlite:{database}" }}
models:
  - name: demo
    deployments: [{{ provider: demo }}]
""")
    gateway = subprocess.Popen([BIN, "serve", "--config", path, "--port", str(port), "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"

    def models():
        request = urllib.request.Request(base + "/v1/models", headers={"authorization": "Bearer ip-master"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())["error"]["code"]

    try:
        wait_for(port)
        assert models() == (200, None)
        blocked = subprocess.run([BIN, "ip", "block", "127.0.0.1", "--for", "2s", "--note", "incident 42", "--url", base, "--key", "ip-master"],
                                 capture_output=True, text=True, timeout=30)
        assert blocked.returncode == 0, blocked.stderr
        rule = json.loads(blocked.stdout)
        assert rule["cidr"] == "127.0.0.1" and rule["action"] == "deny"
        assert models() == (403, "ip_not_allowed")
        deadline = time.time() + 6
        while models()[0] != 200 and time.time() < deadline:
            time.sleep(0.2)
        assert models() == (200, None), "the block lapses when its time is up"
        bad = subprocess.run([BIN, "ip", "block", "127.0.0.1", "--for", "soon", "--url", base, "--key", "ip-master"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0 and "--for" in bad.stderr
    finally:
        gateway.kill()
        gateway.wait(timeout=30)
