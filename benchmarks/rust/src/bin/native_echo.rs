//! The native ceiling: an echo server on a tokio current-thread runtime (one core, like a
//! Python event loop). It does what the Python Protocol echo server does: read up to
//! 256 KiB, write it back. Prints `READY <port>` once listening.

use oxloop_bench_tools::Args;
use std::io::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const USAGE: &str = "usage: native-echo [tcp|udp] [--host 127.0.0.1] [--port 0]";

fn main() {
    let args = Args::parse(USAGE);
    let host = args.str("host", "127.0.0.1");
    let port: u16 = args.num("port", 0);
    let udp = args.mode == "udp";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        if udp {
            let sock = UdpSocket::bind((host.as_str(), port)).await.expect("bind");
            ready(sock.local_addr().expect("addr").port());
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                    let _ = sock.send_to(&buf[..n], peer).await;
                }
            }
        }
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .expect("bind");
        ready(listener.local_addr().expect("addr").port());
        loop {
            let (mut s, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                // The buffer is allocated once the connection first has data, so idle
                // connections cost what tokio itself needs (the memory case measures that).
                // `peek` rather than `readable`: readable() may wake spuriously.
                let mut probe = [0u8; 1];
                match s.peek(&mut probe).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

fn ready(port: u16) {
    println!("READY {port}");
    let _ = std::io::stdout().flush();
}
