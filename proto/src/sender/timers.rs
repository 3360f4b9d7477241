//! The sender's timers: each deadline computed from the state in one place
//! ([`Sender::deadline`]), and acted on in one place ([`Sender::handle_timeout`]).

use std::time::Instant;

use super::{Sender, State, To, COMPANION_EVERY, END_REPEAT, LINGER_MAX, LINGER_QUIET};

/// The timers of a [`Sender`]; [`Sender::deadline`] computes each from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Stream `n`'s partial line has waited `flush_after`.
    Flush(u8),
    /// Nothing was sent for `heartbeat`.
    Heartbeat,
    /// Lingering: END is due again.
    EndRepeat,
    /// Lingering: done (quiet for [`LINGER_QUIET`], or [`LINGER_MAX`] passed).
    Linger,
    /// The netconsole's address is told again (every [`COMPANION_EVERY`], busy or
    /// not: a receiver that missed it, or started later, learns it soon).
    Companion,
}

impl Timer {
    /// Every timer, in the order due ones are handled.
    pub const VALUES: [Timer; 6] = [
        Timer::Flush(0),
        Timer::Flush(1),
        Timer::Heartbeat,
        Timer::EndRepeat,
        Timer::Linger,
        Timer::Companion,
    ];
}

impl Sender {
    /// The earliest deadline, if any: call [`Sender::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Timer::VALUES.iter().filter_map(|&t| self.deadline(t)).min()
    }

    /// When `timer` is due, computed from the state (`None`: not armed).
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        match (timer, &self.state) {
            (Timer::Flush(n), State::Open) => {
                let s = self.streams.get(usize::from(n))?;
                s.lines
                    .has_pending()
                    .then(|| s.last_input + self.config.flush_after)
            }
            (Timer::Heartbeat, State::Open) => self.config.heartbeat.map(|hb| self.last_sent + hb),
            (Timer::EndRepeat, State::Lingering { last_end, .. }) => Some(*last_end + END_REPEAT),
            (
                Timer::Linger,
                State::Lingering {
                    since, last_nack, ..
                },
            ) => Some((*last_nack + LINGER_QUIET).min(*since + LINGER_MAX)),
            (Timer::Companion, State::Open) => self.companion.and(self.companion_due),
            _ => None,
        }
    }

    /// The monotonic time `now` (and the wall clock): dates what was read and sent
    /// since the last call, then does whatever is due. Call it once per turn, after
    /// the turn's input was handled and sent.
    pub fn handle_timeout(&mut self, now: Instant, wall_us: u64) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        self.stamp(now);
        for timer in Timer::VALUES {
            if self.deadline(timer).is_some_and(|d| d <= now) {
                self.fire(timer, now, wall_us);
                self.stamp(now);
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant, wall_us: u64) {
        match timer {
            Timer::Flush(n) => {
                let n = usize::from(n);
                if let Some(mut s) = self.take_stream(n) {
                    s.lines
                        .flush_partial(|flags, text| self.push(flags, text, wall_us));
                    self.streams[n] = s;
                    self.ship(wall_us);
                }
            }
            Timer::Heartbeat => {
                self.framer.heartbeat(wall_us, &mut self.outbox);
                self.announce_companion(wall_us);
                self.ship(wall_us);
            }
            Timer::EndRepeat => {
                if let State::Lingering { last_end, end, .. } = &mut self.state {
                    *last_end = now;
                    self.queue.push_copy(To::All, end);
                }
            }
            Timer::Linger => self.state = State::Closed,
            Timer::Companion => {
                self.companion_due = Some(now + COMPANION_EVERY);
                self.announce_companion(wall_us);
                self.ship(wall_us);
            }
        }
    }

    /// `last_sent` and `last_input` = `now` for what happened since the last call.
    fn stamp(&mut self, now: Instant) {
        if std::mem::take(&mut self.shipped) {
            self.last_sent = now;
        }
        for s in &mut self.streams {
            if std::mem::take(&mut s.arrived) {
                s.last_input = now;
            }
        }
    }
}
