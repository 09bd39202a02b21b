//! `tcp-stdio HOST PORT`: connects to HOST:PORT and copies stdin to the connection and the
//! connection to stdout, until both sides are done. QEMU's `guestfwd=...-cmd:` runs it once per
//! guest connection (stdin and stdout are that connection), so a restricted guest network
//! reaches a server the test runs on the host's loopback (smbd) and nothing else.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port] = &args[..] else {
        std::process::exit(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        std::process::exit(2);
    };
    // Nothing is printed: stdout (and stderr) is the guest's connection.
    let Ok(sock) = TcpStream::connect((host.as_str(), port)) else {
        std::process::exit(1);
    };
    let (Ok(inp), Ok(out)) = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        std::process::exit(1);
    };
    let (mut inp, mut out) = (std::fs::File::from(inp), std::fs::File::from(out));
    let Ok(mut to_sock) = sock.try_clone() else {
        std::process::exit(1);
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = inp.read(&mut buf) {
            if n == 0 || to_sock.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_sock.shutdown(Shutdown::Write);
    });
    let mut from_sock = sock;
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from_sock.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // The server closed: the guest's connection ends with this process (the copy the other
    // way may still be blocked reading the guest).
    std::process::exit(0);
}
