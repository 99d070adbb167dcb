//! Attack: a web page in the owner's browser. A page can POST to 127.0.0.1 without a
//! CORS preflight (a form, or `fetch` with `text/plain`), and through DNS rebinding (its
//! own name re-resolved to 127.0.0.1) read the answers. The requests below carry the
//! headers browsers send in each case (Fetch standard; as Chrome and Firefox send
//! them). None of them runs anything, spends or fails a code, or reads an answer; the
//! clients that must keep working (curl, Home Assistant's rest_command through aiohttp,
//! `sudo-agent run`, `sudo-agent mcp`) do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Agent, Retrying, python_has, read_answer, run_bin, url_decode};
use serde_json::{Value, json};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/120.0.0.0 Safari/537.36";

/// Sends one request with exactly these headers (plus Content-Length); the answer's
/// status, head and body.
fn send(
    agent: &Agent,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(request.as_bytes()).unwrap();
    let (status, head, body) = read_answer(&mut s, method == "HEAD").unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, head, body)
}

/// What a browser adds to a request a page makes, beyond Host and Origin.
fn page_headers<'a>(
    host: &'a str,
    origin: Option<&'a str>,
    site: &'a str,
    mode: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("Host", host),
        ("Connection", "keep-alive"),
        ("User-Agent", CHROME),
        ("Accept", "*/*"),
        ("Content-Type", "text/plain;charset=UTF-8"),
        ("Sec-Fetch-Site", site),
        ("Sec-Fetch-Mode", mode),
        ("Sec-Fetch-Dest", "empty"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Accept-Language", "en-US,en;q=0.9"),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    headers
}

/// The CORS preflight a browser sends before a page's JSON POST.
fn preflight<'a>(host: &'a str, origin: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("Host", host),
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ]
}

fn assert_refused(answer: &(u16, String, Value), header: &str) {
    let (status, _, body) = answer;
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(header), "{header}: {message}");
}

#[test]
fn web_pages_cannot_run_lock_out_or_read() {
    let dir = crate::common::TempDir::new("browser");
    let marker = dir.path().join("marker");
    let cfg = crate::common::base_config(
        dir.path(),
        json!({"rules": [
            {"name": "touch", "argv": ["/usr/bin/touch", marker], "no_pin": true},
            {"name": "uptime", "argv": ["/usr/bin/uptime"], "no_pin": true},
            {"name": "echo", "argv": ["/bin/echo", "**"]}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    let port = agent.addr.port();
    let local = format!("127.0.0.1:{port}");
    let rebound = format!("rebind.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    let uptime = agent.post_json("/run", &json!({"command": "uptime"}));
    let id = uptime.json()["id"].as_str().unwrap().to_string();
    let touch = json!({"command": format!("touch {}", marker.display())}).to_string();

    // A form or no-cors fetch from any site: the no_pin rule must not run.
    let evil = "https://evil.example";
    assert_refused(
        &send(
            &agent,
            "POST",
            "/run",
            &page_headers(&local, Some(evil), "cross-site", "no-cors"),
            &touch,
        ),
        "Origin",
    );
    let form = [
        ("Host", local.as_str()),
        ("Origin", "null"),
        ("Content-Type", "text/plain"),
        ("User-Agent", CHROME),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "iframe"),
    ];
    assert_refused(&send(&agent, "POST", "/", &form, &touch), "Origin");
    // A local dev server's page (same site, another port).
    let dev = page_headers(&local, Some("http://127.0.0.1:8080"), "same-site", "cors");
    assert_refused(&send(&agent, "POST", "/run", &dev, &touch), "Origin");
    // Six wrong codes from a page: none is counted, so no lockout begins.
    for _ in 0..6 {
        let guess = json!({"pin": "000000", "command": "echo hi"}).to_string();
        let page = page_headers(&local, Some(evil), "cross-site", "no-cors");
        assert_refused(&send(&agent, "POST", "/run", &page, &guess), "Origin");
    }
    // An image tag or a no-cors GET: no Origin, but Sec-Fetch-Site tells.
    let img = [
        ("Host", local.as_str()),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Dest", "image"),
    ];
    assert_refused(
        &send(&agent, "GET", &format!("/job/{id}"), &img, ""),
        "Sec-Fetch-Site",
    );
    // DNS rebinding: the page's own origin, so no Origin on a GET and "same-origin";
    // only Host shows the page's name.
    let read = page_headers(&rebound, None, "same-origin", "cors");
    assert_refused(
        &send(&agent, "GET", &format!("/job/{id}"), &read, ""),
        "Host",
    );
    assert_eq!(send(&agent, "HEAD", "/health", &read, "").0, 403);
    let run = page_headers(&rebound, Some(&rebound_origin), "same-origin", "cors");
    assert_refused(&send(&agent, "POST", "/run", &run, &touch), "Origin");
    // Older browsers send no Sec-Fetch-*: Host still tells.
    let old = [
        ("Host", rebound.as_str()),
        (
            "User-Agent",
            "Mozilla/5.0 (Windows NT 6.1; rv:60.0) Gecko/20100101 Firefox/60.0",
        ),
    ];
    assert_refused(
        &send(&agent, "GET", &format!("/job/{id}"), &old, ""),
        "Host",
    );
    // Two Host headers: which one counts depends on who reads them, so none does.
    let twice = [("Host", local.as_str()), ("Host", rebound.as_str())];
    assert_refused(&send(&agent, "GET", "/health", &twice, ""), "Host");
    // A preflight for a JSON POST from a page nobody listed.
    let (status, head, _) = send(&agent, "OPTIONS", "/run", &preflight(&local, evil), "");
    assert_eq!(status, 403);
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");

    assert!(!marker.exists(), "a web page ran the touch rule");
    let log = agent.log();
    assert!(!log.contains("INVALID PIN"), "{log}");
    assert_eq!(
        log.matches("QUEUED [").count(),
        1,
        "only the uptime job: {log}"
    );
    assert!(
        log.contains("FORBIDDEN browser request from 127.0.0.1"),
        "{log}"
    );
    assert!(log.contains(r#"Origin "https://evil.example""#), "{log}");
    let health = agent.get("/health").json();
    assert_eq!(health["locked_for_s"], 0, "{health}");
    // The owner's real code was neither spent nor locked out by the page.
    let r = agent.post_json("/run", &json!({"pin": agent.code(), "command": "echo hi"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stdout"], "hi\n");
}

#[test]
fn listed_hosts_and_origins_are_served_and_told_so() {
    let agent = Agent::start(
        "browser-allowed",
        json!({"allowed_hosts": ["nas.lan"], "allowed_origins": ["https://ha.example:8123"]}),
    );
    let port = agent.addr.port();
    let nas = format!("nas.lan:{port}");
    let (status, _, _) = send(&agent, "GET", "/health", &[("Host", nas.as_str())], "");
    assert_eq!(status, 200);
    let local = format!("localhost:{port}");
    let ha = "https://ha.example:8123";
    let page = page_headers(&local, Some(ha), "cross-site", "cors");
    let (status, head, body) = send(&agent, "POST", "/run", &page, r#"{"command": "uptime"}"#);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("succeeded")),
        "{body}"
    );
    assert!(
        head.contains("Access-Control-Allow-Origin: https://ha.example:8123\r\n"),
        "{head}"
    );
    assert!(head.contains("Vary: Origin\r\n"), "{head}");
    // The preflight a JSON POST needs.
    let (status, head, _) = send(&agent, "OPTIONS", "/run", &preflight(&local, ha), "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Access-Control-Allow-Methods: GET, POST\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Headers: Content-Type\r\n"),
        "{head}"
    );
    // Another port is another origin; another name is not listed.
    let other = page_headers(
        &local,
        Some("https://ha.example:8124"),
        "cross-site",
        "cors",
    );
    assert_refused(
        &send(&agent, "POST", "/run", &other, r#"{"command": "uptime"}"#),
        "Origin",
    );
    let unlisted = format!("nas2.lan:{port}");
    assert_refused(
        &send(&agent, "GET", "/health", &[("Host", unlisted.as_str())], ""),
        "Host",
    );
}

/// Whether `/usr/bin/curl` is there: a loud skip without it, a failure under CI.
fn have_curl() -> bool {
    let ok = Path::new("/usr/bin/curl").exists();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl missing under CI=true; apt-get install curl"
        );
        eprintln!("SKIPPED: /usr/bin/curl is missing; apt-get install curl");
    }
    ok
}

#[test]
fn curl_home_assistant_run_and_mcp_keep_working() {
    let agent = Agent::start("browser-clients", json!({"totp": {"step_s": 1}}));
    let port = agent.addr.port();
    for host in ["127.0.0.1", "localhost"] {
        if !have_curl() {
            break;
        }
        let url = format!("http://{host}:{port}/run");
        let out = Command::new("/usr/bin/curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                &url,
                "-d",
                r#"{"command": "uptime"}"#,
            ])
            .output_retrying()
            .unwrap();
        let job: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(job["status"], "succeeded", "curl {url}: {job} {out:?}");
    }

    // Home Assistant's rest_command posts with aiohttp through HA's client session:
    // its User-Agent, the configured content_type, the rendered payload.
    if python_has("aiohttp", "pip install aiohttp") {
        // The payload (with a fresh code) is handed over once aiohttp is imported, so a
        // slow start cannot outlast the code.
        let script = r#"
import asyncio, sys, aiohttp
async def main():
    headers = {"User-Agent": "HomeAssistant/2025.1.0 aiohttp/" + aiohttp.__version__ + " Python/3.11",
               "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        print("ready", flush=True)
        payload = sys.stdin.readline().strip()
        async with session.post(sys.argv[1], data=payload.encode(), timeout=aiohttp.ClientTimeout(total=30)) as r:
            print(r.status)
            print(await r.text())
asyncio.run(main())
"#;
        let mut python = Command::new("python3")
            .args(["-c", script, &format!("http://127.0.0.1:{port}/run")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_retrying()
            .unwrap();
        let mut stdout = BufReader::new(python.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let payload =
            json!({"pin": agent.fresh_code(), "command": "echo from home assistant", "wait": 25});
        let mut stdin = python.stdin.take().unwrap();
        writeln!(stdin, "{payload}").unwrap();
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        assert!(python.wait().unwrap().success());
        let (status, body) = text.split_once('\n').unwrap_or(("", ""));
        assert_eq!(status, "200", "{text}");
        let job: Value = serde_json::from_str(body).unwrap();
        assert_eq!(job["stdout"], "from home assistant\n", "{job}");
    }

    // `sudo-agent run`, by name and by address.
    let code = agent.fresh_code();
    let out = run_bin(
        &[
            "run",
            "--url",
            &format!("http://localhost:{port}"),
            "--pin",
            &code,
            "--",
            "echo",
            "from",
            "run",
        ],
        "",
        &[],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from run\n"),
        "{}",
        out.stderr
    );

    // `sudo-agent mcp`, as an assistant's MCP client drives it.
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_command", "arguments": {"command": "uptime"}}}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = run_bin(
        &["mcp", "--url", &format!("http://127.0.0.1:{port}")],
        &input,
        &[],
    );
    let answer: Value = serde_json::from_str(out.stdout.lines().nth(1).unwrap_or("null")).unwrap();
    assert_eq!(
        answer["result"]["isError"], false,
        "{answer} {}",
        out.stderr
    );
    let job: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");

    assert!(!agent.log().contains("FORBIDDEN"), "{}", agent.log());
}

/// A page server for the real-browser test: answers every request on `listener` with
/// `page` (or an empty 200 for `/ready`), until `/ready` has been asked; returns then.
fn serve_page_until_ready(listener: std::net::TcpListener, page: &str) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let ready = head.starts_with(b"GET /ready ");
        let body = if ready { "" } else { page };
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: no-store\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if ready {
            return;
        }
    }
}

/// Kills a process group (the browser and its helpers) when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status_retrying();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_browser_page_rebinding_to_the_agent_is_refused() {
    use std::os::unix::process::CommandExt;
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium missing under CI=true; apt-get install chromium"
        );
        eprintln!("SKIPPED: /usr/bin/chromium is missing; apt-get install chromium");
        return;
    }
    // The attacker's page is first served from rebind.example:P; then P is handed to
    // the agent, as a rebound DNS name would hand the page's origin to 127.0.0.1.
    let page_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = page_server.local_addr().unwrap().port();
    let report_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let report_port = report_server.local_addr().unwrap().port();
    let dir = crate::common::TempDir::new("chromium");
    let marker = dir.path().join("marker");
    let page = format!(
        r#"<!doctype html><script>
const touch = JSON.stringify({{command: "touch {marker}"}});
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function status(url, init) {{
  try {{ return String((await fetch(url, init)).status); }} catch (e) {{ return "error"; }}
}}
(async () => {{
  await fetch("/ready");
  const out = {{}};
  for (let i = 0; i < 150; i++) {{
    out.health = await status("/health", {{cache: "no-store"}});
    if (out.health === "403" || out.health === "200") break;
    await sleep(200);
  }}
  out.job = await status("/job/0123456789abcdef0123456789abcdef");
  out.run = await status("/run", {{method: "POST", body: touch}});
  out.cross = await status("http://127.0.0.1:{port}/run", {{method: "POST", mode: "no-cors", body: touch}});
  for (let i = 0; i < 6; i++) {{
    await status("http://127.0.0.1:{port}/run", {{method: "POST", mode: "no-cors",
      body: JSON.stringify({{pin: "000000", command: "echo hi"}})}});
  }}
  location = "http://127.0.0.1:{report_port}/report?" + encodeURIComponent(JSON.stringify(out));
}})();
</script>"#,
        marker = marker.display()
    );
    let profile = dir.path().join("profile");
    let browser = Group(
        Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--host-resolver-rules=MAP rebind.example 127.0.0.1",
                &format!("--user-data-dir={}", profile.display()),
                &format!("http://rebind.example:{port}/"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn_retrying()
            .unwrap(),
    );
    serve_page_until_ready(page_server, &page);
    let cfg = crate::common::base_config(
        dir.path(),
        json!({"listen": format!("127.0.0.1:{port}"), "rules": [
            {"name": "touch", "argv": ["/usr/bin/touch", marker], "no_pin": true},
            {"name": "echo", "argv": ["/bin/echo", "**"]}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    report_server.set_nonblocking(false).unwrap();
    let (mut conn, _) = report_server.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&mut conn).read_line(&mut line).unwrap();
    drop(browser);
    let query = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_start_matches("/report?");
    let decoded = url_decode(query);
    let seen: Value = serde_json::from_str(&decoded).unwrap_or_else(|e| panic!("{e}: {line}"));
    println!("the page saw: {seen}");
    // Same-origin to the page, so it could read the answers: every one a refusal.
    assert_eq!(
        seen,
        json!({"health": "403", "job": "403", "run": "403", "cross": "0"})
    );
    assert!(!marker.exists(), "the page ran the touch rule");
    let log = agent.log();
    assert!(
        log.contains(&format!(r#"Host "rebind.example:{port}""#)),
        "{log}"
    );
    assert!(
        log.contains(&format!(r#"Origin "http://rebind.example:{port}""#)),
        "{log}"
    );
    assert!(
        !log.contains("INVALID PIN") && !log.contains("QUEUED ["),
        "{log}"
    );
    assert_eq!(agent.get("/health").json()["locked_for_s"], 0);
}
