//! DEST names that do not resolve yet (`--kmsg`, early in boot): each is retried
//! every second on a thread of its own, so that a resolver that hangs never holds up
//! reading the kernel log. Until then the records wait in the resend ring; the
//! receiver asks for them once datagrams reach it.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use crate::cli::{self, Dest};
use crate::net::Sockets;

/// How often a name is looked up again.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// The names still being looked up.
pub(crate) struct Pending {
    found: Receiver<(usize, SocketAddr)>,
    names: Vec<(usize, String)>,
}

impl Pending {
    /// Starts a lookup thread per destination without an address; `None` when all
    /// have one.
    pub(crate) fn start(dests: &[Dest]) -> Option<Pending> {
        let (tx, found) = mpsc::channel();
        let mut names = Vec::new();
        for (index, dest) in dests.iter().enumerate().filter(|(_, d)| d.addr.is_none()) {
            eprintln!(
                "ncu-send: DEST {} does not resolve yet; trying again every second \
                 (what is read meanwhile waits in the resend ring)",
                dest.text
            );
            names.push((index, dest.text.clone()));
            let (tx, text) = (tx.clone(), dest.text.clone());
            std::thread::spawn(move || loop {
                if let Ok(Dest { addr: Some(a), .. }) = cli::resolve(&text) {
                    let _ = tx.send((index, a));
                    return;
                }
                std::thread::sleep(RETRY);
            });
        }
        (!names.is_empty()).then_some(Pending { found, names })
    }

    /// Opens the sockets of the names that resolved since, telling `opened` the
    /// index of each; true when none is left.
    pub(crate) fn poll(&mut self, sockets: &mut Sockets, mut opened: impl FnMut(usize)) -> bool {
        while let Ok((index, addr)) = self.found.try_recv() {
            let name = self.names.iter().find(|(i, _)| *i == index).map(|(_, n)| n);
            match sockets.resolved(index, addr) {
                Ok(()) => {
                    eprintln!(
                        "ncu-send: DEST {} resolved to {addr}",
                        name.map_or("?", String::as_str)
                    );
                    opened(index);
                }
                Err(e) => eprintln!("ncu-send: DEST {addr}: cannot open a UDP socket: {e}"),
            }
            self.names.retain(|(i, _)| *i != index);
        }
        self.names.is_empty()
    }
}
