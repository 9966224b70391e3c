//! Micro-experiment: does submitting one flusher round's socket writes as a single io_uring batch
//! cost the writer less CPU than one `writev` per connection (what the relay's flusher does)?
//!
//! N loopback TCP connections; the main thread writes, one reader thread (pinned to another
//! CPU) drains them all through epoll. A round gives every connection one vectored write of K
//! frames. Modes, interleaved and repeated:
//! - `writev`: one `writev(2)` per connection, as the relay's outbox does;
//! - `uring`: one ring, N `IORING_OP_WRITEV` entries and one `submit_and_wait(N)` per round;
//! - `uring-di`: the same ring set up with `SINGLE_ISSUER | DEFER_TASKRUN`.
//!
//! `taskset -c 0 uring_probe [--conns N] [--frames K] [--frame-bytes F] [--secs S] [--reps R]
//! [--reader-cpu C]`. Not a relay benchmark: docs/PERFORMANCE.md says what was concluded.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("uring_probe: linux only (io_uring)");
}

#[cfg(target_os = "linux")]
fn main() {
    if let Err(err) = probe::run() {
        eprintln!("uring_probe: {err}");
        std::process::exit(1);
    }
}

#[cfg(target_os = "linux")]
mod probe {
    use std::io;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use io_uring::{opcode, types, IoUring};

    #[derive(Debug, Clone)]
    struct Args {
        conns: usize,
        frames: usize,
        frame_bytes: usize,
        secs: f64,
        reps: usize,
        reader_cpu: usize,
        modes: Vec<Mode>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Writev,
        Uring,
        UringDeferTaskrun,
    }

    impl Mode {
        fn name(self) -> &'static str {
            match self {
                Mode::Writev => "writev",
                Mode::Uring => "uring",
                Mode::UringDeferTaskrun => "uring-di",
            }
        }

        fn parse(s: &str) -> Option<Mode> {
            [Mode::Writev, Mode::Uring, Mode::UringDeferTaskrun]
                .into_iter()
                .find(|m| m.name() == s)
        }
    }

    fn parse_args() -> Result<Args, String> {
        let mut a = Args {
            conns: 1_000,
            frames: 1,
            frame_bytes: 80,
            secs: 3.0,
            reps: 5,
            reader_cpu: 1,
            modes: vec![Mode::Writev, Mode::Uring, Mode::UringDeferTaskrun],
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("bad value for {flag}: {value}");
            match flag.as_str() {
                "--conns" => a.conns = value.parse().map_err(|_| bad())?,
                "--frames" => a.frames = value.parse().map_err(|_| bad())?,
                "--frame-bytes" => a.frame_bytes = value.parse().map_err(|_| bad())?,
                "--secs" => a.secs = value.parse().map_err(|_| bad())?,
                "--reps" => a.reps = value.parse().map_err(|_| bad())?,
                "--reader-cpu" => a.reader_cpu = value.parse().map_err(|_| bad())?,
                "--modes" => {
                    a.modes = value
                        .split(',')
                        .map(|m| Mode::parse(m).ok_or_else(|| format!("unknown mode {m}")))
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if a.conns == 0 || a.frames == 0 || a.frame_bytes == 0 || a.reps == 0 || a.modes.is_empty()
        {
            return Err("conns, frames, frame-bytes, reps and modes must be non-zero".into());
        }
        // Total runtime stays under two minutes (the shared 2-vCPU machine).
        let total = a.secs * (a.reps * a.modes.len()) as f64;
        if total > 100.0 {
            return Err(format!(
                "{total:.0} s of trials: keep secs*reps*modes under 100"
            ));
        }
        Ok(a)
    }

    /// One trial's counts.
    #[derive(Debug, Default, Clone, Copy)]
    struct Trial {
        wall: Duration,
        writer_cpu: Duration,
        /// Process CPU not spent by the writer or the reader: io_uring's io-wq workers, if the
        /// kernel punts any write to them (it should not, the sockets being nonblocking).
        other_cpu: Duration,
        reader_cpu: Duration,
        attempts: u64,
        full: u64,
        short: u64,
        eagain: u64,
        /// Bytes that short writes did move: the reader sees them too.
        short_bytes: u64,
        rounds: u64,
    }

    pub fn run() -> Result<(), String> {
        let args = parse_args()?;
        raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
        let (writers, readers) = connect_pairs(args.conns).map_err(|e| format!("connect: {e}"))?;

        let frame_len = args.frame_bytes;
        // A text frame header and payload; the content is irrelevant to the kernel's cost.
        let payload: Vec<u8> = (0..frame_len * args.frames)
            .map(|i| {
                if i % frame_len == 0 {
                    0x81
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        // Built once and never touched again until every write that points at them is done.
        let iovecs: Vec<libc::iovec> = (0..args.frames)
            .map(|k| libc::iovec {
                iov_base: payload[k * frame_len..].as_ptr() as *mut libc::c_void,
                iov_len: frame_len,
            })
            .collect();
        let write_len = (frame_len * args.frames) as isize;
        let fds: Vec<RawFd> = writers.iter().map(|s| s.as_raw_fd()).collect();

        let stop = Arc::new(AtomicBool::new(false));
        let read_total = Arc::new(AtomicU64::new(0));
        let reader_cpu_ns = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, read_total, reader_cpu_ns) =
                (stop.clone(), read_total.clone(), reader_cpu_ns.clone());
            let cpu = args.reader_cpu;
            let fds: Vec<RawFd> = readers.iter().map(|s| s.as_raw_fd()).collect();
            std::thread::spawn(move || reader_loop(&fds, cpu, &stop, &read_total, &reader_cpu_ns))
        };

        let mut rings = Rings::new(args.conns).map_err(|e| format!("io_uring setup: {e}"))?;
        let mut written: u64 = 0;
        let writer_on = current_cpu();

        // Each trial starts with empty socket buffers, so no mode inherits a backlog.
        let mut run = |mode: Mode, secs: f64| -> Result<Trial, String> {
            let t = trial(
                mode,
                secs,
                &fds,
                &iovecs,
                write_len,
                &mut rings,
                &reader_cpu_ns,
            )?;
            written += t.full * write_len as u64 + t.short_bytes;
            wait_drained(&read_total, written)?;
            Ok(t)
        };
        // Warm-up: one short trial per mode, not reported.
        for &mode in &args.modes {
            run(mode, 0.3)?;
        }
        let mut results: Vec<(Mode, Trial)> = Vec::new();
        for rep in 0..args.reps {
            for &mode in &args.modes {
                let t = run(mode, args.secs)?;
                eprintln!(
                    "rep {rep} {:<8} {:>9.0} writes/s {:>6.3} us/write  short {} eagain {}",
                    mode.name(),
                    t.full as f64 / t.wall.as_secs_f64(),
                    per_write_us(t.writer_cpu, t.attempts),
                    t.short,
                    t.eagain
                );
                results.push((mode, t));
            }
        }
        stop.store(true, Ordering::Release);
        let reader_on = reader
            .join()
            .map_err(|_| "reader thread panicked".to_string())??;
        report(
            &args,
            &results,
            writer_on,
            reader_on,
            written,
            read_total.load(Ordering::Acquire),
        );
        Ok(())
    }

    fn per_write_us(cpu: Duration, writes: u64) -> f64 {
        cpu.as_secs_f64() * 1e6 / writes.max(1) as f64
    }

    /// Both io_uring variants, built up front so that setup is outside the measured trials.
    struct Rings {
        plain: IoUring,
        defer: IoUring,
    }

    impl Rings {
        fn new(conns: usize) -> io::Result<Rings> {
            // One entry per connection: a whole round goes in one submission.
            let entries = (conns as u32).next_power_of_two().clamp(8, 4096);
            let plain = IoUring::builder().build(entries)?;
            let defer = IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .build(entries)?;
            Ok(Rings { plain, defer })
        }
    }

    fn trial(
        mode: Mode,
        secs: f64,
        fds: &[RawFd],
        iovecs: &[libc::iovec],
        write_len: isize,
        rings: &mut Rings,
        reader_cpu_ns: &AtomicU64,
    ) -> Result<Trial, String> {
        let mut t = Trial::default();
        let reader0 = reader_cpu_ns.load(Ordering::Acquire);
        let proc0 = cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID);
        let cpu0 = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID);
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        while Instant::now() < deadline {
            // Check the clock every 16 rounds only: a round is ~1 ms of writes.
            for _ in 0..16 {
                match mode {
                    Mode::Writev => round_writev(fds, iovecs, write_len, &mut t),
                    Mode::Uring => round_uring(&mut rings.plain, fds, iovecs, write_len, &mut t)?,
                    Mode::UringDeferTaskrun => {
                        round_uring(&mut rings.defer, fds, iovecs, write_len, &mut t)?
                    }
                }
                t.rounds += 1;
            }
        }
        t.wall = start.elapsed();
        t.writer_cpu = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu0);
        // The reader publishes its CPU time about every 10 ms; the error is small next to seconds.
        t.reader_cpu = Duration::from_nanos(
            reader_cpu_ns
                .load(Ordering::Acquire)
                .saturating_sub(reader0),
        );
        t.other_cpu = cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
            .saturating_sub(proc0)
            .saturating_sub(t.writer_cpu)
            .saturating_sub(t.reader_cpu);
        Ok(t)
    }

    fn classify(rc: isize, write_len: isize, t: &mut Trial) {
        t.attempts += 1;
        if rc == write_len {
            t.full += 1;
        } else if rc >= 0 {
            t.short += 1;
            t.short_bytes += rc as u64;
        } else if rc == -(libc::EAGAIN as isize) {
            t.eagain += 1;
        } else {
            // Any other error ends the experiment: the numbers would mean nothing.
            panic!("write failed: {}", io::Error::from_raw_os_error(-rc as i32));
        }
    }

    #[allow(unsafe_code)]
    fn round_writev(fds: &[RawFd], iovecs: &[libc::iovec], write_len: isize, t: &mut Trial) {
        for &fd in fds {
            // SAFETY: `fd` is an open socket owned by `run`'s `writers`; `iovecs` points into
            // `payload`, both alive for the whole call, and the count is the slice's length.
            let rc = unsafe { libc::writev(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int) };
            let rc = if rc < 0 {
                -(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO) as isize)
            } else {
                rc
            };
            classify(rc, write_len, t);
        }
    }

    #[allow(unsafe_code)]
    fn round_uring(
        ring: &mut IoUring,
        fds: &[RawFd],
        iovecs: &[libc::iovec],
        write_len: isize,
        t: &mut Trial,
    ) -> Result<(), String> {
        let cap = ring.params().sq_entries() as usize;
        for chunk in fds.chunks(cap) {
            {
                let mut sq = ring.submission();
                for (i, &fd) in chunk.iter().enumerate() {
                    let entry =
                        opcode::Writev::new(types::Fd(fd), iovecs.as_ptr(), iovecs.len() as u32)
                            .build()
                            .user_data(i as u64);
                    // SAFETY: the entry points at `iovecs` (and through it `payload`), which
                    // the caller keeps alive and unmodified for the whole run, and at `fd`,
                    // owned by `run`'s `writers` until after the last round. The
                    // `submit_and_wait(chunk.len())` below and the reaping loop after it return
                    // only once every entry of this chunk has completed, so no write is in
                    // flight when this function returns or when the buffers could change.
                    unsafe { sq.push(&entry) }.map_err(|_| "submission queue full".to_string())?;
                }
            }
            ring.submit_and_wait(chunk.len())
                .map_err(|e| format!("submit_and_wait: {e}"))?;
            let mut reaped = 0;
            while reaped < chunk.len() {
                let mut cq = ring.completion();
                for cqe in &mut cq {
                    classify(cqe.result() as isize, write_len, t);
                    reaped += 1;
                }
                drop(cq);
                if reaped < chunk.len() {
                    ring.submit_and_wait(chunk.len() - reaped)
                        .map_err(|e| format!("wait: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// Waits until the reader has seen every byte written so far.
    fn wait_drained(read_total: &AtomicU64, want: u64) -> Result<(), String> {
        let start = Instant::now();
        while read_total.load(Ordering::Acquire) < want {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "reader stuck at {} of {want} bytes",
                    read_total.load(Ordering::Acquire)
                ));
            }
            // Between trials only: not measured, and the reader needs the time.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    #[allow(unsafe_code)]
    fn reader_loop(
        fds: &[RawFd],
        cpu: usize,
        stop: &AtomicBool,
        read_total: &AtomicU64,
        cpu_ns: &AtomicU64,
    ) -> Result<usize, String> {
        pin_current_thread(cpu).map_err(|e| format!("pin reader to CPU {cpu}: {e}"))?;
        // SAFETY: epoll_create1 takes no pointers.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        for &fd in fds {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: `ep` and `fd` are open descriptors; `ev` is a valid event read during the
            // call only.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
                return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut last_cpu_publish = Instant::now();
        let on = current_cpu();
        while !stop.load(Ordering::Acquire) {
            // SAFETY: `events` is a writable array of `events.len()` entries for the call.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("epoll_wait: {err}"));
            }
            for ev in &events[..n as usize] {
                let fd = ev.u64 as RawFd;
                // Level-triggered: one read per readiness; what is left comes back next wait.
                // SAFETY: `buf` is writable for `buf.len()` bytes during the call; `fd` is open.
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    total += r as u64;
                }
            }
            read_total.store(total, Ordering::Release);
            if last_cpu_publish.elapsed() >= Duration::from_millis(10) {
                cpu_ns.store(
                    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID).as_nanos() as u64,
                    Ordering::Release,
                );
                last_cpu_publish = Instant::now();
            }
        }
        // SAFETY: `ep` is our own epoll descriptor, closed once.
        unsafe { libc::close(ep) };
        Ok(on)
    }

    fn connect_pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut writers = Vec::with_capacity(n);
        let mut readers = Vec::with_capacity(n);
        for _ in 0..n {
            let client = TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            // The relay's side of a connection: accepted, TCP_NODELAY, nonblocking.
            server.set_nodelay(true)?;
            server.set_nonblocking(true)?;
            client.set_nonblocking(true)?;
            writers.push(server);
            readers.push(client);
        }
        Ok((writers, readers))
    }

    #[allow(unsafe_code)]
    fn cpu_clock(clock: libc::clockid_t) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return Duration::ZERO;
        }
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    }

    #[allow(unsafe_code)]
    fn pin_current_thread(cpu: usize) -> io::Result<()> {
        // SAFETY: an all-zero cpu_set_t is the empty set, a valid value of this C struct.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: CPU_SET writes one bit inside `set`, and `cpu` was just checked to be below
        // the set's capacity in bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the calling thread.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    #[allow(unsafe_code)]
    fn current_cpu() -> usize {
        // SAFETY: sched_getcpu takes no arguments.
        let c = unsafe { libc::sched_getcpu() };
        c.max(0) as usize
    }

    #[allow(unsafe_code)]
    fn raise_nofile_limit() -> io::Result<()> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read by the kernel during the call only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        let med = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        (med, v[0], v[v.len() - 1])
    }

    fn report(
        args: &Args,
        results: &[(Mode, Trial)],
        writer_on: usize,
        reader_on: usize,
        written: u64,
        read: u64,
    ) {
        let cmd: Vec<String> = std::env::args().collect();
        println!("command: {}", cmd.join(" "));
        println!(
            "conns {} frames/write {} x {} B, {} reps x {} s per mode; writer on CPU {writer_on}, reader on CPU {reader_on}",
            args.conns, args.frames, args.frame_bytes, args.reps, args.secs
        );
        println!("bytes written {written}, read {read}");
        println!(
            "| mode | writes/s median (min-max) | writer CPU us/write median (min-max) | reader CPU us/write | other CPU us/write | short | EAGAIN | rounds |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &mode in &args.modes {
            let ts: Vec<Trial> = results
                .iter()
                .filter(|(m, _)| *m == mode)
                .map(|(_, t)| *t)
                .collect();
            let rate = median_spread(
                ts.iter()
                    .map(|t| t.full as f64 / t.wall.as_secs_f64())
                    .collect(),
            );
            let cpu = median_spread(
                ts.iter()
                    .map(|t| per_write_us(t.writer_cpu, t.attempts))
                    .collect(),
            );
            let rd = median_spread(
                ts.iter()
                    .map(|t| per_write_us(t.reader_cpu, t.attempts))
                    .collect(),
            );
            let oth = median_spread(
                ts.iter()
                    .map(|t| per_write_us(t.other_cpu, t.attempts))
                    .collect(),
            );
            let short: u64 = ts.iter().map(|t| t.short).sum();
            let eagain: u64 = ts.iter().map(|t| t.eagain).sum();
            let rounds: u64 = ts.iter().map(|t| t.rounds).sum();
            println!(
                "| {} | {:.0} ({:.0}-{:.0}) | {:.3} ({:.3}-{:.3}) | {:.3} | {:.3} | {short} | {eagain} | {rounds} |",
                mode.name(),
                rate.0,
                rate.1,
                rate.2,
                cpu.0,
                cpu.1,
                cpu.2,
                rd.0,
                oth.0
            );
        }
    }
}
