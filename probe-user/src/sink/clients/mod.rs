//! Live clients of the agent (`busyprobe agent --socket PATH`): every client connected to the
//! socket gets the stream's JSON Lines, exactly as a recording holds them, starting with a
//! `header` line.
//!
//! The agent never waits for a client. Each client has a queue of [`QUEUE_LINES`] lines that
//! its own writer task empties into the socket; a line that finds the queue full is lost *for
//! that client only*: counted (`busyprobe_client_lines_lost_total`) and, once the client reads
//! again, told to it in their place by a `lost` line with how many. [`socket`] binds the
//! socket and runs the writers.

pub mod socket;

use std::{
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    event::{UmountAttempt, Warning},
    sink::{
        json::{wire::LostLine, JsonLines},
        Sink,
    },
    stats::Stats,
};

/// Lines queued for one client before it loses lines (besides what its socket buffers).
pub const QUEUE_LINES: usize = 1024;

/// One line of the stream, shared by every client's queue.
type SharedLine = Arc<[u8]>;

/// What the metrics show of the clients (shared handles: clones count the same).
#[derive(Clone, Debug, Default)]
pub struct ClientCounts {
    /// Clients connected now.
    pub connected: Gauge,
    /// Lines not sent to a client because it read too slowly, all clients together.
    pub lines_lost: Counter,
}

/// Lines one client lost in a row, and when the first of them was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lost {
    since: SystemTime,
    lines: u64,
}

impl Lost {
    /// The `lost` line that tells the client, with its newline.
    fn line(self) -> SharedLine {
        let mut line = serde_json::to_vec(&LostLine::slow_client(self.since, self.lines))
            .expect("serialising plain data cannot fail");
        line.push(b'\n');
        line.into()
    }
}

/// One entry of a client's queue: a line, and the lines lost just before it.
struct Queued {
    lost_before: Option<Lost>,
    line: SharedLine,
}

/// One connected client, as the sink sees it.
struct Client {
    queue: mpsc::Sender<Queued>,
    /// Lines lost since its last queued line.
    lost: Option<Lost>,
    /// Where the lines lost after its last queued line go when the stream ends.
    tail: Arc<Mutex<Option<Lost>>>,
}

impl Client {
    /// Queues `line`, or counts it lost. False when the client is gone.
    fn offer(&mut self, line: &SharedLine, counts: &ClientCounts) -> bool {
        let queued = Queued {
            lost_before: self.lost.take(),
            line: line.clone(),
        };
        match self.queue.try_send(queued) {
            Ok(()) => true,
            Err(TrySendError::Full(back)) => {
                counts.lines_lost.inc();
                let mut lost = back.lost_before.unwrap_or(Lost {
                    since: SystemTime::now(),
                    lines: 0,
                });
                lost.lines += 1;
                self.lost = Some(lost);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Hands the lines lost at the end to the client's writer (it writes them after its queue).
    fn finish(self) {
        *lock(&self.tail) = self.lost;
    }
}

/// A client's side of the hub: what its writer task writes, in order.
pub struct Subscription {
    queue: mpsc::Receiver<Queued>,
    tail: Arc<Mutex<Option<Lost>>>,
    ended: bool,
}

impl Subscription {
    /// The next lines to write: every line queued now (each after the `lost` line that
    /// stands for the lines lost just before it), in one buffer for one write; `None` once
    /// the stream has ended and everything was handed out.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        let Some(first) = self.queue.recv().await else {
            self.ended = true;
            return lock(&self.tail).take().map(|lost| lost.line().to_vec());
        };
        let mut lines = Vec::new();
        let mut queued = Some(first);
        while let Some(q) = queued {
            if let Some(lost) = q.lost_before {
                lines.extend_from_slice(&lost.line());
            }
            lines.extend_from_slice(&q.line);
            queued = self.queue.try_recv().ok();
        }
        Some(lines)
    }
}

/// A lock whose holder may have panicked: what it guards is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connected clients: the stream's sink adds lines, the socket adds and drops clients.
pub struct Hub {
    /// The `header` line (with its newline) every client gets first.
    header: SharedLine,
    clients: Mutex<Vec<Client>>,
    counts: ClientCounts,
}

impl Hub {
    /// No client yet; each will first get `header` (a `header` line without its newline).
    pub fn new(header: &str, counts: ClientCounts) -> Arc<Self> {
        let mut line = header.as_bytes().to_vec();
        line.push(b'\n');
        Arc::new(Self {
            header: line.into(),
            clients: Mutex::default(),
            counts,
        })
    }

    /// A new client: its subscription, which starts with the header.
    pub fn join(&self) -> Subscription {
        let (queue, lines) = mpsc::channel(QUEUE_LINES);
        let tail = Arc::new(Mutex::new(None));
        let mut client = Client {
            queue,
            lost: None,
            tail: tail.clone(),
        };
        client.offer(&self.header, &self.counts);
        lock(&self.clients).push(client);
        self.counts.connected.inc();
        Subscription {
            queue: lines,
            tail,
            ended: false,
        }
    }

    /// Offers `line` to every client; forgets the ones that are gone.
    fn broadcast(&self, line: SharedLine) {
        let mut clients = lock(&self.clients);
        let before = clients.len();
        clients.retain_mut(|c| c.offer(&line, &self.counts));
        self.counts
            .connected
            .dec_by((before - clients.len()) as i64);
    }

    /// Ends every client's stream once its queue is written (the stream has ended).
    pub fn close(&self) {
        let mut clients = lock(&self.clients);
        self.counts.connected.dec_by(clients.len() as i64);
        clients.drain(..).for_each(Client::finish);
    }
}

/// The sink that feeds the hub: the stream as JSON Lines, one shared buffer per line.
pub struct ToClients(JsonLines<LineSplitter>);

impl ToClients {
    /// A sink broadcasting to the clients of `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self(JsonLines::new(LineSplitter {
            hub,
            line: Vec::new(),
        }))
    }
}

impl Sink for ToClients {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.0.umount(attempt)
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.0.warning(warning)
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.0.stats(ts, stats, last)
    }
}

/// [`JsonLines`] writes each line whole and then flushes: the flush hands it to the hub.
struct LineSplitter {
    hub: Arc<Hub>,
    line: Vec<u8>,
}

impl io::Write for LineSplitter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.hub.broadcast(std::mem::take(&mut self.line).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::sample_attempt,
        recording::parse_line,
        sink::json::wire::{Line, UmountLine},
    };

    fn line_of(bytes: &[u8]) -> Line {
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        parse_line(&bytes[..bytes.len() - 1]).unwrap()
    }

    fn attempt(id: u64) -> UmountAttempt {
        let mut a = sample_attempt(b"/mnt", Some(b"/mnt"), -16, 0);
        a.id = id;
        a
    }

    /// What the client's writer would write now, as `header`, ids and `lost N`.
    fn written(client: &mut Subscription) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        while let Some(Some(lines)) = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::ZERO, client.next())
                .await
                .ok()
        }) {
            seen.extend(
                lines
                    .split_inclusive(|&b| b == b'\n')
                    .map(|line| match line_of(line) {
                        Line::Header(_) => "header".to_string(),
                        Line::Umount(u) => u.id.to_string(),
                        Line::Lost(l) => format!("lost {}", l.lines),
                        other => panic!("unexpected {other:?}"),
                    }),
            );
        }
        seen
    }

    #[test]
    fn a_full_queue_loses_lines_for_its_client_only_and_says_how_many_in_their_place() {
        let header = crate::sink::json::header_line("h", "6.1", "fentry", SystemTime::UNIX_EPOCH);
        let counts = ClientCounts::default();
        let hub = Hub::new(&header, counts.clone());
        let mut slow = hub.join();
        let mut fast = hub.join();
        assert_eq!(counts.connected.get(), 2);
        let mut sink = ToClients::new(hub.clone());
        let total = QUEUE_LINES as u64 + 10;
        assert_eq!(written(&mut fast), ["header"]);
        for id in 1..=total {
            sink.umount(&attempt(id)).unwrap();
            // The fast client reads as it comes.
            assert_eq!(written(&mut fast), [id.to_string()]);
        }
        // The slow one had room for the header and QUEUE_LINES - 1 lines: 11 were lost.
        assert_eq!(counts.lines_lost.get(), 11);
        let got = written(&mut slow);
        assert_eq!(got.len(), QUEUE_LINES);
        assert_eq!(got[0], "header");
        assert_eq!(got[QUEUE_LINES - 1], (QUEUE_LINES as u64 - 1).to_string());
        // It reads again: the next line comes after a `lost` line for the 11.
        sink.umount(&attempt(total + 1)).unwrap();
        assert_eq!(
            written(&mut slow),
            ["lost 11".to_string(), (total + 1).to_string()]
        );
        assert_eq!(written(&mut fast), [(total + 1).to_string()]);
        assert_eq!(counts.lines_lost.get(), 11, "nothing lost since");
    }

    #[test]
    fn lines_lost_at_the_end_are_told_after_the_queue() {
        let counts = ClientCounts::default();
        let hub = Hub::new("{\"v\":1,\"type\":\"header\",\"busyprobe\":\"0\",\"host\":\"h\",\"kernel\":\"k\",\"probe_mode\":\"fentry\",\"started\":\"x\"}", counts.clone());
        let mut slow = hub.join();
        let mut sink = ToClients::new(hub.clone());
        for id in 1..=QUEUE_LINES as u64 + 2 {
            sink.umount(&attempt(id)).unwrap();
        }
        hub.close();
        assert_eq!(counts.connected.get(), 0);
        let got = written(&mut slow);
        assert_eq!(got.len(), QUEUE_LINES + 1, "the queue, then the lost line");
        assert_eq!(got[QUEUE_LINES], "lost 3");
        assert_eq!(written(&mut slow), Vec::<String>::new(), "and then nothing");
    }

    #[test]
    fn a_client_gone_is_forgotten() {
        let counts = ClientCounts::default();
        let hub = Hub::new("{}", counts.clone());
        let gone = hub.join();
        let mut staying = hub.join();
        drop(gone);
        let mut sink = ToClients::new(hub.clone());
        sink.umount(&attempt(7)).unwrap();
        assert_eq!(counts.connected.get(), 1);
        assert_eq!(counts.lines_lost.get(), 0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let both = runtime.block_on(staying.next()).unwrap();
        let (first, line) = both.split_at(3);
        assert_eq!(first, b"{}\n", "one write: the header and the line");
        let Line::Umount(u) = line_of(line) else {
            panic!("not an umount line")
        };
        assert_eq!(*u, UmountLine::new(&attempt(7)));
    }
}
