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

/// One connected client, as the writers see it.
struct Client {
    queue: mpsc::Sender<SharedLine>,
    /// Lines lost since it last got one, and when the first of them was written.
    lost: Option<(SystemTime, u64)>,
}

impl Client {
    /// Queues `line`, or counts it lost. False when the client is gone.
    fn offer(&mut self, line: &SharedLine, counts: &ClientCounts) -> bool {
        if let Some((since, lines)) = self.lost {
            match self.queue.try_send(lost_line(since, lines)) {
                Ok(()) => self.lost = None,
                Err(TrySendError::Full(_)) => return self.lose(counts),
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.queue.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => self.lose(counts),
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn lose(&mut self, counts: &ClientCounts) -> bool {
        counts.lines_lost.inc();
        self.lost.get_or_insert((SystemTime::now(), 0)).1 += 1;
        true
    }
}

/// The `lost` line, with its newline.
fn lost_line(since: SystemTime, lines: u64) -> SharedLine {
    let mut line = serde_json::to_vec(&LostLine::slow_client(since, lines))
        .expect("serialising plain data cannot fail");
    line.push(b'\n');
    line.into()
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

    /// A new client: its queue, which starts with the header. None once the hub is closed.
    fn join(&self) -> mpsc::Receiver<SharedLine> {
        let (queue, lines) = mpsc::channel(QUEUE_LINES);
        queue
            .try_send(self.header.clone())
            .expect("a new queue has room");
        self.clients().push(Client { queue, lost: None });
        self.counts.connected.inc();
        lines
    }

    /// Offers `line` to every client; forgets the ones that are gone.
    fn broadcast(&self, line: SharedLine) {
        let mut clients = self.clients();
        let before = clients.len();
        clients.retain_mut(|c| c.offer(&line, &self.counts));
        self.counts
            .connected
            .dec_by((before - clients.len()) as i64);
    }

    /// Lets every client go once its queue is written (the stream has ended).
    pub fn close(&self) {
        let mut clients = self.clients();
        self.counts.connected.dec_by(clients.len() as i64);
        clients.clear();
    }

    fn clients(&self) -> MutexGuard<'_, Vec<Client>> {
        // A panic while holding it leaves a list that is still a list.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
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

    fn ids(lines: &mut mpsc::Receiver<SharedLine>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = lines.try_recv() {
            seen.push(match line_of(&line) {
                Line::Header(_) => "header".to_string(),
                Line::Umount(u) => u.id.to_string(),
                Line::Lost(l) => format!("lost {}", l.lines),
                other => panic!("unexpected {other:?}"),
            });
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
        for id in 1..=total {
            sink.umount(&attempt(id)).unwrap();
            // The fast client reads as it comes.
            let got = ids(&mut fast);
            let want = if id == 1 {
                vec!["header".to_string(), "1".into()]
            } else {
                vec![id.to_string()]
            };
            assert_eq!(got, want);
        }
        // The slow one had the header and QUEUE_LINES - 1 lines; 11 were lost.
        assert_eq!(counts.lines_lost.get(), 11);
        let got = ids(&mut slow);
        assert_eq!(got.len(), QUEUE_LINES);
        assert_eq!(got[0], "header");
        assert_eq!(got[QUEUE_LINES - 1], (QUEUE_LINES as u64 - 1).to_string());
        // It reads again: the next line comes after a `lost` line for the 11.
        sink.umount(&attempt(total + 1)).unwrap();
        assert_eq!(
            ids(&mut slow),
            ["lost 11".to_string(), (total + 1).to_string()]
        );
        assert_eq!(ids(&mut fast), [(total + 1).to_string()]);
        assert_eq!(counts.lines_lost.get(), 11, "nothing lost since");
    }

    #[test]
    fn a_client_gone_is_forgotten_and_closing_lets_the_rest_go() {
        let counts = ClientCounts::default();
        let hub = Hub::new("{}", counts.clone());
        let gone = hub.join();
        let mut staying = hub.join();
        drop(gone);
        let mut sink = ToClients::new(hub.clone());
        sink.umount(&attempt(7)).unwrap();
        assert_eq!(counts.connected.get(), 1);
        assert_eq!(counts.lines_lost.get(), 0);
        let first = staying.try_recv().unwrap();
        assert_eq!(&*first, b"{}\n");
        let Line::Umount(u) = line_of(&staying.try_recv().unwrap()) else {
            panic!("not an umount line")
        };
        assert_eq!(*u, UmountLine::new(&attempt(7)));
        hub.close();
        assert_eq!(counts.connected.get(), 0);
        assert!(matches!(
            staying.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
