//! Load generator for `scripts/bench-registry`: drives a running registry over keep-alive
//! HTTP/1.1 connections (one thread each) for a while and prints one JSON line of what it got.
//!
//!     registry-load claim  ADDR SECS CONNS   # PUT records, each for a fresh key and name
//!     registry-load get    ADDR SECS CONNS PATH   # GET PATH again and again (lookup, health…)
//!
//! Claims are signed before the clock starts, so only the server's work is timed. Every answer
//! is checked: a claim counts only on 200, a GET only on the status the first one got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warpgate::addr::Address;
use warpgate::identity::Identity;
use warpgate::names::{Name, Record};

/// Records signed up front per connection and second of the run: far above what one fsync
/// per claim allows on any disk.
const CLAIMS_PER_CONN_SEC: usize = 400;

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// One request on the kept-alive connection; its status (the body is read and dropped).
    fn send(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(std::io::Error::other)?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: registry-load claim|get ADDR SECS CONNS [PATH]";
    let [mode, addr, secs, conns, rest @ ..] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECS");
    let conns: usize = conns.parse().expect("CONNS");
    let (jobs, expect): (Arc<Vec<(String, String)>>, Option<u16>) = match (mode.as_str(), rest) {
        ("claim", []) => (
            Arc::new(claims(conns * secs as usize * CLAIMS_PER_CONN_SEC)),
            Some(200),
        ),
        ("get", [path]) => (Arc::new(vec![(path.clone(), String::new())]), None),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let method = if mode == "claim" { "PUT" } else { "GET" };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (jobs, next, addr) = (jobs.clone(), next.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr).expect("connect");
                let (mut ok, mut other) = (0u64, 0u64);
                let mut want = expect;
                while Instant::now() < deadline {
                    let (path, body) = if jobs.len() == 1 {
                        &jobs[0]
                    } else {
                        match jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                            Some(job) => job,
                            None => break,
                        }
                    };
                    let status = conn.send(method, path, body).expect("request");
                    let want = *want.get_or_insert(status);
                    if status == want {
                        ok += 1;
                    } else {
                        other += 1;
                    }
                }
                (ok, other, want)
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let ok: u64 = results.iter().map(|r| r.0).sum();
    let other: u64 = results.iter().map(|r| r.1).sum();
    let status = results.iter().find_map(|r| r.2).unwrap_or(0);
    let exhausted = jobs.len() > 1 && next.load(Ordering::Relaxed) >= jobs.len();
    println!(
        "{{\"mode\":\"{mode}\",\"status\":{status},\"ok\":{ok},\"other\":{other},\"secs\":{elapsed:.3},\"per_sec\":{:.0},\"exhausted\":{exhausted}}}",
        ok as f64 / elapsed
    );
}

/// `n` PUT requests, each claiming `bench-<i>` for a fresh key.
fn claims(n: usize) -> Vec<(String, String)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let run = now % 100_000;
    (0..n)
        .map(|i| {
            let owner = Identity::generate();
            let name = format!("bench-{run}-{i}");
            let record = Record {
                name: Name::parse(&name).expect("name"),
                key: owner.public_key(),
                address: Address::new(owner.public_key(), Vec::new()),
                seq: 1,
                issued_at: now,
                expires_at: now + 3600,
            };
            let bytes = record.sign(&owner).expect("sign");
            let body = format!(
                "{{\"record\":\"{}\"}}",
                data_encoding::BASE64URL_NOPAD.encode(&bytes)
            );
            (format!("/v1/names/{name}"), body)
        })
        .collect()
}
