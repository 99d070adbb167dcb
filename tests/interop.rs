//! Cross-checks `sudo_agent::totp` against two independent implementations: `oathtool`
//! (OATH Toolkit, C) and `pyotp` (Python). Random secrets of 16–40 bytes, times on both
//! sides of step edges, before and after 2038 and 2106, digits 6/7/8, steps 30 and 60 s.
//!
//! A missing tool skips its test loudly, unless `CI=true`, where it fails: CI must not
//! pass without having compared anything.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::Retrying;
use sudo_agent::totp::{self, Params};

/// Random secrets per run; each is checked at 6 times (two step edges, three times each).
const SECRETS: usize = 240;

/// One random secret with its code shape and the step indices `k` to probe around.
struct Case {
    secret: Vec<u8>,
    base32: String,
    digits: u32,
    step_s: u64,
    /// For each k: times k*step-1 (step k-1), k*step and k*step+step-1 (both step k).
    edges: Vec<u64>,
}

impl Case {
    fn params(&self) -> Params {
        Params {
            digits: self.digits,
            step_s: self.step_s,
            skew: 0,
        }
    }

    fn times(&self) -> impl Iterator<Item = u64> + '_ {
        self.edges.iter().flat_map(|&k| {
            let t = k * self.step_s;
            [t - 1, t, t + self.step_s - 1]
        })
    }

    fn describe(&self, unix: u64) -> String {
        format!(
            "secret {} ({} bytes), digits {}, step {} s, unix {unix}",
            self.base32,
            self.secret.len(),
            self.digits,
            self.step_s
        )
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("getrandom");
    u64::from_le_bytes(bytes)
}

/// A uniformly random number in `lo..=hi` (modulo bias is irrelevant for test data).
fn random_in(lo: u64, hi: u64) -> u64 {
    lo + random_u64() % (hi - lo + 1)
}

/// 2038-01-19 (i32 time_t overflow), 2106-02-07 (u32 overflow), 2200-01-01.
const Y2038: u64 = 1 << 31;
const Y2106: u64 = 1 << 32;
const Y2200: u64 = 7_258_118_400;

fn cases() -> Vec<Case> {
    let digits = [6, 7, 8];
    let steps = [30, 60];
    (0..SECRETS)
        .map(|i| {
            let len = random_in(16, 40) as usize;
            let mut secret = vec![0u8; len];
            getrandom::fill(&mut secret).expect("getrandom");
            let base32 = totp::base32_encode(&secret);
            assert_eq!(
                totp::base32_decode(&base32).as_ref(),
                Ok(&secret),
                "round trip"
            );
            let step_s = steps[i % steps.len()];
            // Fixed edges on the first cases (epoch, the two Unix-time overflows), then a
            // random step edge before 2038 and one between 2038 and 2200 per secret.
            let fixed = match i {
                0 => Some(1),
                1 => Some(Y2038 / step_s),
                2 => Some(Y2038 / step_s + 1),
                3 => Some(Y2106 / step_s),
                4 => Some(Y2106 / step_s + 1),
                _ => None,
            };
            let early = fixed.unwrap_or_else(|| random_in(1, Y2038 / step_s));
            let late = random_in(Y2038 / step_s + 1, Y2200 / step_s);
            Case {
                secret,
                base32,
                digits: digits[(i / steps.len()) % digits.len()],
                step_s,
                edges: vec![early, late],
            }
        })
        .collect()
}

/// Checks our code against the other tool's for one time, and that `verify` accepts the
/// other tool's code at exactly the expected step.
fn check(case: &Case, unix: u64, theirs: &str, tool: &str) {
    let params = case.params();
    let ours = totp::code_at(&case.secret, unix, &params);
    assert_eq!(ours, theirs, "{tool} disagrees: {}", case.describe(unix));
    assert_eq!(
        totp::verify(&case.secret, theirs, unix, &params),
        Some(unix / case.step_s),
        "verify refused {tool}'s code: {}",
        case.describe(unix)
    );
}

/// `Some(())` when the tool ran; otherwise fails under CI=true or skips loudly.
fn require(available: bool, tool: &str, install: &str) -> Option<()> {
    if available {
        return Some(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is not installed; install it with `{install}` (CI=true requires it)");
    }
    // Written to the real stderr, not through eprintln!, which the test harness
    // captures and hides for passing tests: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {tool} not installed; interop test not run. Install it with `{install}`."
    );
    None
}

#[test]
fn agrees_with_oathtool() {
    let found = Command::new("oathtool")
        .arg("--version")
        .stdout(Stdio::null())
        .status_retrying()
        .is_ok_and(|s| s.success());
    if require(found, "oathtool", "apt-get install oathtool").is_none() {
        return;
    }

    let cases = cases();
    let (mut compared, mut processes) = (0usize, 0usize);
    for case in &cases {
        for &k in &case.edges {
            // One process per edge: `-w 1` at k*step-1 prints the codes of steps k-1 and
            // k, which cover all three probe times.
            let first = k * case.step_s - 1;
            let out = Command::new("oathtool")
                .args(["--totp", "-b", "-w", "1"])
                .arg(format!("--digits={}", case.digits))
                .arg(format!("--time-step-size={}s", case.step_s))
                .arg(format!("--now=@{first}"))
                .arg(&case.base32)
                .output_retrying()
                .expect("run oathtool");
            processes += 1;
            assert!(
                out.status.success(),
                "oathtool failed ({}): {}",
                String::from_utf8_lossy(&out.stderr),
                case.describe(first)
            );
            let text = String::from_utf8(out.stdout).expect("oathtool prints ASCII");
            let codes: Vec<&str> = text.lines().collect();
            assert_eq!(codes.len(), 2, "oathtool output {text:?}");
            let t = k * case.step_s;
            for (unix, theirs) in [
                (t - 1, codes[0]),
                (t, codes[1]),
                (t + case.step_s - 1, codes[1]),
            ] {
                check(case, unix, theirs, "oathtool");
                compared += 1;
            }
        }
    }
    eprintln!(
        "oathtool: {compared} codes agreed ({} secrets, {processes} oathtool processes)",
        cases.len()
    );
    assert!(compared >= SECRETS * 6);
}

/// Reads "secret digits interval unix" lines, prints one code per line.
const PYOTP_SCRIPT: &str = "\
import sys, pyotp
for line in sys.stdin:
    s, d, i, t = line.split()
    print(pyotp.TOTP(s, digits=int(d), interval=int(i)).at(int(t)))
";

#[test]
fn agrees_with_pyotp() {
    let found = Command::new("python3")
        .args(["-c", "import pyotp"])
        .stderr(Stdio::null())
        .status_retrying()
        .is_ok_and(|s| s.success());
    if require(found, "pyotp (python3)", "pip install pyotp").is_none() {
        return;
    }

    let cases = cases();
    let mut input = String::new();
    for case in &cases {
        for unix in case.times() {
            input += &format!("{} {} {} {unix}\n", case.base32, case.digits, case.step_s);
        }
    }

    // One process for every line. The writer runs on its own thread so a full stdout
    // pipe can never deadlock against a full stdin pipe.
    let mut child = Command::new("python3")
        .args(["-c", PYOTP_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_retrying()
        .expect("start python3");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for python3");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python3");
    assert!(
        out.status.success(),
        "pyotp script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = String::from_utf8(out.stdout).expect("pyotp prints ASCII");
    let mut codes = text.lines();
    let mut compared = 0usize;
    for case in &cases {
        for unix in case.times() {
            let theirs = codes.next().expect("one pyotp line per input line");
            check(case, unix, theirs, "pyotp");
            compared += 1;
        }
    }
    assert_eq!(codes.next(), None, "pyotp printed extra lines");
    eprintln!(
        "pyotp: {compared} codes agreed ({} secrets, 1 python3 process)",
        cases.len()
    );
    assert!(compared >= SECRETS * 6);
}
