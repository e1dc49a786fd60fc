//! TCP simultaneous open, sans-IO: the schedule of connect tries to one peer candidate. From
//! the agreed instant a [`Dialer`] asks for a connect; a try that neither connects nor fails
//! within [`PUNCH_TRY_TIMEOUT`] is abandoned (the whole window: the kernel re-sends a lost SYN
//! with the same sequence number, which NATs accept, where a new socket's would not be);
//! after a failed or abandoned try it pauses [`PUNCH_RETRY_PAUSE`]
//! and asks again, until a pause would reach the end of [`PUNCH_WINDOW`](crate::timing::PUNCH_WINDOW). Then it gives up with
//! a message naming the number of tries and the last error.
//!
//! Neighbours: `tcp_punch` drives a dialer with real connects from the kit's shared TCP port.

use crate::timing::{PUNCH_RETRY_PAUSE, PUNCH_TRY_TIMEOUT};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the driver is to do with its connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a connect now (a fresh socket on the shared port).
    Connect,
    /// Drop the connect in flight: its time is up.
    Abandon,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connect in flight succeeded, on this try (counted from 1).
    Connected { tries: u32 },
    /// The window is over; the message says how many tries failed and how the last did.
    GaveUp(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the fire instant.
    Waiting,
    /// A connect is in flight until it answers or `until`.
    Trying {
        until: Instant,
    },
    /// Between tries.
    Pausing {
        until: Instant,
    },
    Done,
}

pub struct Dialer {
    fire_at: Instant,
    window: Duration,
    deadline: Instant,
    state: State,
    tries: u32,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Dialer {
    /// Tries from `fire_at` for `window`.
    pub fn new(fire_at: Instant, window: Duration) -> Self {
        Self {
            fire_at,
            window,
            deadline: fire_at + window,
            state: State::Waiting,
            tries: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Tries started so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Starts the first try at the fire instant, abandons a try whose time is up, and starts
    /// the next one after a pause.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waiting if now >= self.fire_at => self.start(now),
            State::Trying { until } if now >= until => {
                self.actions.push_back(Action::Abandon);
                self.failed(now, "no answer");
            }
            State::Pausing { until } if now >= until => self.start(now),
            _ => {}
        }
    }

    /// The connect in flight made a connection.
    pub fn handle_connected(&mut self, _now: Instant) {
        if let State::Trying { .. } = self.state {
            self.state = State::Done;
            self.events
                .push_back(Event::Connected { tries: self.tries });
        }
    }

    /// The connect in flight failed with `error` (refused, unreachable, …).
    pub fn handle_failed(&mut self, now: Instant, error: &str) {
        if let State::Trying { .. } = self.state {
            self.failed(now, error);
        }
    }

    fn start(&mut self, now: Instant) {
        self.tries += 1;
        self.actions.push_back(Action::Connect);
        self.state = State::Trying {
            until: (now + PUNCH_TRY_TIMEOUT).min(self.deadline),
        };
    }

    fn failed(&mut self, now: Instant, error: &str) {
        if now + PUNCH_RETRY_PAUSE >= self.deadline {
            self.state = State::Done;
            let tries = match self.tries {
                1 => "1 simultaneous-open try".to_string(),
                n => format!("{n} simultaneous-open tries"),
            };
            self.events.push_back(Event::GaveUp(format!(
                "{tries} over {}s failed, the last with: {error}",
                self.window.as_secs()
            )));
        } else {
            self.state = State::Pausing {
                until: now + PUNCH_RETRY_PAUSE,
            };
        }
    }

    /// When [`Dialer::handle_timeout`] next has work to do; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting => Some(self.fire_at),
            State::Trying { until } | State::Pausing { until } => Some(until),
            State::Done => None,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::PUNCH_WINDOW;

    /// Drives a dialer whose every try ends `answer` after it started: `Some(error)` fails,
    /// `None` is never answered. Returns the start times (ms after fire) and the final event.
    fn schedule(answer: Option<(Duration, &str)>) -> (Vec<u128>, Event, u128) {
        let fire = Instant::now() + Duration::from_millis(30);
        let mut d = Dialer::new(fire, PUNCH_WINDOW);
        let mut starts = Vec::new();
        let mut now = fire - Duration::from_millis(30);
        loop {
            let ms = |t: Instant| t.saturating_duration_since(fire).as_millis();
            while let Some(action) = d.poll_action() {
                if action == Action::Connect {
                    starts.push(ms(now));
                }
            }
            if let Some(event) = d.poll_event() {
                return (starts, event, ms(now));
            }
            let timer = d.poll_timeout().unwrap();
            match answer {
                Some((after, error)) if matches!(d.state, State::Trying { .. }) => {
                    let at = now + after;
                    assert!(at < timer);
                    now = at;
                    d.handle_failed(now, error);
                }
                _ => {
                    assert!(timer >= now);
                    now = timer;
                    d.handle_timeout(now);
                }
            }
        }
    }

    #[test]
    fn an_unanswered_try_is_kept_for_the_whole_window() {
        let (starts, event, at) = schedule(None);
        assert_eq!(starts, vec![0]);
        assert_eq!(at, 8000);
        assert_eq!(
            event,
            Event::GaveUp(
                "1 simultaneous-open try over 8s failed, the last with: no answer".into()
            )
        );
    }

    #[test]
    fn refused_tries_go_again_after_the_pause() {
        // Refused 20 ms after each start: a try every 120 ms, the last at 7920 ms.
        let (starts, event, at) = schedule(Some((Duration::from_millis(20), "refused")));
        assert_eq!(starts.len(), 67);
        assert_eq!(starts[..3], [0, 120, 240]);
        assert_eq!(starts.last(), Some(&7920));
        assert_eq!(at, 7940);
        assert_eq!(
            event,
            Event::GaveUp(
                "67 simultaneous-open tries over 8s failed, the last with: refused".into()
            )
        );
    }

    #[test]
    fn a_connection_ends_the_tries() {
        let fire = Instant::now();
        let mut d = Dialer::new(fire, PUNCH_WINDOW);
        assert_eq!(d.poll_timeout(), Some(fire));
        d.handle_timeout(fire - Duration::from_millis(1));
        assert_eq!(d.poll_action(), None, "no try before the fire instant");
        d.handle_timeout(fire);
        assert_eq!(d.poll_action(), Some(Action::Connect));
        d.handle_failed(fire + Duration::from_millis(20), "refused");
        assert_eq!(d.poll_event(), None);
        d.handle_timeout(fire + Duration::from_millis(20) + PUNCH_RETRY_PAUSE);
        assert_eq!(d.poll_action(), Some(Action::Connect));
        d.handle_connected(fire + Duration::from_millis(850));
        assert_eq!(d.poll_event(), Some(Event::Connected { tries: 2 }));
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(fire + PUNCH_WINDOW);
        assert_eq!(d.poll_action(), None);
    }
}
