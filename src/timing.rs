//! Every timing constant of warpgate in one place, each with the reason for its value, grouped
//! by the layer that uses it. Waits that belong to a protocol's own arithmetic stay beside it:
//! the STUN retransmission schedules ([`crate::stun::Timing`]), nat-info's `--timeout` and
//! connect's `--timeout` (the user's).

use std::time::Duration;

// Links (TLS over TCP, QUIC over UDP).

/// TLS or QUIC handshake with one peer: a lossy path gets a few retransmissions.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The verifying round trip on a fresh link: a peer that cannot echo a few bytes in this long
/// is no path worth selecting.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// The listener waits this long for the connector to select (or drop) a verified link; the
/// connector's cascade may be busy with other attempts meanwhile.
pub const SELECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A selected link waits this long for the listener's driver to take it (a `-k` transfer in
/// progress, a driver that takes no more), then the connector is told the listener is busy:
/// it learns within its wait for the selection's confirmation ([`VERIFY_TIMEOUT`]) and has
/// sent nothing but the selection meanwhile. A driver that takes links takes them in
/// microseconds.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);
/// Closing a link politely (flushing, telling the peer) never holds up exit longer than this.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// A close on shutdown: nothing is left to deliver, only the notice, so a peer that never
/// acknowledges holds the process up this long at most.
pub const SHUTDOWN_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// After SIGINT/SIGTERM the drivers get this long to close their links before they are
/// dropped: [`SHUTDOWN_CLOSE_TIMEOUT`] plus a little for the listener's notices.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// A closing QUIC link's endpoint lingers this long so its CONNECTION_CLOSE leaves, instead of
/// waiting out the draining period (3 PTO).
pub const QUIC_CLOSE_LINGER: Duration = Duration::from_millis(20);
/// On shutdown, the TCP link's stream resets get this long to go out ahead of the GOAWAY,
/// which drops whatever h2 still has queued.
pub const RESET_FLUSH: Duration = Duration::from_millis(100);
/// A QUIC peer silent this long is gone: about as soon as TCP keep-alive notices the same.
pub const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC keep-alive: well under the idle timeout and under the ~30 s NAT mapping lifetime.
pub const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(4);
/// TCP keep-alive starts after this much idle time and probes at [`TCP_KEEPALIVE_INTERVAL`]
/// (3 probes): a silently vanished peer is noticed in about 11 s, in line with QUIC.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Sent data unacknowledged this long means the connection is dead (TCP_USER_TIMEOUT).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

// UDP forwarding (`listen --forward-udp`, `connect --local-udp`).

/// A UDP flow with no datagram either way for this long is forgotten (its listener-side socket
/// closed), unless `--udp-idle` says otherwise: above WireGuard's 25 s persistent keepalive and
/// the gaps of games and VoIP, and about what NATs keep an idle UDP mapping (Linux conntrack:
/// 30 s unanswered, 120 s answered), so a flow outlives no mapping by much.
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(60);

// Resuming a file transfer (`crate::resume`).

/// A receiver that offered a partial file waits this long for the sender's verdict, beyond the
/// sender's hashing allowance ([`RESUME_HASH_FLOOR`]); a listener waits as long for the stream
/// of a connector that hashes before it writes. A sender answers as soon as it has hashed, so
/// only a sender that is gone or stuck waits this out: about a handshake's worth.
pub const RESUME_VERDICT_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest a sender is assumed to read and hash the offered bytes, in bytes per second:
/// a spinning disk or a small board without SHA instructions manages ~100 MB/s (sha2 with
/// SHA-NI did ~650 MB/s on a busy 2-core dev VM); half of the slow case leaves room for a
/// busier machine.
pub const RESUME_HASH_FLOOR: u64 = 50_000_000;

// Traversal: the cascade, its strategies and the rendezvous.

/// The punch phase (and so signalling) starts this long after `direct`: a peer reachable
/// directly usually answers within it and costs no signalling at all.
pub const PUNCH_PHASE_OFFSET: Duration = Duration::from_millis(150);
/// Gap between successive direct candidates (happy eyeballs, RFC 8305's 250 ms scaled down to
/// the few candidates an address carries).
pub const CANDIDATE_STAGGER: Duration = Duration::from_millis(25);
/// One TCP connect to one candidate, by either side: beyond it the SYN is lost for good.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between the answer's arrival and both sides firing: scheduling jitter and
/// the difference between the two sides' round-trip measurements. More on a slow signalling
/// path (see [`FIRE_MARGIN`]).
pub const FIRE_IN: Duration = Duration::from_millis(20);
/// Added to half the measured signalling round trip when that decides the fire delay: the two
/// sides measure over different messages, so their halves differ by a few milliseconds.
pub const FIRE_MARGIN: Duration = Duration::from_millis(10);
/// The connector waits this long for the answer once its offer was acknowledged: the listener
/// only has to prepare its kit (STUN gives up within 0.5 s).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A listener's rendezvous closes its sockets after this: the punch window and handshakes
/// fit, and a flood of offers holds sockets only this long.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(20);
/// A listener tries the brokers again this long after none of them answered.
pub const SIGNAL_RESTART_PAUSE: Duration = Duration::from_secs(15);
/// The least time the slower of UDP and TCP STUN gets for a kit after the faster answered.
pub const KIT_STUN_GRACE: Duration = Duration::from_millis(100);
/// Gap between rounds of UDP punch probes: 20 rounds a second keep a hole open without
/// flooding.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long punching goes on (UDP probes, TCP connect tries): room for a peer that fires late
/// or loses many probes, well inside [`SESSION_LIFETIME`].
pub const PUNCH_WINDOW: Duration = Duration::from_secs(8);
/// One simultaneous-open connect is kept in flight this long, the whole window, and a lost SYN
/// is re-sent by the kernel (at 1, 3 and 7 s) with the same sequence number. A fresh socket
/// would send a new initial sequence number, which Linux conntrack on a NAT that already saw
/// the first SYN pair judges out of window: that SYN leaves the NAT untranslated and the punch
/// fails for good. Lab, 5% loss on one port-restricted router: 23 of 30 punches with a new
/// try every 800 ms, 30 of 30 with one try kept. A refused try still goes again at once.
pub const PUNCH_TRY_TIMEOUT: Duration = PUNCH_WINDOW;
/// Pause after a refused or failed simultaneous-open try.
pub const PUNCH_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// `random_probe`'s easy side sends one probe to a random port of the hard side's public IP
/// this often: about 330 a second, "a few hundred at most" (DESIGN §3), so the spray stays
/// below what flood and port-scan rules react to, and its 2048 probes take about 6 s, inside
/// [`PUNCH_WINDOW`]. The hard side re-sends from its sockets at this pace too.
pub const RANDOM_PROBE_INTERVAL: Duration = Duration::from_millis(3);
/// `random_probe`'s hard side opens a socket (and sends its first probe) this often until its
/// 256 are open: a quarter of a second, so the easy side's early probes already find most of
/// the mappings. The probes all go to one address, so they look like one busy client, not a
/// scan, and 256 small datagrams in 256 ms are nothing to a NAT.
pub const RANDOM_PROBE_OPEN_INTERVAL: Duration = Duration::from_millis(1);
/// The relay waits this long after the punch fires when `random_probe` is tried: with 256
/// sockets and a probe every [`RANDOM_PROBE_INTERVAL`], the model says the probe has hit by 4 s
/// in about 99 % of the tries that can hit at all (the tests compute it). The lab's tail is
/// longer (5 of 80 setups over 4 s, 1 over 5 s; a relay that won at 4 s took 2 of 20 links in a
/// loaded full lab run), and a relayed link cannot move to a `random_probe` path later, so the
/// relay waits 5 s: it takes over only when the probe cannot work, at the cost of ~5 s once for
/// such a pair.
pub const RELAY_GRACE_RANDOM_PROBE: Duration = Duration::from_secs(5);
/// A QUIC connection from a source the probing has not heard (yet) waits this long for
/// `random_probe`'s spray to read the probe answer that came just before it on the same path,
/// so it is handed to `random_probe` rather than to `udp_punch`: reading a queued datagram takes
/// microseconds, this allows for a busy machine.
pub const SPRAYED_ARRIVAL_WAIT: Duration = Duration::from_millis(50);
/// Pause after a failed local accept (out of file descriptors, say) before the next one.
pub const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

// Signalling.

/// Messages older than this (by the sender's timestamp) are stale, so the replay set only has
/// to remember ids this long; brokers may hold a message back for a while.
pub const SIGNAL_MAX_AGE: Duration = Duration::from_secs(120);
/// Messages stamped further than this in the future are stale too (clock skew allowance).
pub const SIGNAL_MAX_FUTURE: Duration = Duration::from_secs(30);
/// How long starting signalling waits for the first broker to accept our subscription.
pub const SIGNAL_START_TIMEOUT: Duration = Duration::from_secs(10);
/// First retransmission of a message after this long without an ack: a few broker round trips.
pub const SIGNAL_INITIAL_RTO: Duration = Duration::from_millis(400);
/// Retransmission backoff doubles up to this.
pub const SIGNAL_MAX_RTO: Duration = Duration::from_secs(3);
/// A message not acknowledged within this is given up.
pub const SIGNAL_SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// A duplicate is acknowledged again at most this often.
pub const SIGNAL_REACK_INTERVAL: Duration = Duration::from_millis(200);
/// TCP + MQTT CONNECT to one broker must complete within this.
pub const MQTT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// MQTT keep-alive: a silent broker is noticed after about 1.5× this.
pub const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Reconnect backoff after a broker failure, doubling between these.
pub const MQTT_RECONNECT_MIN: Duration = Duration::from_millis(250);
pub const MQTT_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A broker connection that lasted this long was healthy: its loss resets the reconnect backoff,
/// and a loss to a packet above our limit (MQTT 3.1.1) reconnects at once. One that keeps dying
/// younger (a broker that sends an oversized retained message on every subscribe) backs off.
pub const MQTT_HEALTHY_AFTER: Duration = Duration::from_secs(5);

// Discovery (nat-info, the quick look, the cache) and server checks.

/// Cached NAT facts are trusted this long on an unchanged network.
pub const NAT_CACHE_MAX_AGE: Duration = Duration::from_secs(3600);
/// Resolving one server's name.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_millis(1000);
/// One STUN-over-TCP binding, connect included: as long as a UDP transaction's schedule.
pub const STUN_TCP_TIMEOUT: Duration = Duration::from_millis(1250);
/// nat-info's phase B (mapping tests, allocation series, hairpinning): the filtering tests'
/// schedule plus a little; under loss the tail of the chain is cut short.
pub const PHASE_B_BUDGET: Duration = Duration::from_millis(1600);
/// How long to wait for a hairpinned packet.
pub const HAIRPIN_WAIT: Duration = Duration::from_millis(400);
/// Gap between the first sends of the port-allocation series, so the NAT sees them in order.
pub const ALLOCATION_STAGGER: Duration = Duration::from_millis(10);
/// A TURN allocation made to check a relay server.
pub const TURN_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// An MQTT broker's connect and publish-to-self round trip, when checking it.
pub const MQTT_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// A name registry's `GET /v1/health`, when checking it: like the other server checks, about
/// as long as discovery itself, so nat-info is not held up by a dead registry.
pub const REGISTRY_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// The UPnP search (and then the external-address request).
pub const UPNP_TIMEOUT: Duration = Duration::from_millis(1000);
/// NAT-PMP's first retransmission (RFC 6886 §3.1 starts at 250 ms); nat-info sends twice and
/// gives up at 3×.
pub const NATPMP_RTO: Duration = Duration::from_millis(250);

// Port mapping on the home gateway (`listen`, see `portmap`).

/// The lease asked for: renewals (at half of it) are rare, and a mapping a crashed listener
/// could not delete closes within the hour.
pub const PORTMAP_LEASE: Duration = Duration::from_secs(3600);
/// A punching kit's mapping lives for one connection: a short lease, renewed at half, so one
/// a killed process could not delete closes within minutes.
pub const KIT_PORTMAP_LEASE: Duration = Duration::from_secs(120);
/// A punching kit waits at most this long (from its start) for its port mapping, and only
/// when the gateway has answered by the time STUN is done: the offer is not held up by a
/// gateway that says nothing.
pub const KIT_PORTMAP_WAIT: Duration = Duration::from_millis(300);
/// `listen` waits at most this long (from the mapping's start, beside the quick look) for a
/// gateway protocol to answer before printing its address: a LAN gateway answers NAT-PMP in
/// milliseconds and an SSDP search in a few; one that says nothing (and a router without
/// either, which mostly refuses at once) delays the listener this much at most.
pub const PORTMAP_WAIT: Duration = Duration::from_millis(300);
/// Once a protocol answered, `listen` waits up to this long (from the start) for the mapping
/// itself: the gateway is there and a mapping in the printed address saves every peer a
/// signalled rendezvous, while a loaded router's NAT-PMP round trips and UPnP's HTTP
/// requests took up to ~450 ms in the lab. A mapping that lands later is still kept (and
/// published by `--name`).
pub const PORTMAP_MAPPED_WAIT: Duration = Duration::from_millis(1500);
/// One UPnP SOAP request (external address, add, delete): a LAN router answers in
/// milliseconds; a busy one gets a couple of seconds (igd-next bounds only the search).
pub const PORTMAP_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Deleting the mappings on exit: inside [`SHUTDOWN_GRACE`], so Ctrl-C still deletes them,
/// and enough for two NAT-PMP transmissions (250 + 500 ms) or a few SOAP round trips.
pub const PORTMAP_DELETE_TIMEOUT: Duration = Duration::from_millis(1000);
/// A failed renewal is retried after this, doubling ...
pub const PORTMAP_RETRY_MIN: Duration = Duration::from_secs(30);
/// ... up to this (and never later than halfway to the lease's end): a rebooting router is
/// back within minutes.
pub const PORTMAP_RETRY_MAX: Duration = Duration::from_secs(300);

// The name registry (`registry serve`).

/// An expired name stays reserved to its owner this long (DESIGN §8): an owner whose machine
/// was off for a week's holiday still finds the name theirs. `--grace` overrides it (tests).
pub const NAME_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Records stamped further than this in the future are refused: generous clock skew, yet a
/// record cannot be made to outlive its owner's later ones by post-dating it.
pub const NAME_MAX_FUTURE: Duration = Duration::from_secs(300);
/// A client has this long to send a request's headers (and an idle keep-alive connection this
/// long to start its next request): a real client sends them in one round trip; a slowloris
/// holds a connection no longer.
pub const REGISTRY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Reading a request's body (at most 16 KiB), for the same reason.
pub const REGISTRY_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed (gracefully, between requests) after this long whatever it does, so
/// no client holds one of the capped connection slots for good.
pub const REGISTRY_CONN_LIFETIME: Duration = Duration::from_secs(60);
/// On SIGINT/SIGTERM, requests in flight get this long to finish before their connections are
/// cut: well inside [`SHUTDOWN_GRACE`], and far above a write's commit time.
pub const REGISTRY_DRAIN: Duration = Duration::from_secs(1);
/// Rows of names past their grace are deleted this often; until then they only take disk
/// space (every rule already treats them as free).
pub const REGISTRY_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

// Names (registries, `listen --name`).

/// One HTTP exchange with a name registry (resolve, connect, request, response): a few round
/// trips across the internet with room for one lost SYN (1 s retransmission). A lookup asks
/// every registry at once, so this bounds how long a dead one delays `connect NAME`.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);
/// `listen --name` re-checks its address this often (interface addresses, brokers, NAT facts)
/// and republishes the record when it changed: a laptop that moved is found again within a
/// minute, for one local computation a minute.
pub const NAME_ADDRESS_CHECK: Duration = Duration::from_secs(60);
/// `listen --name` tries again this long after a publication no majority of registries
/// accepted: often enough to recover soon from a registry restart, rare enough to stay well
/// inside a registry's write rate limit (30 a minute by default).
pub const NAME_RETRY: Duration = Duration::from_secs(60);

// The TURN relay (`relay`).

/// An allocation over UDP that hears nothing from its server in this long tries TCP instead:
/// a loopback or LAN server answers in milliseconds, a WAN one in a few hundred.
pub const TURN_UDP_SILENCE: Duration = Duration::from_millis(1500);
/// Making an allocation (resolving, the 401 round trip, the UDP silence and TCP) takes this
/// long at most before it is given up.
pub const TURN_ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);
/// A permission or channel binding is answered within this, or given up (one request with
/// the crate's retransmissions over a lossy path).
pub const TURN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `close()` waits this long for the server to confirm the deallocation; exit is never held
/// up longer.
pub const TURN_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// UDP gets this head start over TCP when allocating: past it TCP is tried beside UDP (UDP may
/// be blocked), so a UDP-blocked host has its relay in a few hundred ms, not after the silence.
pub const TURN_TCP_HEAD_START: Duration = Duration::from_millis(250);
/// A punching kit waits at most this long for its TURN allocation; past it the offer or answer
/// goes without a relayed candidate (a dead TURN server must not hold up the direct strategies).
pub const KIT_RELAY_WAIT: Duration = Duration::from_millis(1000);
/// A relayed link is made at once but tried (and so selected) only this long after the punch
/// fires, so a direct link that is about to come up wins: a cone↔cone punch takes tens of ms.
pub const RELAY_GRACE: Duration = Duration::from_millis(300);
/// Behind a relayed link, punching goes on for this long after the rendezvous fired ...
pub const UPGRADE_PROBING: Duration = Duration::from_secs(30);
/// ... at this pace once the first punch window is over (a hole that opens late is found
/// within half a second, at 2 probes a second per candidate) ...
pub const UPGRADE_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// ... then again every minute for the life of the link ...
pub const UPGRADE_RETRY_EVERY: Duration = Duration::from_secs(60);
/// ... a short burst each time at the punching pace.
pub const UPGRADE_RETRY_WINDOW: Duration = Duration::from_secs(2);
