//! Closed-loop load generator for oxloop's benchmark suite.
//!
//! Every connection sends one request, waits for the whole reply, records the latency and
//! sends the next, until `--duration` seconds have passed. One tokio current-thread runtime:
//! the generator uses one core, the one it is pinned to by the driver. The result is one
//! JSON object on stdout (count, requests/s, latency percentiles and histogram).

use oxloop_bench_tools::{die, latency_json, Args};
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const USAGE: &str = "\
usage: loadgen MODE --addr HOST:PORT [options]
modes:
  tcp    echo requests of --size bytes on --conns connections for --duration seconds
  http   keep-alive GET --path on --conns connections (responses framed by Content-Length)
  udp    echo datagrams of --size bytes from --conns sockets (lost datagrams are counted)
  hold   open --conns idle TCP connections, print {\"connected\":N}, keep them until stdin closes
  tls    like tcp, over TLS (rustls): the server certificate is verified against --ca
  https  like http, over TLS
options: --conns N (10)  --size BYTES (1024)  --duration SECS (1.0)  --path /  --timeout-ms 1000
         --ca PEM (default: $LOADGEN_TLS_CA)  --sni NAME (localhost)";

struct ConnResult {
    requests: u64,
    bytes: u64,
    errors: u64,
    lost: u64,
    latencies: Vec<u64>,
}

impl ConnResult {
    fn new() -> Self {
        ConnResult {
            requests: 0,
            bytes: 0,
            errors: 0,
            lost: 0,
            latencies: Vec::with_capacity(1 << 14),
        }
    }
}

/// Close with RST instead of FIN: the client side then leaves no TIME_WAIT entries behind.
/// Thousands of TIME_WAIT sockets to one address make the kernel's ephemeral port search,
/// and so every later connect(), slow (seen here: 1 ms per connect after a memory run).
fn abortive_close<S: AsRawFd>(s: &S) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open (owned by `s`) and `lg` outlives the call; the size matches.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn payload(size: usize, conn: usize) -> Vec<u8> {
    // Deterministic, non-constant bytes so a server that mangles data is caught by the check.
    (0..size)
        .map(|i| ((i * 31 + conn * 7) % 251) as u8)
        .collect()
}

async fn tcp_conn(
    addr: SocketAddr,
    size: usize,
    conn: usize,
    start: Instant,
    deadline: Instant,
) -> ConnResult {
    let mut r = ConnResult::new();
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            r.errors += 1;
            return r;
        }
    };
    let _ = s.set_nodelay(true);
    let msg = payload(size, conn);
    let mut buf = vec![0u8; size];
    let now = Instant::now();
    if now < start {
        tokio::time::sleep(start - now).await;
    }
    let mut first = true;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        let res = if size <= 16 * 1024 {
            match s.write_all(&msg).await {
                Ok(()) => s.read_exact(&mut buf).await.map(|_| ()),
                Err(e) => Err(e),
            }
        } else {
            // Large messages: read while writing, so neither side can stall on full buffers.
            let (mut rd, mut wr) = s.split();
            let (w, rr) = tokio::join!(wr.write_all(&msg), rd.read_exact(&mut buf));
            w.and(rr.map(|_| ()))
        };
        if let Err(e) = res {
            eprintln!("tcp conn {conn}: {e}");
            r.errors += 1;
            break;
        }
        let t1 = Instant::now();
        if first {
            first = false;
            if buf != msg {
                eprintln!("tcp conn {conn}: echoed bytes differ");
                r.errors += 1;
                break;
            }
        }
        if t1 > deadline {
            break;
        }
        r.requests += 1;
        r.bytes += size as u64;
        r.latencies.push((t1 - t0).as_nanos() as u64);
    }
    abortive_close(&s);
    r
}

fn find_header_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    for line in text.split("\r\n") {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                return v.trim().parse().ok();
            }
        }
    }
    None
}

async fn http_conn(
    addr: SocketAddr,
    path: String,
    conn: usize,
    start: Instant,
    deadline: Instant,
) -> ConnResult {
    let mut r = ConnResult::new();
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            r.errors += 1;
            return r;
        }
    };
    let _ = s.set_nodelay(true);
    http_loop(&mut s, &path, conn, start, deadline, &mut r).await;
    abortive_close(&s);
    r
}

/// The keep-alive request loop of `http` and `https` over any byte stream.
async fn http_loop<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    conn: usize,
    start: Instant,
    deadline: Instant,
    r: &mut ConnResult,
) {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: oxloop-loadgen\r\n\r\n")
            .into_bytes();
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let now = Instant::now();
    if now < start {
        tokio::time::sleep(start - now).await;
    }
    'outer: loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        if let Err(e) = write_flush(s, &req).await {
            eprintln!("http conn {conn}: {e}");
            r.errors += 1;
            break;
        }
        let total = loop {
            if let Some(h) = find_header_end(&buf[..filled]) {
                if !buf[..filled].starts_with(b"HTTP/1.1 200") {
                    eprintln!("http conn {conn}: unexpected status");
                    r.errors += 1;
                    break 'outer;
                }
                match content_length(&buf[..h]) {
                    Some(cl) => break h + cl,
                    None => {
                        eprintln!("http conn {conn}: response without Content-Length");
                        r.errors += 1;
                        break 'outer;
                    }
                }
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match s.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => {
                    r.errors += 1;
                    break 'outer;
                }
                Ok(n) => filled += n,
            }
        };
        while filled < total {
            if total > buf.len() {
                buf.resize(total, 0);
            }
            match s.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => {
                    r.errors += 1;
                    break 'outer;
                }
                Ok(n) => filled += n,
            }
        }
        buf.copy_within(total..filled, 0);
        filled -= total;
        let t1 = Instant::now();
        if t1 > deadline {
            break;
        }
        r.requests += 1;
        r.bytes += total as u64;
        r.latencies.push((t1 - t0).as_nanos() as u64);
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> std::io::Result<()> {
    s.write_all(data).await?;
    s.flush().await // a no-op for a TcpStream; sends the buffered records of a TLS stream
}

// --- TLS (modes `tls` and `https`) -----------------------------------------------------------

fn tls_connector(ca: &str) -> TlsConnector {
    if ca.is_empty() {
        die("TLS modes need --ca PEM (or LOADGEN_TLS_CA) to verify the server certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| die(&format!("--ca {ca}: {e}")));
    for c in certs {
        let c = c.unwrap_or_else(|e| die(&format!("--ca {ca}: {e}")));
        roots
            .add(c)
            .unwrap_or_else(|e| die(&format!("--ca {ca}: {e}")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| die(&format!("rustls: {e}")))
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(
    addr: SocketAddr,
    tls: &TlsConnector,
    sni: &ServerName<'static>,
    conn: usize,
) -> Option<TlsStream> {
    let tcp = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            return None;
        }
    };
    let _ = tcp.set_nodelay(true);
    match tls.connect(sni.clone(), tcp).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("tls conn {conn}: handshake: {e}");
            None
        }
    }
}

async fn tls_conn(
    addr: SocketAddr,
    size: usize,
    conn: usize,
    start: Instant,
    deadline: Instant,
    tls: TlsConnector,
    sni: ServerName<'static>,
) -> ConnResult {
    let mut r = ConnResult::new();
    let Some(mut s) = tls_connect(addr, &tls, &sni, conn).await else {
        r.errors += 1;
        return r;
    };
    let msg = payload(size, conn);
    let mut buf = vec![0u8; size];
    let now = Instant::now();
    if now < start {
        tokio::time::sleep(start - now).await;
    }
    let mut first = true;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        let res = if size <= 16 * 1024 {
            match write_flush(&mut s, &msg).await {
                Ok(()) => s.read_exact(&mut buf).await.map(|_| ()),
                Err(e) => Err(e),
            }
        } else {
            // Large messages: read while writing, as in `tcp`.
            let (mut rd, mut wr) = tokio::io::split(&mut s);
            let (w, rr) = tokio::join!(write_flush(&mut wr, &msg), rd.read_exact(&mut buf));
            w.and(rr.map(|_| ()))
        };
        if let Err(e) = res {
            eprintln!("tls conn {conn}: {e}");
            r.errors += 1;
            break;
        }
        let t1 = Instant::now();
        if first {
            first = false;
            if buf != msg {
                eprintln!("tls conn {conn}: echoed bytes differ");
                r.errors += 1;
                break;
            }
        }
        if t1 > deadline {
            break;
        }
        r.requests += 1;
        r.bytes += size as u64;
        r.latencies.push((t1 - t0).as_nanos() as u64);
    }
    abortive_close(s.get_ref().0);
    r
}

async fn https_conn(
    addr: SocketAddr,
    path: String,
    conn: usize,
    start: Instant,
    deadline: Instant,
    tls: TlsConnector,
    sni: ServerName<'static>,
) -> ConnResult {
    let mut r = ConnResult::new();
    let Some(mut s) = tls_connect(addr, &tls, &sni, conn).await else {
        r.errors += 1;
        return r;
    };
    http_loop(&mut s, &path, conn, start, deadline, &mut r).await;
    abortive_close(s.get_ref().0);
    r
}

async fn udp_conn(
    addr: SocketAddr,
    size: usize,
    conn: usize,
    timeout: Duration,
    start: Instant,
    deadline: Instant,
) -> ConnResult {
    let mut r = ConnResult::new();
    let sock = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp bind: {e}");
            r.errors += 1;
            return r;
        }
    };
    if let Err(e) = sock.connect(addr).await {
        eprintln!("udp connect: {e}");
        r.errors += 1;
        return r;
    }
    let size = size.max(8);
    let mut msg = payload(size, conn);
    let mut buf = vec![0u8; size + 64];
    let now = Instant::now();
    if now < start {
        tokio::time::sleep(start - now).await;
    }
    let mut seq: u64 = 0;
    'outer: loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        seq += 1;
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        if let Err(e) = sock.send(&msg).await {
            eprintln!("udp send: {e}");
            r.errors += 1;
            break;
        }
        // Wait for the reply carrying this sequence number; stale replies are skipped.
        let until = t0 + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sock.recv(&mut buf)).await {
                Err(_) => {
                    r.lost += 1;
                    continue 'outer;
                }
                Ok(Err(e)) => {
                    // ECONNREFUSED from an earlier datagram: the server went away.
                    eprintln!("udp recv: {e}");
                    r.errors += 1;
                    break 'outer;
                }
                Ok(Ok(n)) => {
                    if n == size && buf[..8] == msg[..8] {
                        if buf[..n] != msg[..] {
                            eprintln!("udp conn {conn}: echoed bytes differ");
                            r.errors += 1;
                            break 'outer;
                        }
                        break;
                    }
                }
            }
        }
        let t1 = Instant::now();
        if t1 > deadline {
            break;
        }
        r.requests += 1;
        r.bytes += size as u64;
        r.latencies.push((t1 - t0).as_nanos() as u64);
    }
    r
}

fn hold(addr: SocketAddr, conns: usize) {
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0usize;
    let mut last_err = String::new();
    let t0 = Instant::now();
    for _ in 0..conns {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                last_err = e.to_string();
                if failed > 20 {
                    break;
                }
            }
        }
    }
    println!(
        "{{\"mode\":\"hold\",\"connected\":{},\"failed\":{},\"seconds\":{:.3},\"last_error\":{:?}}}",
        held.len(),
        failed,
        t0.elapsed().as_secs_f64(),
        last_err
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for s in &held {
        abortive_close(s);
    }
    drop(held);
}

fn main() {
    let args = Args::parse(USAGE);
    let addr: SocketAddr = args
        .str("addr", "")
        .parse()
        .unwrap_or_else(|_| die(&format!("--addr HOST:PORT is required\n{USAGE}")));
    let conns: usize = args.num("conns", 10);
    let size: usize = args.num("size", 1024);
    let duration: f64 = args.num("duration", 1.0);
    let timeout = Duration::from_millis(args.num("timeout-ms", 1000));
    let path = args.str("path", "/");
    if conns == 0 || duration <= 0.0 {
        die("--conns and --duration must be positive");
    }
    if args.mode == "hold" {
        hold(addr, conns);
        return;
    }
    let tls = if args.mode == "tls" || args.mode == "https" {
        let ca = args.str("ca", &std::env::var("LOADGEN_TLS_CA").unwrap_or_default());
        Some(tls_connector(&ca))
    } else {
        None
    };
    let sni = ServerName::try_from(args.str("sni", "localhost"))
        .unwrap_or_else(|e| die(&format!("--sni: {e}")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mode = args.mode.clone();
    let results: Vec<ConnResult> = rt.block_on(async move {
        // Connections are opened first; the clock starts for all of them at once.
        let start = Instant::now() + Duration::from_millis(20 + conns as u64 / 10);
        let deadline = start + Duration::from_secs_f64(duration);
        let mut handles = Vec::with_capacity(conns);
        for c in 0..conns {
            let h = match mode.as_str() {
                "tcp" => tokio::spawn(tcp_conn(addr, size, c, start, deadline)),
                "http" => tokio::spawn(http_conn(addr, path.clone(), c, start, deadline)),
                "udp" => tokio::spawn(udp_conn(addr, size, c, timeout, start, deadline)),
                "tls" => tokio::spawn(tls_conn(
                    addr,
                    size,
                    c,
                    start,
                    deadline,
                    tls.clone().expect("tls"),
                    sni.clone(),
                )),
                "https" => tokio::spawn(https_conn(
                    addr,
                    path.clone(),
                    c,
                    start,
                    deadline,
                    tls.clone().expect("tls"),
                    sni.clone(),
                )),
                m => die(&format!("unknown mode {m:?}\n{USAGE}")),
            };
            handles.push(h);
        }
        let mut out = Vec::with_capacity(conns);
        for h in handles {
            out.push(h.await.expect("connection task"));
        }
        out
    });
    let (mut requests, mut bytes, mut errors, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut lat: Vec<u64> = Vec::new();
    for r in results {
        requests += r.requests;
        bytes += r.bytes;
        errors += r.errors;
        lost += r.lost;
        lat.extend_from_slice(&r.latencies);
    }
    println!(
        "{{\"mode\":\"{}\",\"conns\":{},\"size\":{},\"duration_s\":{:.6},\"count\":{},\"bytes\":{},\"errors\":{},\"lost\":{},\"rps\":{:.1},\"latency\":{}}}",
        args.mode,
        conns,
        size,
        duration,
        requests,
        bytes,
        errors,
        lost,
        requests as f64 / duration,
        latency_json(&mut lat)
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
