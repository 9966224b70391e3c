//! One simulated user: connect, upgrade, join, then send on schedule and absorb deliveries.
//!
//! Each runtime thread runs many of these as local tasks sharing one read buffer, one scanner
//! and one report (`Ctx`), so the receive path needs no lock and no per-message allocation.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use chatrelay_wsclient::{self as ws, Header};
use memchr::memmem;
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at};

use crate::clock::{instant_at, now_ns, Go, Phase};
use crate::config::Scenario;
use crate::plan::Plan;
use crate::scan::{push_u64, write_text, Event, Scanner};
use crate::stats::{FailKind, SeqOutcome, SeqTracker, WorkerReport};
use crate::sysinfo;
use crate::tls::{self, HandshakeError, Wire};

mod storm;

/// Bytes asked of the kernel per read; big reads amortize the syscall over many frames.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per wake-up before yielding, so one flooded socket cannot starve its neighbours.
const READS_PER_WAKE: usize = 8;
/// Written bytes kept in the out buffer before compacting it.
const COMPACT_AT: usize = 64 * 1024;

/// What the tasks of one runtime thread share.
pub struct Ctx {
    pub plan: Arc<Plan>,
    pub report: RefCell<WorkerReport>,
    pub buf: RefCell<Vec<u8>>,
    pub scratch: RefCell<Vec<u8>>,
    pub scanner: Scanner,
    pub phase: watch::Receiver<Phase>,
}

impl Ctx {
    pub fn new(plan: Arc<Plan>, phase: watch::Receiver<Phase>) -> Ctx {
        let rooms = plan.room_slots as usize;
        let mut report = WorkerReport::new(rooms);
        if plan.storm.is_some() {
            report.storm = Some(crate::storm::stats::StormStats::new(rooms));
        }
        Ctx {
            plan,
            report: RefCell::new(report),
            buf: RefCell::new(vec![0; READ_CHUNK * 2]),
            scratch: RefCell::new(Vec::with_capacity(4096)),
            scanner: Scanner::default(),
            phase,
        }
    }

    fn fail(&self, kind: FailKind, detail: Option<String>) {
        let mut r = self.report.borrow_mut();
        kind.count(&mut r.counters);
        if let Some(d) = detail {
            r.note_failure(d);
        }
    }
}

/// Why a connection stopped early.
enum End {
    Io(io::Error),
    /// EOF or a close frame from the server (with its code, if any).
    Closed(Option<u16>),
    Protocol(&'static str),
    /// A reconnect-storm client that could not get back (already counted).
    Gone,
}

/// Runs client `id` from connect to close; every outcome lands in `ctx.report`.
pub async fn client(ctx: Rc<Ctx>, id: u64) {
    let plan = Arc::clone(&ctx.plan);
    let started = now_ns();
    let deadline_ns = (started + plan.connect_timeout_ns).min(plan.ramp_deadline_ns);
    let deadline = instant_at(deadline_ns);
    ctx.report.borrow_mut().counters.attempted += 1;

    let mut conn = match timeout_at(deadline, open(&ctx, id)).await {
        Err(_) => return ctx.fail(FailKind::Timeout, None),
        Ok(Err((kind, detail))) => return ctx.fail(kind, detail),
        Ok(Ok(c)) => c,
    };
    conn.queue_join();
    match conn.until_joined(deadline).await {
        Ok(()) => {}
        Err((kind, detail)) => return ctx.fail(kind, detail),
    }
    {
        let mut r = ctx.report.borrow_mut();
        r.counters.joined += 1;
        r.joined_per_room[conn.slot] += 1;
        conn.storm_joined_at_ramp(&mut r);
        r.connect_us
            .saturating_record(now_ns().saturating_sub(started) / 1000);
    }
    let end = match conn.until_go().await {
        Ok(Some(go)) => conn.run(go).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    conn.finish(end);
}

/// TCP connect from the client's source address, the TLS handshake for `wss://`, then the
/// HTTP upgrade.
async fn open(ctx: &Rc<Ctx>, id: u64) -> Result<Conn, (FailKind, Option<String>)> {
    let plan = &ctx.plan;
    let target = plan.target_of(id);
    let io_fail = |e: io::Error| {
        let kind = FailKind::from_io(&e);
        let detail = (kind == FailKind::Other).then(|| e.to_string());
        (kind, detail)
    };
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(io_fail)?;
    if let Some(ip) = plan.source_ip_of(id) {
        use std::os::fd::AsRawFd;
        sysinfo::set_bind_address_no_port(socket.as_raw_fd()).map_err(io_fail)?;
        socket.bind(SocketAddr::new(ip, 0)).map_err(io_fail)?;
    }
    let stream = socket.connect(target.addr).await.map_err(io_fail)?;
    stream.set_nodelay(true).map_err(io_fail)?;
    let access = &plan.access;
    let mut wire = match (&access.tls, target.tls) {
        (Some(config), true) => {
            let handshake_fail = |why: String| (FailKind::Handshake, Some(why));
            let name = tls::server_name(target).map_err(handshake_fail)?;
            let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(|e| handshake_fail(format!("TLS: {e}")))?;
            match tls::handshake(&stream, &mut conn).await {
                Ok(()) => {}
                Err(HandshakeError::Io(e)) => return Err(io_fail(e)),
                Err(HandshakeError::Eof) => return Err((FailKind::Reset, None)),
                Err(HandshakeError::Tls(e)) => {
                    return Err(handshake_fail(tls::describe(&e, &target.host_header)))
                }
            }
            Wire::tls(conn)
        }
        _ => Wire::Plain,
    };

    let key = ws::client_key(id);
    let token = access
        .tokens
        .for_client(id)
        .map_err(|e| (FailKind::Other, Some(e)))?;
    let request = crate::auth::upgrade_request(
        target,
        &key,
        token.as_deref(),
        access.token_in,
        access.origin.as_deref(),
    );
    write_all(&mut wire, &stream, &request)
        .await
        .map_err(io_fail)?;
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = read_some(&mut wire, &stream, &mut chunk)
            .await
            .map_err(io_fail)?;
        if n == 0 {
            return Err((FailKind::Reset, None));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = memmem::find(&head, b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            return Err((
                FailKind::Handshake,
                Some("response head over 16 KiB".into()),
            ));
        }
    };
    ws::check_upgrade_response(&head[..end], &key)
        .map_err(|e| (FailKind::Handshake, Some(format!("handshake: {e}"))))?;
    let mut conn = Conn::new(Rc::clone(ctx), stream, wire, id);
    // Frames that arrived in the same segment as the response head.
    conn.pending.extend_from_slice(&head[end..]);
    conn.wire.take_plaintext(&mut conn.pending);
    Ok(conn)
}

/// Writes all of `data` (the upgrade request), waiting for the socket as needed.
async fn write_all(wire: &mut Wire, stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() || wire.wants_write() {
        match wire.try_write(stream, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is there (at least one byte, or 0 at the end), waiting for the socket as needed.
async fn read_some(wire: &mut Wire, stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match wire.try_read(stream, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.readable().await?;
            }
            other => return other,
        }
    }
}

struct Conn {
    ctx: Rc<Ctx>,
    stream: TcpStream,
    /// Plain TCP or TLS: how bytes meet `stream`.
    wire: Wire,
    id: u64,
    room: usize,
    /// Index of this client's room in the per-room counters.
    slot: usize,
    mask: [u8; 4],
    /// An incomplete frame carried over to the next read.
    pending: Vec<u8>,
    /// A fragmented text message being reassembled.
    frag: Vec<u8>,
    frag_active: bool,
    out: Vec<u8>,
    out_pos: usize,
    /// Message frames in `out` not yet credited as sent.
    out_msgs: u64,
    tracker: SeqTracker,
    joined: bool,
    join_error: Option<String>,
    closed: Option<Option<u16>>,
    /// Messages this client has generated (the `n` in its stamps).
    n: u64,
    /// `--scenario reconnect-storm` only.
    storm: Option<storm::StormConn>,
}

impl Conn {
    fn new(ctx: Rc<Ctx>, stream: TcpStream, wire: Wire, id: u64) -> Conn {
        let room = ctx.plan.room_of(id);
        let slot = ctx.plan.room_slot_of(id);
        let m = (id as u32).wrapping_mul(0x9E37_79B9) | 1;
        let ctx_storm = ctx.plan.storm.map(|p| storm::StormConn::new(p.drops(id)));
        Conn {
            ctx,
            stream,
            wire,
            id,
            room,
            slot,
            mask: m.to_le_bytes(),
            pending: Vec::new(),
            frag: Vec::new(),
            frag_active: false,
            out: Vec::new(),
            out_pos: 0,
            out_msgs: 0,
            tracker: SeqTracker::default(),
            joined: false,
            join_error: None,
            closed: None,
            n: 0,
            storm: ctx_storm,
        }
    }

    fn queue_frame(&mut self, payload: &[u8]) {
        ws::put_client_frame(&mut self.out, ws::OP_TEXT, self.mask, payload);
    }

    fn queue_join(&mut self) {
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(b"{\"type\":\"join\",\"room\":\"room-");
        push_u64(&mut p, self.room as u64);
        p.extend_from_slice(b"\",\"username\":\"u");
        push_u64(&mut p, self.id);
        p.extend_from_slice(b"\"}");
        self.queue_frame(&p);
    }

    /// Queues one chat message stamped with its schedule slot.
    fn queue_message(&mut self, slot_ns: u64) {
        let ctx = Rc::clone(&self.ctx);
        let mut p = ctx.scratch.borrow_mut();
        p.clear();
        p.extend_from_slice(b"{\"type\":\"message\",\"text\":\"");
        write_text(&mut p, slot_ns, self.id, self.n, ctx.plan.payload);
        if ctx.plan.with_ref {
            // Unique per client and message: `r<client>-<n>`.
            p.extend_from_slice(b"\",\"ref\":\"r");
            push_u64(&mut p, self.id);
            p.push(b'-');
            push_u64(&mut p, self.n);
        }
        p.extend_from_slice(b"\"}");
        ws::put_client_frame(&mut self.out, ws::OP_TEXT, self.mask, &p);
        self.n += 1;
        self.out_msgs += 1;
    }

    /// Writes as much of `out` as the socket takes without blocking (for TLS also records
    /// rustls queued by itself, such as a key update's answer).
    fn flush(&mut self) -> Result<(), End> {
        while self.out_pos < self.out.len() || self.wire.wants_write() {
            match self.wire.try_write(&self.stream, &self.out[self.out_pos..]) {
                Ok(n) => {
                    self.out_pos += n;
                    self.ctx.report.borrow_mut().counters.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(End::Io(e)),
            }
        }
        if self.out_pos == self.out.len() {
            if self.out_msgs > 0 {
                let mut r = self.ctx.report.borrow_mut();
                r.counters.sent += self.out_msgs;
                r.sent_per_room[self.slot] += self.out_msgs;
                self.out_msgs = 0;
            }
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= COMPACT_AT {
            self.credit_written();
        }
        Ok(())
    }

    /// Credits the message frames wholly written so far and drops them from `out`.
    fn credit_written(&mut self) {
        let mut at = 0;
        let mut msgs = 0;
        while let Ok(Some(h)) = ws::parse_header(&self.out[at..self.out_pos]) {
            if at + h.frame_len() > self.out_pos {
                break;
            }
            let body = &self.out[at + h.header_len..at + h.frame_len()];
            let mut head = [0u8; 17];
            let k = body.len().min(17);
            head[..k].copy_from_slice(&body[..k]);
            ws::apply_mask(&mut head[..k], self.mask);
            if head[..k] == b"{\"type\":\"message\""[..] {
                msgs += 1;
            }
            at += h.frame_len();
        }
        self.out.drain(..at);
        self.out_pos -= at;
        self.out_msgs = self.out_msgs.saturating_sub(msgs);
        let mut r = self.ctx.report.borrow_mut();
        r.counters.sent += msgs;
        r.sent_per_room[self.slot] += msgs;
    }

    fn interest(&self) -> Interest {
        if self.out_pos < self.out.len() || self.wire.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Handles one readiness event: drain reads, then push out queued bytes (pongs included).
    async fn on_ready(&mut self) -> Result<(), End> {
        let ready = self.stream.ready(self.interest()).await.map_err(End::Io)?;
        if ready.is_readable() || ready.is_read_closed() {
            self.read_available()?;
        }
        self.flush()?;
        match self.closed {
            Some(code) => Err(End::Closed(code)),
            None => Ok(()),
        }
    }

    fn read_available(&mut self) -> Result<(), End> {
        let ctx = Rc::clone(&self.ctx);
        let mut buf = ctx.buf.borrow_mut();
        for _ in 0..READS_PER_WAKE {
            let p = self.pending.len();
            if buf.len() < p + READ_CHUNK {
                buf.resize(p + READ_CHUNK, 0);
            }
            buf[..p].copy_from_slice(&self.pending);
            match self
                .wire
                .try_read(&self.stream, &mut buf[p..p + READ_CHUNK])
            {
                Ok(0) => {
                    self.closed.get_or_insert(None);
                    return Ok(());
                }
                Ok(n) => {
                    // One clock read per batch: every frame in it had arrived by now.
                    let arrival = now_ns();
                    let total = p + n;
                    let used = {
                        let mut report = ctx.report.borrow_mut();
                        report.counters.bytes_in += n as u64;
                        self.process(&buf[..total], arrival, &mut report, &ctx.scanner)
                            .map_err(End::Protocol)?
                    };
                    self.pending.clear();
                    self.pending.extend_from_slice(&buf[used..total]);
                    if self.closed.is_some() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok(())
    }

    /// Consumes every complete frame in `data`; returns how many bytes were used.
    fn process(
        &mut self,
        data: &[u8],
        arrival: u64,
        report: &mut WorkerReport,
        scanner: &Scanner,
    ) -> Result<usize, &'static str> {
        let mut at = 0;
        while let Some(h) = ws::parse_header(&data[at..])? {
            let Header {
                header_len,
                payload_len,
                ..
            } = h;
            if at + h.frame_len() > data.len() {
                break;
            }
            if h.mask.is_some() {
                return Err("server frame is masked");
            }
            let payload = &data[at + header_len..at + header_len + payload_len];
            match h.opcode {
                ws::OP_TEXT | ws::OP_BINARY if h.fin && !self.frag_active => {
                    if h.opcode == ws::OP_TEXT {
                        self.on_text(payload, arrival, report, scanner);
                    } else {
                        report.counters.other_events += 1;
                    }
                }
                ws::OP_TEXT | ws::OP_BINARY if !self.frag_active => {
                    self.frag.clear();
                    self.frag.extend_from_slice(payload);
                    self.frag_active = true;
                }
                ws::OP_CONT if self.frag_active => {
                    self.frag.extend_from_slice(payload);
                    if h.fin {
                        self.frag_active = false;
                        let whole = std::mem::take(&mut self.frag);
                        self.on_text(&whole, arrival, report, scanner);
                        self.frag = whole;
                    }
                }
                ws::OP_PING => {
                    ws::put_client_frame(&mut self.out, ws::OP_PONG, self.mask, payload);
                }
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    ws::put_client_frame(
                        &mut self.out,
                        ws::OP_CLOSE,
                        self.mask,
                        payload.get(..2).unwrap_or(&[]),
                    );
                    self.closed = Some(code);
                    return Ok(at + h.frame_len());
                }
                _ => return Err("unexpected opcode or fragmentation"),
            }
            at += h.frame_len();
        }
        Ok(at)
    }

    /// The receive hot path: classify by byte scan, then count and time the delivery.
    fn on_text(&mut self, p: &[u8], arrival: u64, r: &mut WorkerReport, scanner: &Scanner) {
        match scanner.classify(p) {
            Event::Message { seq, stamp } => {
                if self.storm.is_some() && self.storm_discards(r) {
                    return;
                }
                let ours = stamp.filter(|s| {
                    s.t_ns >= self.ctx.plan.ramp_t0_ns && s.sender < self.ctx.plan.clients
                });
                let Some(stamp) = ours else {
                    r.counters.foreign += 1;
                    return;
                };
                let outcome = seq.map(|seq| self.tracker.observe(seq));
                let us = arrival.saturating_sub(stamp.t_ns) / 1000;
                if self.storm.is_some() {
                    self.storm_delivery(r, outcome, arrival, us);
                }
                match outcome {
                    None | Some(SeqOutcome::InOrder) => {}
                    Some(SeqOutcome::Gap(n)) => r.counters.seq_gaps += n,
                    Some(SeqOutcome::OutOfOrder) => r.counters.out_of_order += 1,
                    Some(SeqOutcome::Duplicate) => {
                        r.counters.duplicated += 1;
                        return;
                    }
                }
                r.counters.delivered += 1;
                r.latency_us.saturating_record(us);
                // --report-interval only: one map lookup per delivery (a handful of buckets).
                if let Some(bucket) = arrival.checked_div(self.ctx.plan.report_interval_ns) {
                    r.latency_by_interval
                        .entry(bucket)
                        .or_insert_with(crate::stats::new_histogram)
                        .saturating_record(us);
                }
            }
            Event::Joined => {
                if self.joined {
                    r.counters.churn_rejoins += 1;
                }
                if self.storm.is_some() {
                    self.storm_on_joined(p, arrival, r);
                }
                self.joined = true;
            }
            Event::Left => self.tracker.reset(),
            Event::Error(code) => {
                r.counters.server_errors += 1;
                let code = String::from_utf8_lossy(code);
                match r.error_codes.get_mut(code.as_ref()) {
                    Some(n) => *n += 1,
                    None => {
                        r.error_codes.insert(code.into_owned(), 1);
                    }
                }
                if !self.joined && self.join_error.is_none() {
                    self.join_error = Some(String::from_utf8_lossy(p).into_owned());
                }
            }
            Event::Other => r.counters.other_events += 1,
        }
    }

    async fn until_joined(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<(), (FailKind, Option<String>)> {
        self.flush().map_err(end_to_fail)?;
        loop {
            if self.joined {
                return Ok(());
            }
            if let Some(e) = self.join_error.take() {
                return Err((FailKind::Handshake, Some(format!("join refused: {e}"))));
            }
            tokio::select! {
                r = self.on_ready() => r.map_err(end_to_fail)?,
                _ = sleep_until(deadline) => return Err((FailKind::Timeout, None)),
            }
        }
    }

    /// Keeps reading (presence events of later joiners) until the send phase starts.
    async fn until_go(&mut self) -> Result<Option<Go>, End> {
        let mut phase = self.ctx.phase.clone();
        loop {
            match *phase.borrow_and_update() {
                Phase::Go(go) => return Ok(Some(go)),
                Phase::Abort => return Ok(None),
                Phase::Ramp => {}
            }
            tokio::select! {
                r = self.on_ready() => r?,
                changed = phase.changed() => if changed.is_err() { return Ok(None) },
            }
        }
    }

    /// The send phase and the drain: open-loop sends on this client's schedule.
    async fn run(&mut self, go: Go) -> Result<(), End> {
        let plan = Arc::clone(&self.ctx.plan);
        let send_end = go.t0_ns + plan.duration_ns;
        let drain_end = send_end + plan.drain_ns;
        let joined = go.joined_total.max(1) as f64;
        // Every joined client sends every `interval`; offsets spread clients over the interval.
        let frac = self.id as f64 / plan.clients as f64;
        let sends = plan.sends();
        let interval = if sends { joined * 1e9 / plan.rate } else { 0.0 };
        let slot = |k: u64| go.t0_ns + ((k as f64 + frac) * interval) as u64;
        let mut k = 0u64;
        let mut next_send = if sends { slot(0) } else { u64::MAX };
        let churn = plan.scenario == Scenario::Churn;
        let churn_interval = if churn {
            joined * 1e9 / plan.churn_rate
        } else {
            0.0
        };
        let churn_slot =
            |c: u64| go.t0_ns + ((c as f64 + (frac + 0.5).fract()) * churn_interval) as u64;
        let mut c = 0u64;
        let mut next_churn = if churn { churn_slot(0) } else { u64::MAX };
        let mut next_storm = u64::MAX;
        if let (Some(s), Some(p)) = (self.storm.as_mut(), plan.storm) {
            s.at_ns = go.t0_ns + p.at_ns;
            if s.dropped {
                next_storm = s.at_ns;
            }
        }

        loop {
            let now = now_ns();
            if next_send <= now && next_send < send_end {
                while next_send <= now && next_send < send_end {
                    self.queue_message(next_send);
                    let mut r = self.ctx.report.borrow_mut();
                    r.counters.due += 1;
                    // How late the generator itself is: the schedule slot vs. the queue time.
                    r.send_lag_us.saturating_record((now - next_send) / 1000);
                    drop(r);
                    k += 1;
                    next_send = slot(k);
                }
                self.flush()?;
            }
            if next_churn <= now && next_churn < send_end {
                self.queue_frame(b"{\"type\":\"leave\"}");
                self.queue_join();
                self.ctx.report.borrow_mut().counters.churn_leaves += 1;
                c += 1;
                next_churn = churn_slot(c);
                self.flush()?;
            }
            if next_storm <= now {
                next_storm = u64::MAX;
                self.storm_drop().await?;
                // Away, this client sent nothing: the slots that passed are skipped, not due.
                let back = now_ns();
                while next_send <= back && next_send < send_end {
                    k += 1;
                    next_send = slot(k);
                    if let Some(st) = self.ctx.report.borrow_mut().storm.as_mut() {
                        st.sends_skipped += 1;
                    }
                }
                continue;
            }
            if now >= drain_end {
                return Ok(());
            }
            let mut wake = drain_end.min(next_storm);
            if next_send < send_end {
                wake = wake.min(next_send);
            }
            if next_churn < send_end {
                wake = wake.min(next_churn);
            }
            tokio::select! {
                biased;
                r = self.on_ready() => r?,
                _ = sleep_until(instant_at(wake)) => {}
            }
        }
    }

    /// Books the end of the connection and closes it politely.
    fn finish(mut self, end: Result<(), End>) {
        let _ = self.flush();
        if self.out_pos > 0 {
            self.credit_written();
        }
        let mut r = self.ctx.report.borrow_mut();
        match end {
            Ok(()) => {}
            Err(End::Closed(code)) => {
                r.counters.closed_by_server += 1;
                *r.close_codes.entry(code.unwrap_or(1006)).or_default() += 1;
                return;
            }
            Err(End::Io(e)) => {
                r.counters.closed_by_server += 1;
                *r.close_codes.entry(1006).or_default() += 1;
                r.note_failure(format!("connection lost: {e}"));
                return;
            }
            Err(End::Protocol(why)) => {
                r.counters.closed_by_server += 1;
                r.note_failure(format!("protocol error from server: {why}"));
                return;
            }
            Err(End::Gone) => return,
        }
        drop(r);
        // Best effort: a close frame lets the server tidy up without logging resets. Only
        // behind whole frames: with bytes still queued (the server stopped reading) it would
        // land inside one.
        if self.out.is_empty() {
            ws::put_client_frame(
                &mut self.out,
                ws::OP_CLOSE,
                self.mask,
                &1000u16.to_be_bytes(),
            );
            let _ = self.flush();
        }
        self.wire.close(&self.stream);
    }
}

fn end_to_fail(e: End) -> (FailKind, Option<String>) {
    match e {
        End::Io(e) => {
            let kind = FailKind::from_io(&e);
            (kind, (kind == FailKind::Other).then(|| e.to_string()))
        }
        End::Closed(_) => (FailKind::Reset, None),
        End::Protocol(why) => (FailKind::Handshake, Some(why.to_string())),
        End::Gone => (FailKind::Other, Some("gone".to_string())),
    }
}
