//! The name server a sandbox's guest asks: a resolver the manager runs for each sandbox,
//! listening at the guest's gateway inside the sandbox's namespace and asking the host's
//! name servers from the host's. The guest reaches no name server of its own, so:
//!
//! - under `egress: allow`, only the host names the workspace allows resolve (others get
//!   NXDOMAIN), and their answers open the way: each address is added to the namespace's
//!   [`NAMES_CHAIN`] before the guest sees it. A name that resolves to a blocked network
//!   (the host, a neighbour, metadata: DNS rebinding) has those addresses taken out of the
//!   answer and opens nothing;
//! - under `egress: open`, every query is relayed (the address rules still refuse the
//!   blocked networks, whatever a name resolves to);
//! - under `egress: none` no resolver runs, and nothing answers at the gateway.
//!
//! It answers over UDP and TCP (where a guest asks again when a UDP answer came back
//! truncated), and asks upstream the way it was asked. A learnt address stays open for
//! its record's TTL and a grace period, renewed each time the name resolves to it
//! again, then is closed: an allowed name whose addresses move on (a CDN, a cloud load
//! balancer) does not leave its old ones, by then someone else's, open for good.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_core::network::{is_blocked, Egress, NetworkSpec};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::{allow_line, forward, NetCommand, NAMES_CHAIN, TAP_NAME};
use crate::driver::VmmError;
use crate::storage::CommandRunner;

/// How long one upstream name server gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Addresses learnt per sandbox at most: a guest asking for endless names under a
/// wildcard must not grow the namespace's rules without bound.
const MAX_LEARNT: usize = 4096;
/// A learnt address stays open for its record's TTL, within these bounds…
const MIN_HOLD: Duration = Duration::from_secs(60);
const MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);
/// …and this much longer: clients keep answers a little past their TTL.
const GRACE: Duration = Duration::from_secs(10 * 60);
/// How often expired addresses are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A TCP client silent this long is hung up on.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries (and TCP clients) one sandbox may have in hand at once; past that, new ones
/// are dropped. Each holds a socket of the manager's: a guest flooding its resolver
/// must not run the manager out of file descriptors.
const MAX_IN_FLIGHT: usize = 64;

/// How a query came, and so how it is asked upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One sandbox's resolver.
pub struct Resolver {
    policy: NetworkSpec,
    upstreams: Vec<SocketAddr>,
    /// The sandbox's namespace, by name (`ip netns exec`).
    netns: String,
    runner: Arc<dyn CommandRunner>,
    /// Addresses (and ports) in the names chain, and until when they stay.
    learnt: Mutex<HashMap<(Ipv4Addr, Option<u16>), Instant>>,
    /// Held while a rule is added or removed, so that a renewal never races a removal.
    rules: tokio::sync::Mutex<()>,
    /// Bounds the queries and TCP clients in hand ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// `ip` or `ip:port` (port 53 by default); unparsable entries are left out.
pub fn parse_upstreams(servers: &[String]) -> Vec<SocketAddr> {
    servers
        .iter()
        .filter_map(|s| {
            s.parse::<SocketAddr>()
                .ok()
                .or_else(|| s.parse::<Ipv4Addr>().ok().map(|ip| (ip, 53).into()))
        })
        .collect()
}

impl Resolver {
    pub fn new(
        policy: NetworkSpec,
        upstreams: Vec<SocketAddr>,
        netns: String,
        runner: Arc<dyn CommandRunner>,
    ) -> Self {
        Self {
            policy,
            upstreams,
            netns,
            runner,
            learnt: Mutex::new(HashMap::new()),
            rules: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Listens at `listen` (port 53, UDP and TCP) inside the namespace file
    /// `netns_path` and answers until the returned task is aborted; closes expired
    /// addresses meanwhile. Must run inside a Tokio runtime.
    pub fn serve(self, netns_path: &Path, listen: Ipv4Addr) -> Result<JoinHandle<()>, VmmError> {
        let at = SocketAddr::from((listen, 53));
        let opening = |e| {
            VmmError::io(format!(
                "opening the sandbox's name server {at} in {}",
                netns_path.display()
            ))(e)
        };
        let udp = forward::in_netns(netns_path, move || {
            let s = std::net::UdpSocket::bind(at)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .and_then(UdpSocket::from_std)
        .map_err(opening)?;
        let tcp = forward::in_netns(netns_path, move || {
            let l = std::net::TcpListener::bind(at)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .and_then(TcpListener::from_std)
        .map_err(opening)?;
        let resolver = Arc::new(self);
        Ok(tokio::spawn(async move {
            resolver.adopt_learnt().await;
            tokio::join!(
                resolver.clone().serve_udp(Arc::new(udp)),
                resolver.clone().serve_tcp(tcp),
                resolver.sweep(),
            );
        }))
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                tracing::debug!(netns = %self.netns, "a sandbox's resolver is busy; a query dropped");
                continue;
            };
            let query = buf[..n].to_vec();
            let (socket, resolver) = (socket.clone(), self.clone());
            tokio::spawn(async move {
                if let Some(reply) = resolver.answer_via(&query, Transport::Udp).await {
                    let _ = socket.send_to(&reply, from).await;
                }
                drop(permit);
            });
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                tracing::debug!(netns = %self.netns, "a sandbox's resolver is busy; a client dropped");
                continue;
            };
            let resolver = self.clone();
            tokio::spawn(async move {
                resolver.serve_tcp_client(stream).await;
                drop(permit);
            });
        }
    }

    /// Length-prefixed queries (RFC 1035 §4.2.2) until the client goes or idles.
    async fn serve_tcp_client(&self, mut stream: TcpStream) {
        while let Ok(Some(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream))
            .await
            .map(Result::ok)
            .map(Option::flatten)
        {
            let Some(reply) = self.answer_via(&query, Transport::Tcp).await else {
                return;
            };
            if write_framed(&mut stream, &reply).await.is_err() {
                return;
            }
        }
    }

    /// Closes expired addresses every [`SWEEP_EVERY`].
    async fn sweep(&self) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            self.close_expired(Instant::now()).await;
        }
    }

    /// Takes over the addresses a previous manager opened in the names chain (this one
    /// restarted while the sandbox ran): they get the shortest hold from now, so they
    /// close unless their names resolve to them again, instead of staying for good.
    pub async fn adopt_learnt(&self) -> usize {
        if self.policy.egress != Egress::Allow {
            return 0;
        }
        let (runner, netns) = (self.runner.clone(), self.netns.clone());
        let listed = tokio::task::spawn_blocking(move || {
            NetCommand::new(
                "ip",
                &["netns", "exec", &netns, "iptables", "-w", "-S", NAMES_CHAIN],
            )
            .run(&*runner)
        })
        .await;
        let Ok(Ok(out)) = listed else {
            return 0;
        };
        let until = Instant::now() + MIN_HOLD + GRACE;
        let mut learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
        let before = learnt.len();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(key) = learnt_rule(line) {
                learnt.entry(key).or_insert(until);
            }
        }
        learnt.len() - before
    }

    /// Closes every learnt address whose time is up at `now`; returns how many.
    pub async fn close_expired(&self, now: Instant) -> usize {
        let _rules = self.rules.lock().await;
        let expired: Vec<(Ipv4Addr, Option<u16>)> = {
            let mut learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<_> = learnt
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in &gone {
                learnt.remove(k);
            }
            gone
        };
        let n = expired.len();
        let (runner, netns) = (self.runner.clone(), self.netns.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for (ip, port) in expired {
                let removed = learn_command(&netns, "-D", ip, port)
                    .run(&*runner)
                    .is_ok_and(|o| o.status == Some(0));
                if !removed {
                    tracing::warn!(%netns, %ip, "could not close an expired address");
                }
            }
        })
        .await;
        n
    }

    /// The reply to one query from the guest over UDP.
    pub async fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.answer_via(query, Transport::Udp).await
    }

    /// The reply to one query from the guest (`None`: not a query; dropped).
    pub async fn answer_via(&self, query: &[u8], via: Transport) -> Option<Vec<u8>> {
        let msg = Message::from_vec(query).ok()?;
        if msg.message_type() != MessageType::Query {
            return None;
        }
        let refuse = |code| {
            let mut reply = Message::error_msg(msg.id(), msg.op_code(), code);
            reply.add_queries(msg.queries().to_vec());
            reply.set_recursion_desired(msg.recursion_desired());
            reply.set_recursion_available(true);
            reply.to_vec().ok()
        };
        let [question] = msg.queries() else {
            return refuse(ResponseCode::FormErr);
        };
        let name = question.name().to_ascii();
        let ports = match self.policy.egress {
            Egress::None => return refuse(ResponseCode::Refused),
            Egress::Open => None,
            Egress::Allow => {
                let ports = self.policy.ports_for_host(&name);
                if ports.is_empty() {
                    tracing::debug!(%name, "a sandbox asked for a name it may not reach");
                    return refuse(ResponseCode::NXDomain);
                }
                Some(ports)
            }
        };
        let Some(raw) = self.ask_upstream(query, msg.id(), via).await else {
            return refuse(ResponseCode::ServFail);
        };
        let Some(ports) = ports else {
            return Some(raw);
        };
        let mut reply = Message::from_vec(&raw).ok()?;
        let answers = reply.take_answers();
        let before = answers.len();
        let mut kept = Vec::with_capacity(before);
        for record in answers {
            match record.data() {
                RData::A(a) if is_blocked(a.0) => {
                    tracing::warn!(%name, address = %a.0, "an allowed name resolved to a blocked network; left out");
                }
                RData::A(a) => {
                    let ttl = Duration::from_secs(u64::from(record.ttl()));
                    if self.learn(a.0, &ports, ttl).await {
                        kept.push(record);
                    }
                }
                // Addresses of other kinds open nothing (the guest network is IPv4).
                _ if record.record_type() == RecordType::AAAA => {}
                _ => kept.push(record),
            }
        }
        if kept.len() == before {
            return Some(raw);
        }
        reply.insert_answers(kept);
        reply.to_vec().ok()
    }

    /// Relays `query` to the upstream name servers in turn, over `via`; the first answer
    /// to it.
    async fn ask_upstream(&self, query: &[u8], id: u16, via: Transport) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let asked = match via {
                Transport::Udp => ask_udp(*upstream, query, id).await,
                Transport::Tcp => {
                    tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(*upstream, query, id))
                        .await
                        .ok()
                        .flatten()
                }
            };
            match asked {
                Some(raw) => return Some(raw),
                None => tracing::debug!(%upstream, ?via, "a name server did not answer"),
            }
        }
        None
    }

    /// Opens `ip` on `ports` in the sandbox's names chain for `ttl` (and the grace
    /// period), or renews it; whether it is open.
    async fn learn(&self, ip: Ipv4Addr, ports: &[Option<u16>], ttl: Duration) -> bool {
        let until = Instant::now() + ttl.clamp(MIN_HOLD, MAX_HOLD) + GRACE;
        let _rules = self.rules.lock().await;
        let mut open = true;
        for &port in ports {
            {
                let mut learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(held) = learnt.get_mut(&(ip, port)) {
                    *held = (*held).max(until);
                    continue;
                }
                if learnt.len() >= MAX_LEARNT {
                    tracing::warn!(netns = %self.netns, "a sandbox's resolver has learnt as many addresses as it may");
                    return false;
                }
            }
            let runner = self.runner.clone();
            let netns = self.netns.clone();
            let added = tokio::task::spawn_blocking(move || add_rule(&*runner, &netns, ip, port))
                .await
                .unwrap_or(false);
            if added {
                self.learnt
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((ip, port), until);
            } else {
                open = false;
            }
        }
        open
    }
}

/// The address (and port) an `iptables -S` line of the names chain opens:
/// `-A atelier-names -d 203.0.113.7/32 -i tap0 -p tcp -m tcp --dport 443 -j ACCEPT`.
fn learnt_rule(line: &str) -> Option<(Ipv4Addr, Option<u16>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first() != Some(&"-A") || words.get(1) != Some(&NAMES_CHAIN) {
        return None;
    }
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let ip = after("-d")?.strip_suffix("/32")?.parse().ok()?;
    let port = match after("--dport") {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((ip, port))
}

/// Asks `upstream` over UDP; its answer to `id`.
async fn ask_udp(upstream: SocketAddr, query: &[u8], id: u16) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .await
        .ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let n = socket.recv(&mut buf).await.ok()?;
            // An answer to another query (or garbage) is not this one's.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                return Some(buf[..n].to_vec());
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Asks `upstream` over TCP; its answer to `id`.
async fn ask_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await.ok()?;
    write_framed(&mut stream, query).await.ok()?;
    let reply = read_framed(&mut stream).await.ok()??;
    (reply.len() >= 2 && u16::from_be_bytes([reply[0], reply[1]]) == id).then_some(reply)
}

/// One length-prefixed DNS message; `None` when the peer closed before one began.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| std::io::Error::other("a DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

/// The command that lets the guest of `netns` reach `ip` (on `port`), as the names
/// chain holds it.
pub fn learn_command(netns: &str, op: &str, ip: Ipv4Addr, port: Option<u16>) -> NetCommand {
    let line = allow_line(
        &format!("{op} {NAMES_CHAIN} -i {TAP_NAME}"),
        atelier_core::network::Ipv4Net {
            addr: ip,
            prefix: 32,
        },
        port,
    );
    let mut args = vec!["netns", "exec", netns, "iptables", "-w"];
    args.extend(line.split(' '));
    NetCommand::new("ip", &args)
}

/// Adds the rule for `ip` (`port`) unless the chain has it (a manager restarted with the
/// sandbox running learns its addresses again).
fn add_rule(runner: &dyn CommandRunner, netns: &str, ip: Ipv4Addr, port: Option<u16>) -> bool {
    let ok = |cmd: NetCommand| cmd.run(runner).is_ok_and(|o| o.status == Some(0));
    if ok(learn_command(netns, "-C", ip, port)) {
        return true;
    }
    let added = ok(learn_command(netns, "-A", ip, port));
    if !added {
        tracing::warn!(%netns, %ip, "could not open an allowed name's address");
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::CommandOutput;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{rdata, Name, Record};
    use std::ffi::OsString;
    use std::str::FromStr;

    #[derive(Default)]
    struct Rules(Mutex<Vec<String>>);

    impl CommandRunner for Rules {
        fn run(&self, program: &str, args: &[OsString]) -> std::io::Result<CommandOutput> {
            let line = format!(
                "{program} {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let mut rules = self.0.lock().unwrap();
            // `-S` lists what is open, as iptables prints it (its own word order).
            if line.ends_with(" -S atelier-names") {
                let open: Vec<String> = rules
                    .iter()
                    .filter_map(|r| r.split_once(" -A atelier-names -i tap0 "))
                    .map(|(_, rest)| {
                        format!(
                            "-A atelier-names {} -i tap0",
                            rest.replace(" -p tcp ", " -p tcp -m tcp ")
                        )
                    })
                    .collect();
                return Ok(CommandOutput::ok(open.join("\n")));
            }
            // `-C` finds what an earlier `-A` added, until a `-D` takes it out.
            let status = if line.contains(" -C ") {
                let wanted = line.replace(" -C ", " -A ");
                let deleted = line.replace(" -C ", " -D ");
                let added = rules.iter().rposition(|r| *r == wanted);
                let removed = rules.iter().rposition(|r| *r == deleted);
                i32::from(added.is_none_or(|a| removed.is_some_and(|d| d > a)))
            } else {
                rules.push(line);
                0
            };
            Ok(CommandOutput {
                status: Some(status),
                stdout: vec![],
                stderr: vec![],
            })
        }
    }

    /// A name server on loopback answering every A query with `answers` (name → addresses).
    async fn upstream(answers: &'static [(&'static str, &'static [[u8; 4]])]) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                let query = Message::from_vec(&buf[..n]).unwrap();
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(query.queries().to_vec());
                let name = query.queries()[0].name().clone();
                for (n, ips) in answers {
                    if name == Name::from_str(n).unwrap() {
                        for ip in *ips {
                            reply.add_answer(Record::from_rdata(
                                name.clone(),
                                60,
                                RData::A(rdata::A(Ipv4Addr::from(*ip))),
                            ));
                        }
                    }
                }
                socket
                    .send_to(&reply.to_vec().unwrap(), from)
                    .await
                    .unwrap();
            }
        });
        at
    }

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn addresses(reply: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
        let m = Message::from_vec(reply).unwrap();
        let ips = m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        (m.response_code(), ips)
    }

    fn resolver(egress: Egress, allow: &[&str], up: SocketAddr, rules: Arc<Rules>) -> Resolver {
        let policy = NetworkSpec {
            egress,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            host_services: vec![],
        };
        Resolver::new(policy, vec![up], "atelier-s1".into(), rules)
    }

    const ZONE: &[(&str, &[[u8; 4]])] = &[
        ("api.example.com.", &[[203, 0, 113, 7], [203, 0, 113, 8]]),
        (
            "rebind.example.com.",
            &[[127, 0, 0, 1], [10, 200, 0, 6], [203, 0, 113, 9]],
        ),
        ("other.example.org.", &[[198, 51, 100, 1]]),
    ];

    #[tokio::test]
    async fn allowed_names_resolve_and_open_their_addresses_before_the_guest_sees_them() {
        let rules = Arc::new(Rules::default());
        let r = resolver(
            Egress::Allow,
            &["api.example.com:443", "*.example.com:80"],
            upstream(ZONE).await,
            rules.clone(),
        );
        let (code, ips) = addresses(&r.answer(&query("api.example.com.")).await.unwrap());
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            ips,
            [Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(203, 0, 113, 8)]
        );
        // Both entries name it: each opens its port.
        let added = rules.0.lock().unwrap().clone();
        let head = "ip netns exec atelier-s1 iptables -w -A atelier-names -i tap0";
        assert_eq!(
            added,
            [
                format!("{head} -d 203.0.113.7/32 -p tcp --dport 443 -j ACCEPT"),
                format!("{head} -d 203.0.113.7/32 -p tcp --dport 80 -j ACCEPT"),
                format!("{head} -d 203.0.113.8/32 -p tcp --dport 443 -j ACCEPT"),
                format!("{head} -d 203.0.113.8/32 -p tcp --dport 80 -j ACCEPT"),
            ]
        );
        // Asked again: nothing added twice.
        r.answer(&query("API.example.com.")).await.unwrap();
        assert_eq!(rules.0.lock().unwrap().len(), 4);
        // A name not allowed resolves to nothing and opens nothing.
        let (code, ips) = addresses(&r.answer(&query("other.example.org.")).await.unwrap());
        assert_eq!((code, ips.len()), (ResponseCode::NXDomain, 0));
        assert_eq!(rules.0.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn an_allowed_name_pointing_at_a_blocked_network_opens_none_of_it() {
        let rules = Arc::new(Rules::default());
        let r = resolver(
            Egress::Allow,
            &["rebind.example.com"],
            upstream(ZONE).await,
            rules.clone(),
        );
        let (_, ips) = addresses(&r.answer(&query("rebind.example.com.")).await.unwrap());
        assert_eq!(ips, [Ipv4Addr::new(203, 0, 113, 9)]);
        let added = rules.0.lock().unwrap().clone();
        assert_eq!(added.len(), 1, "{added:?}");
        assert!(
            added[0].contains("-d 203.0.113.9/32 -j ACCEPT"),
            "{added:?}"
        );
    }

    #[tokio::test]
    async fn open_relays_every_name_and_learns_nothing() {
        let rules = Arc::new(Rules::default());
        let r = resolver(Egress::Open, &[], upstream(ZONE).await, rules.clone());
        let (_, ips) = addresses(&r.answer(&query("other.example.org.")).await.unwrap());
        assert_eq!(ips, [Ipv4Addr::new(198, 51, 100, 1)]);
        assert!(rules.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_silent_upstream_is_a_server_failure_and_garbage_is_dropped() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rules = Arc::new(Rules::default());
        let r = resolver(
            Egress::Allow,
            &["api.example.com"],
            silent.local_addr().unwrap(),
            rules,
        );
        let (code, _) = addresses(&r.answer(&query("api.example.com.")).await.unwrap());
        assert_eq!(code, ResponseCode::ServFail);
        assert!(r.answer(b"\x00\x01garbage").await.is_none());
    }

    #[tokio::test]
    async fn a_learnt_address_closes_when_its_time_is_up_and_a_new_answer_opens_it_again() {
        let rules = Arc::new(Rules::default());
        let r = resolver(
            Egress::Allow,
            &["api.example.com"],
            upstream(ZONE).await,
            rules.clone(),
        );
        r.answer(&query("api.example.com.")).await.unwrap();
        assert_eq!(
            r.close_expired(Instant::now()).await,
            0,
            "nothing is due yet"
        );
        // The records say 60 s: past that and the grace period, both addresses close.
        let later = Instant::now() + MIN_HOLD + GRACE + Duration::from_secs(1);
        assert_eq!(r.close_expired(later).await, 2);
        let head = "ip netns exec atelier-s1 iptables -w";
        let lines = rules.0.lock().unwrap().clone();
        for ip in ["203.0.113.7", "203.0.113.8"] {
            let closed = format!("{head} -D atelier-names -i tap0 -d {ip}/32 -j ACCEPT");
            assert!(lines.contains(&closed), "{closed} in {lines:?}");
        }
        // Resolved again, the name opens its addresses again.
        r.answer(&query("api.example.com.")).await.unwrap();
        let lines = rules.0.lock().unwrap().clone();
        let reopened = format!("{head} -A atelier-names -i tap0 -d 203.0.113.7/32 -j ACCEPT");
        assert_eq!(
            lines.iter().filter(|l| **l == reopened).count(),
            2,
            "{lines:?}"
        );
        assert_eq!(r.close_expired(Instant::now()).await, 0);
    }

    /// A name server on loopback over TCP only, answering every A query with 192.0.2.1.
    async fn tcp_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while let Ok(Some(raw)) = read_framed(&mut stream).await {
                        let query = Message::from_vec(&raw).unwrap();
                        let mut reply = Message::new();
                        reply
                            .set_id(query.id())
                            .set_message_type(MessageType::Response)
                            .add_queries(query.queries().to_vec())
                            .add_answer(Record::from_rdata(
                                query.queries()[0].name().clone(),
                                300,
                                RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 1))),
                            ));
                        write_framed(&mut stream, &reply.to_vec().unwrap())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        at
    }

    #[tokio::test]
    async fn a_query_over_tcp_is_asked_upstream_over_tcp() {
        let rules = Arc::new(Rules::default());
        let r = resolver(
            Egress::Allow,
            &["big.example.com"],
            tcp_upstream().await,
            rules.clone(),
        );
        let reply = r
            .answer_via(&query("big.example.com."), Transport::Tcp)
            .await
            .unwrap();
        assert_eq!(
            addresses(&reply),
            (ResponseCode::NoError, vec![Ipv4Addr::new(192, 0, 2, 1)])
        );
        assert_eq!(rules.0.lock().unwrap().len(), 1, "the address opened");
        // The same server has no UDP side: asked over UDP, it fails.
        let (code, _) = addresses(&r.answer(&query("big.example.com.")).await.unwrap());
        assert_eq!(code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn a_flood_of_queries_is_bounded_the_rest_are_dropped() {
        // Every query waits on a silent upstream: none leaves the hands of the resolver
        // before the flood is over.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = Arc::new(resolver(
            Egress::Open,
            &[],
            silent.local_addr().unwrap(),
            Arc::new(Rules::default()),
        ));
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let at = server.local_addr().unwrap();
        tokio::spawn(r.serve_udp(server));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..MAX_IN_FLIGHT + 36 {
            client
                .send_to(&query("api.example.com."), at)
                .await
                .unwrap();
        }
        let mut replies = 0;
        let mut buf = [0u8; 512];
        while let Ok(Ok(_)) = tokio::time::timeout(
            UPSTREAM_TIMEOUT + Duration::from_secs(2),
            client.recv_from(&mut buf),
        )
        .await
        {
            replies += 1;
        }
        assert_eq!(
            replies, MAX_IN_FLIGHT,
            "the queries past the bound were dropped"
        );
    }

    #[tokio::test]
    async fn a_restarted_manager_takes_over_the_open_addresses_and_lets_them_expire() {
        let rules = Arc::new(Rules::default());
        let up = upstream(ZONE).await;
        let before = resolver(Egress::Allow, &["api.example.com:443"], up, rules.clone());
        before.answer(&query("api.example.com.")).await.unwrap();
        // A new resolver for the same sandbox (the manager restarted) finds both.
        let after = resolver(Egress::Allow, &["api.example.com:443"], up, rules.clone());
        assert_eq!(after.adopt_learnt().await, 2);
        assert_eq!(after.close_expired(Instant::now()).await, 0);
        let later = Instant::now() + MIN_HOLD + GRACE + Duration::from_secs(1);
        assert_eq!(after.close_expired(later).await, 2);
        let lines = rules.0.lock().unwrap().clone();
        assert!(
            lines.iter().any(|l| l.ends_with(
                "-D atelier-names -i tap0 -d 203.0.113.8/32 -p tcp --dport 443 -j ACCEPT"
            )),
            "{lines:?}"
        );
        assert_eq!(
            learnt_rule("-A atelier-names -d 198.51.100.1/32 -i tap0 -j ACCEPT"),
            Some((Ipv4Addr::new(198, 51, 100, 1), None))
        );
        assert_eq!(learnt_rule("-N atelier-names"), None);
    }

    #[test]
    fn upstreams_take_a_port_or_default_to_53() {
        let got = parse_upstreams(&["127.0.0.53".into(), "127.0.0.1:5353".into(), "nope".into()]);
        assert_eq!(
            got,
            [
                SocketAddr::from(([127, 0, 0, 53], 53)),
                SocketAddr::from(([127, 0, 0, 1], 5353))
            ]
        );
    }
}
