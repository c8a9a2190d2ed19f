//! A one-name DNS server for tests that need a host name to resolve through a real DNS
//! query (not `/etc/hosts`): it answers `A` queries for its name with one IPv4 address,
//! `NOERROR` with no answer for other types of that name, and `NXDOMAIN` for every other
//! name. UDP only; stops on drop.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running server. Counts the `A` answers it gave, so a test can tell that a lookup went
/// through it.
#[derive(Debug)]
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `name` → `ip` on UDP `bind`:53.
    pub fn start(bind: &str, name: &str, ip: Ipv4Addr) -> DnsServer {
        let socket = UdpSocket::bind((bind, 53)).unwrap_or_else(|e| panic!("bind {bind}:53: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let thread = {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((reply, is_a)) = answer(&buf[..n], &name, ip) {
                        if is_a {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        DnsServer {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// How many `A` queries for the name were answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query, and whether it carries an `A` answer; `None` for what is not a
/// single-question query.
fn answer(query: &[u8], name: &str, ip: Ipv4Addr) -> Option<(Vec<u8>, bool)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    query.get(..question_end)?;
    let ours = labels.join(".") == name;
    let is_a = ours && qtype == 1;

    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x84 | rd); // response, authoritative, recursion desired echoed
    reply.push(if ours { 0x00 } else { 0x03 }); // NOERROR or NXDOMAIN
    reply.extend_from_slice(&[0, 1]); // one question
    reply.extend_from_slice(&[0, u8::from(is_a)]); // answers
    reply.extend_from_slice(&[0, 0, 0, 0]); // authority, additional
    reply.extend_from_slice(&query[12..question_end]);
    if is_a {
        reply.extend_from_slice(&[0xc0, 12]); // the question's name
        reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        reply.extend_from_slice(&5u32.to_be_bytes()); // TTL
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some((reply, is_a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn answers_its_name_and_refuses_others() {
        let ip = Ipv4Addr::new(172, 17, 0, 1);
        let (a, is_a) = answer(&query("Consul.Berth.Test", 1), "consul.berth.test", ip).unwrap();
        assert!(is_a);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&a[6..8], &[0, 1], "one answer");
        assert_eq!(&a[a.len() - 4..], &[172, 17, 0, 1]);

        let (aaaa, is_a) =
            answer(&query("consul.berth.test", 28), "consul.berth.test", ip).unwrap();
        assert!(!is_a);
        assert_eq!((aaaa[3] & 0x0f, aaaa[7]), (0, 0), "NOERROR, no answer");

        let (other, _) = answer(&query("example.org", 1), "consul.berth.test", ip).unwrap();
        assert_eq!(other[3] & 0x0f, 3, "NXDOMAIN");
        assert!(answer(&[0; 5], "x", ip).is_none());
    }
}
