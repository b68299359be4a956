"""`make demo`: Envoy with the Web Bot Auth filter in front of a demo app, an AI agent that signs
its requests with the `wba` tool, and the agent's key directory served by `wba serve`.

Everything it starts, it stops. Needs WBA_BIN (the wba binary), WBA_ENVOY, and the filter:
WBA_WASM, or with WBA_FRONT=native (`make demo FRONT=native`) the Envoy dynamic module at
WBA_NATIVE (the Makefile sets them).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from harness import EchoUpstream, Envoy, Front, bootstrap, request, wait_for  # noqa: E402

WBA = os.environ.get("WBA_BIN") or str(ROOT / "target" / "release" / "wba")
AGENT = "https://agent.demo"
PREFIX = "x-web-bot-auth-"

BOLD, DIM, GREEN, RED, YELLOW, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = YELLOW = RESET = ""


def say(text=""):
    print(textwrap.fill(text, 96, initial_indent="   ", subsequent_indent="   ") if text else "")


def wba(*args):
    p = subprocess.run([WBA, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"wba {' '.join(args)} failed:\n{p.stderr}")
    return p.stdout


def signed_headers(key, url, *extra):
    """The agent side: `wba sign` prints the three signature headers."""
    out = wba("sign", "--key", str(key), "--agent", AGENT, "--method", "GET", "--url", url, *extra)
    headers = {}
    for line in out.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = value
    return headers


def show(n, title, explain, response):
    print(f"\n{BOLD}{n}. {title}{RESET}")
    say(explain)
    color = GREEN if response.status == 200 else (YELLOW if response.status == 429 else RED)
    print(f"   {color}-> HTTP {response.status}{RESET}", end="")
    if response.status == 200:
        seen = response.seen()
        ours = seen.with_prefix(PREFIX)
        print(" - the app received the request and these headers from the filter:")
        for name, value in ours:
            print(f"        {name}: {value}")
    else:
        body = json.loads(response.body)
        print(f" - the filter answered for the app: {body['title']} ({body['reason']})")
        print(f"        {DIM}{body['detail']}{RESET}")
        accept = response.header("accept-signature")
        if accept:
            print(f"        {DIM}Accept-Signature: {accept}{RESET}")


def main():
    front_name = os.environ.get("WBA_FRONT") or "wasm"
    if front_name not in bootstrap.FRONTS:
        sys.exit(f"WBA_FRONT={front_name}: one of {', '.join(bootstrap.FRONTS)}")
    front = Front(front_name)
    for tool, path in (("wba", WBA), ("envoy", os.environ.get("WBA_ENVOY", "")), (f"{front} filter", front.artifact)):
        if path and not Path(path).exists():
            sys.exit(f"{tool} not found at {path}: run `make demo{'' if front.name == 'wasm' else ' FRONT=native'}`")
    with tempfile.TemporaryDirectory(prefix="wba-demo-") as tmp:
        tmp = Path(tmp)
        print(f"{BOLD}Web Bot Auth for Envoy: a demo{RESET}")
        say(
            "An AI agent signs each HTTP request with its private key (RFC 9421 HTTP Message "
            "Signatures) and says in a Signature-Agent header where its public keys are "
            "published. Envoy, with this filter, checks the signature before the request reaches "
            "the app, and tells the app who sent it in x-web-bot-auth-* headers the app can trust."
        )
        # The agent: a key pair, and a key directory publishing the public key.
        wba("generate", "--out", str(tmp / "agent"))
        key = tmp / "agent.jwk"
        thumb = wba("thumbprint", str(key)).strip()
        serve = subprocess.Popen(
            [WBA, "serve", "--key", str(key), "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        envoy = None
        try:
            line = serve.stdout.readline()
            dir_port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
            print(f"\n{DIM}   agent key {thumb}, published by `wba serve` on 127.0.0.1:{dir_port}")
            with EchoUpstream() as app:
                plugin = {
                    "mode": "enforce",
                    "agents": [{"name": "demo-agent", "url": AGENT, "cluster": "demo_agent_directory"}],
                }
                config = bootstrap.bootstrap(
                    [
                        bootstrap.listener(
                            "demo",
                            "app",
                            front.filters(plugin),
                            access_log_path=str(tmp / "access.log"),
                        )
                    ],
                    [bootstrap.cluster("app", app.port), bootstrap.cluster("demo_agent_directory", dir_port)],
                )
                envoy = Envoy(config, concurrency=2, workdir=str(tmp), front=front)
                envoy.start()
                port = envoy.ports["demo"]
                base = f"http://127.0.0.1:{port}"
                kind = "Wasm module" if front.name == "wasm" else "native dynamic module"
                print(f"   Envoy on 127.0.0.1:{port} (2 workers), the filter as {kind} {front.artifact}")
                print(f"   demo app on 127.0.0.1:{app.port}{RESET}")
                wait_for(
                    lambda: envoy.counter("directory.fetch_ok") >= 1,
                    what="the filter to fetch the agent's key directory",
                )
                say()
                say(
                    f"Envoy fetched the agent's key directory from {AGENT}/.well-known/"
                    "http-message-signatures-directory (here: the `wba serve` above) and checked "
                    "the directory's own signature over it."
                )

                show(1, "An ordinary request, no signature",
                     "A browser or any client. The filter lets it through and tells the app it was unsigned.",
                     request(port, path="/articles/42"))
                show(2, "A client pretending to be verified",
                     "It sends x-web-bot-auth-result: verified and x-web-bot-auth-agent itself. The "
                     "filter removes every such header first, so the app only ever sees the filter's own.",
                     request(port, path="/articles/42", headers=[
                         ("X-Web-Bot-Auth-Result", "verified"),
                         ("x-web-bot-auth-agent", "https://trusted-bank.example"),
                         ("X-WEB-BOT-AUTH-AGENT-NAME", "definitely-not-a-bot"),
                     ]))
                good = signed_headers(key, f"{base}/articles/42")
                show(3, "The agent signs its request (`wba sign`)",
                     "The signature covers the host, method, path and the Signature-Agent header. "
                     "The filter verifies it with the key from the directory and names the agent.",
                     request(port, path="/articles/42", headers=good))
                show(4, "Someone replays that exact signed request",
                     "A captured signature is only good once: the filter remembers it until it expires.",
                     request(port, path="/articles/42", headers=good))
                tampered = signed_headers(key, f"{base}/articles/42")
                show(5, "A signed request whose path was changed on the way",
                     "Signed for /articles/42, sent to /admin/delete. The signature no longer "
                     "matches, so the filter rejects it before it reaches the app.",
                     request(port, path="/admin/delete", headers=tampered))
                now = int(time.time())
                old = signed_headers(key, f"{base}/articles/42", "--created", str(now - 900), "--expires", str(now - 600))
                show(6, "A signature that expired ten minutes ago", "Signatures are short-lived.",
                     request(port, path="/articles/42", headers=old))
                wba("generate", "--out", str(tmp / "stranger"))
                strange = subprocess.run(
                    [WBA, "sign", "--key", str(tmp / "stranger.jwk"), "--agent", "https://stranger.example",
                     "--method", "GET", "--url", f"{base}/articles/42"],
                    capture_output=True, text=True, check=True,
                ).stdout
                sh = dict(l.split(": ", 1) for l in strange.splitlines() if ": " in l)
                show(7, "A correctly signed request from an agent nobody configured",
                     "The filter cannot vouch for it: in enforce mode it passes, marked unverified, "
                     "and the app decides (mode require would reject it).",
                     request(port, path="/articles/42", headers=sh))

                print(f"\n{BOLD}What Envoy counted{RESET} {DIM}(admin /stats, {front.counters}*){RESET}")
                for name, value in sorted(envoy.counters().items()):
                    if value:
                        print(f"   {name}: {value}")
                print(f"\n{BOLD}Envoy's access log{RESET} {DIM}(the verdict is in filter state){RESET}")
                log = tmp / "access.log"
                wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 7, what="access log")
                for line in log.read_text().splitlines():
                    print(f"   {line}")
                print(f"\n{BOLD}Done.{RESET} Envoy, the app and the key directory are stopped. "
                      "See README.md to add the filter to your own Envoy.")
        finally:
            if envoy:
                envoy.stop()
            serve.terminate()
            serve.wait(10)


if __name__ == "__main__":
    main()
